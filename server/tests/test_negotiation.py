"""Association settings: transfer syntaxes, unknown SOP classes, PDU size, the CLI's log files."""

from __future__ import annotations

import subprocess
import sys

import pydicom
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

from conftest import dcmtk


def jpeg_file(src, dest):  # type: ignore[no-untyped-def]
    """A file that claims JPEG baseline, with a well-formed (if meaningless) fragment."""
    ds = pydicom.dcmread(src)
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xe0" + b"\x00" * 60 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(dest, enforce_file_format=True)
    return dest


def stored_syntaxes(p) -> set[str]:  # type: ignore[no-untyped-def]
    out = set()
    for f in p.storage.rglob("*"):
        if f.is_file():
            out.add(str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID))
    return out


def test_compressed_syntax_is_stored_as_sent(pipacs, small_data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = jpeg_file(small_data[0], tmp_path / "jpeg.dcm")
    # -xy: propose JPEG baseline (and the uncompressed syntaxes)
    dcmtk("storescu", "-xy", "-aec", pipacs.aet, "127.0.0.1", str(pipacs.dicom_port), str(f))
    assert pipacs.get("/statistics")["CountInstances"] == 1
    assert stored_syntaxes(pipacs) == {JPEGBaseline8Bit}


def test_refused_syntax_stores_nothing(make_pipacs, small_data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(JpegTransferSyntaxAccepted=False)
    f = jpeg_file(small_data[0], tmp_path / "jpeg.dcm")
    proc = dcmtk(
        "storescu", "-xy", "-aec", p.aet, "127.0.0.1", str(p.dicom_port), str(f), check=False
    )
    # JPEG is refused; storescu falls back to an uncompressed context and cannot convert
    assert proc.returncode != 0
    assert p.get("/statistics")["CountInstances"] == 0


def test_unknown_sop_class_only_when_accepted(make_pipacs, small_data, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ds = pydicom.dcmread(small_data[0])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.826.0.1.3680043.999.1"
    # dcmtk's storescu will not send a SOP class it does not know, so pynetdicom plays the
    # modality here.
    from pynetdicom import AE

    def send(port: int) -> int:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", port, ae_title="PIPACS")
        try:
            if not assoc.is_established:
                return -1
            if not assoc.accepted_contexts:
                return -2
            return int(assoc.send_c_store(ds).Status)
        finally:
            assoc.release()

    strict = make_pipacs()
    assert send(strict.dicom_port) in (-1, -2)  # the only context is refused
    assert strict.get("/statistics")["CountInstances"] == 0
    promiscuous = make_pipacs(UnknownSopClassAccepted=True)
    assert send(promiscuous.dicom_port) == 0
    assert promiscuous.get("/statistics")["CountInstances"] == 1


def test_maximum_pdu_length_is_announced(make_pipacs) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(MaximumPduLength=8192)
    out = dcmtk("echoscu", "-v", "-aec", p.aet, "127.0.0.1", str(p.dicom_port))
    assert "Max Send PDV: 8180" in out.stdout + out.stderr


def test_version_and_logdir(make_pipacs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run(
        [sys.executable, "-m", "pipacs", "--version"], capture_output=True, text=True
    )
    assert proc.stdout.startswith("pipacs ")
    p = make_pipacs(start=False)
    p.start("--logdir", str(tmp_path / "logs"))
    p.echo()
    p.stop()
    logs = list((tmp_path / "logs").glob("pipacs-*.log"))
    assert logs and "has started" in logs[0].read_text()
