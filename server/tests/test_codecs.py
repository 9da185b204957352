"""Pixel data of every transfer syntax Orthanc decodes: test files made here from our own
uncompressed images with dcmtk's encoders (and pydicom's JPEG 2000 encoder, pydicom's bundled
test files), pixel values from pipacs compared with pydicom's own decode and with Debian's
Orthanc 1.10.1 where it decodes the file too."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array

from conftest import PipacsProcess, base_config, dcmtk
from test_rest_orthanc import orthanc  # noqa: F401 (a fixture)
from test_rest_resources import request

# pydicom's own test files, read from the installed wheel (pydicom.data.get_testdata_file would
# try to download the ones the wheel lacks).
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _source(kind: str) -> Dataset:
    """An uncompressed image of our own, from pydicom's CT_small: mono16 (signed), mono12
    (unsigned, 12 bits stored), mono8 or rgb8."""
    ds = pydicom.dcmread(PYDICOM_FILES / "CT_small.dcm")
    arr = ds.pixel_array.astype(np.int32)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    if kind == "mono16":
        return ds
    if kind == "mono12":
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
        ds.PixelData = np.clip(arr * 2, 0, 4095).astype("<u2").tobytes()
    elif kind == "mono8":
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = np.clip(arr // 9, 0, 255).astype(np.uint8).tobytes()
        ds["PixelData"].VR = "OB"
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        grey = np.clip(arr // 9, 0, 255).astype(np.uint8)
        rgb = np.stack([grey, 255 - grey, np.roll(grey, 17, axis=1)], axis=-1)
        ds.PixelData = rgb.tobytes()
        ds["PixelData"].VR = "OB"
    for keyword in ("WindowCenter", "WindowWidth", "RescaleSlope", "RescaleIntercept"):
        if keyword in ds:
            delattr(ds, keyword)
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    ds.file_meta = FileMetaDataset(ds.file_meta)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


# name, source image, how it is made, the transfer syntax, lossy
CASES: list[tuple[str, str, tuple[str, ...], str, bool]] = [
    ("explicit-le", "mono16", ("dcmconv", "+te"), uid.ExplicitVRLittleEndian, False),
    ("implicit-le", "mono16", ("dcmconv", "+ti"), uid.ImplicitVRLittleEndian, False),
    ("big-endian", "mono16", ("dcmconv", "+tb"), uid.ExplicitVRBigEndian, False),
    ("deflated", "mono16", ("dcmconv", "+td"), uid.DeflatedExplicitVRLittleEndian, False),
    ("jpeg-baseline", "mono8", ("dcmcjpeg", "+eb"), uid.JPEGBaseline8Bit, True),
    ("jpeg-baseline-rgb", "rgb8", ("dcmcjpeg", "+eb"), uid.JPEGBaseline8Bit, True),
    ("jpeg-extended-12", "mono12", ("dcmcjpeg", "+ee"), uid.JPEGExtended12Bit, True),
    ("jpeg-lossless-sv1", "mono16", ("dcmcjpeg", "+e1"), uid.JPEGLosslessSV1, False),
    ("jpeg-lossless-sv6", "mono12", ("dcmcjpeg", "+el", "+sv", "6"), uid.JPEGLossless, False),
    ("jpeg-ls-lossless", "mono16", ("dcmcjpls", "+el"), uid.JPEGLSLossless, False),
    ("jpeg-ls-near", "mono12", ("dcmcjpls", "+en"), uid.JPEGLSNearLossless, True),
    ("jpeg-ls-rgb", "rgb8", ("dcmcjpls", "+el"), uid.JPEGLSLossless, False),
    ("rle", "mono16", ("dcmcrle",), uid.RLELossless, False),
    ("rle-rgb", "rgb8", ("dcmcrle",), uid.RLELossless, False),
    ("j2k-lossless", "mono16", ("pydicom",), uid.JPEG2000Lossless, False),
    ("j2k-lossy", "mono12", ("pydicom", "20"), uid.JPEG2000, True),
    ("j2k-rgb", "rgb8", ("pydicom",), uid.JPEG2000Lossless, False),
    # pydicom's bundled files, made by other encoders than ours
    ("pydicom-JPGExtended", "", ("JPGExtended.dcm",), uid.JPEGExtended12Bit, True),
    ("pydicom-JPEG2000", "", ("JPEG2000.dcm",), uid.JPEG2000, True),
    ("pydicom-jls-near16", "", ("JPEGLSNearLossless_16.dcm",), uid.JPEGLSNearLossless, True),
    ("pydicom-rle-rgb-2frames", "", ("SC_rgb_rle_2frame.dcm",), uid.RLELossless, False),
]


def _make(folder: Path, name: str, kind: str, how: tuple[str, ...]) -> Path:
    out = folder / f"{name}.dcm"
    if not kind:  # some lack the UIDs Orthanc and pipacs index by: given, pixels untouched
        ds = pydicom.dcmread(PYDICOM_FILES / how[0])
        for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID"):
            if keyword not in ds:
                setattr(ds, keyword, "CODECS" if keyword == "PatientID" else uid.generate_uid())
        ds.save_as(out, enforce_file_format=True)
        return out
    src = _save(_source(kind), folder / f"{name}-source.dcm")
    if how[0] == "pydicom":
        ds = pydicom.dcmread(src)
        target = uid.JPEG2000 if len(how) > 1 else uid.JPEG2000Lossless
        kwargs: dict[str, Any] = {"j2k_cr": [float(how[1])]} if len(how) > 1 else {}
        ds.compress(target, encoding_plugin="pylibjpeg", **kwargs)
        ds.save_as(out, enforce_file_format=True)
    else:
        dcmtk(how[0], *how[1:], str(src), str(out))
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("codecs")
    made = {name: _make(folder, name, kind, how) for name, kind, how, _, _ in CASES}
    for name, _, _, syntax, _ in CASES:
        meta = pydicom.dcmread(made[name], stop_before_pixels=True).file_meta
        assert meta.TransferSyntaxUID == syntax, name
    return made


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipacsProcess]:
    p = PipacsProcess(tmp_path_factory.mktemp("pipacs-codecs"),
                      base_config(DicomWeb={"Enable": True}))
    p.start()
    assert "images: every transfer syntax Orthanc decodes (13)" in p.log()
    yield p
    p.stop()


def _post(url: str, path: Path) -> str:
    status, _, body = request(url + "/instances", "POST", path.read_bytes())
    assert status == 200, body
    return str(json.loads(body)["ID"])


def _png(body: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(body)))


def _expected(path: Path, frame: int = 0) -> np.ndarray:
    """pydicom's decode of one frame (colour as RGB); from a dataset, as pixel_array(path)
    does not inflate deflated files."""
    return np.asarray(pixel_array(pydicom.dcmread(path), index=frame))


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_pixels_match_pydicom(server: PipacsProcess, files: dict[str, Path], name: str) -> None:
    path = files[name]
    iid = _post(server.url, path)
    ds = pydicom.dcmread(path)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    for frame in range(n):
        want = _expected(path, frame)
        kind = "image-uint8" if want.ndim == 3 else "image-uint16"
        status, headers, body = request(f"{server.url}/instances/{iid}/frames/{frame}/{kind}")
        assert status == 200, body
        got = _png(body)
        top = 255 if want.ndim == 3 else 65535
        assert np.array_equal(got, np.clip(want.astype(np.int64), 0, top)), name
        for image in ("preview", "rendered"):
            status, headers, body = request(f"{server.url}/instances/{iid}/frames/{frame}/{image}")
            assert status == 200 and headers["Content-Type"] == "image/png", body
            assert _png(body).shape[:2] == want.shape[:2]
        # the stored frame, as it is in the file
        status, _, raw = request(f"{server.url}/instances/{iid}/frames/{frame}/raw")
        assert status == 200
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            assert raw == list(generate_frames(ds.PixelData, number_of_frames=n))[frame]
        else:  # little endian, big endian data swapped (as Orthanc answers it)
            native = pixel_array(ds, index=frame, raw=True)
            assert raw == native.astype(native.dtype.newbyteorder("<")).tobytes()
    for route in ("preview", "rendered"):
        assert request(f"{server.url}/instances/{iid}/{route}")[0] == 200
    # DICOMweb: WADO-RS rendered (JPEG and PNG) and WADO-URI
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    base = f"{server.url}/dicom-web/studies/{study}/series/{series}/instances/{sop}"
    status, headers, body = request(base + "/frames/1/rendered", headers={"Accept": "image/png"})
    assert status == 200 and _png(body).shape[:2] == want.shape[:2], body
    assert request(base + "/rendered")[1]["Content-Type"] == "image/jpeg"
    status, _, body = request(f"{server.url}/wado?requestType=WADO&studyUID={study}"
                              f"&seriesUID={series}&objectUID={sop}&contentType=image/png")
    assert status == 200 and _png(body).shape[:2] == want.shape[:2], body


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_pixels_match_orthanc(server: PipacsProcess, orthanc: Any,  # noqa: F811
                              files: dict[str, Path], name: str) -> None:
    """Where Orthanc 1.10.1 decodes a file, pipacs answers the same pixels (lossy syntaxes:
    within 1, the decoders' rounding); where it does not, pipacs does (listed in the README)."""
    path = files[name]
    theirs, ours = _post(orthanc.url, path), _post(server.url, path)
    assert theirs == ours
    colour = _expected(path).ndim == 3  # Orthanc's image-uint8 refuses colour: its preview
    kind = "preview" if colour else "image-uint16"
    o_status, _, o_body = request(f"{orthanc.url}/instances/{theirs}/frames/0/{kind}")
    p_status, _, p_body = request(f"{server.url}/instances/{ours}/frames/0/{kind}")
    assert p_status == 200, p_body
    o_raw = request(f"{orthanc.url}/instances/{theirs}/frames/0/raw")
    p_raw = request(f"{server.url}/instances/{ours}/frames/0/raw")
    assert (p_raw[0], p_raw[2]) == (o_raw[0], o_raw[2]), name
    assert p_raw[1]["Content-Type"] == o_raw[1]["Content-Type"], name
    if o_status != 200:
        assert o_status == 415 and name in ORTHANC_CANNOT, (name, o_status)
        return
    assert name not in ORTHANC_CANNOT
    diff = np.abs(_png(o_body).astype(np.int64) - _png(p_body).astype(np.int64))
    lossy = next(c[4] for c in CASES if c[0] == name)
    # lossy: within 1 (the decoders' rounding), colour within 8 (JPEG's subsampled chroma,
    # upsampled differently by DCMTK and libjpeg-turbo)
    assert diff.max() <= (0 if not lossy else 8 if colour else 1), (name, diff.max())
    assert diff.mean() < 0.5, name


# What Debian's Orthanc 1.10.1 (without its GDCM plugin) does not decode, and pipacs does.
ORTHANC_CANNOT = {"j2k-lossless", "j2k-lossy", "j2k-rgb", "pydicom-JPEG2000"}


def _blocked_codecs(folder: Path, *modules: str) -> str:
    """A PYTHONPATH on which these modules fail to import, as where they are not installed."""
    for module in modules:
        (folder / module).mkdir(parents=True)
        (folder / module / "__init__.py").write_text(
            f"raise ModuleNotFoundError({'no module ' + module!r}, name={module!r})\n")
    return str(folder)


def test_missing_codec_is_named(tmp_path: Path, files: dict[str, Path],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the plugins that decode JPEG Lossless, JPEG-LS and 12-bit JPEG (an architecture
    without their wheels), the images answer Orthanc's 415 naming the syntax and what would decode
    it; the stored frame (raw) is still served, and the other syntaxes still decode."""
    blocked = _blocked_codecs(tmp_path / "blocked", "pylibjpeg", "jpeg_ls", "gdcm")
    # first on the path, before whatever the run set (make test-server sets none)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (blocked, os.environ.get("PYTHONPATH")) if p))
    folder = tmp_path / "pipacs"
    folder.mkdir()
    p = PipacsProcess(folder, base_config(DicomWeb={"Enable": True}))
    p.start()
    try:
        for name, label in (("jpeg-lossless-sv1", "(1.2.840.10008.1.2.4.70)"),
                            ("jpeg-ls-lossless", "(1.2.840.10008.1.2.4.80)"),
                            # Pillow decodes 8-bit JPEG Extended, not 12 bits
                            ("jpeg-extended-12", "12-bit JPEG Extended")):
            iid = _post(p.url, files[name])
            for route in ("preview", "rendered", "frames/0/image-uint16"):
                status, _, body = request(f"{p.url}/instances/{iid}/{route}")
                assert status == 415, body
                details = json.loads(body)["Details"]
                assert label in details and "pylibjpeg" in details, details
            assert request(f"{p.url}/instances/{iid}/frames/0/raw")[0] == 200
            ds = pydicom.dcmread(files[name], stop_before_pixels=True)
            status, _, body = request(
                f"{p.url}/dicom-web/studies/{ds.StudyInstanceUID}/series/"
                f"{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/rendered")
            assert status == 415 and label in json.loads(body)["Details"]
        iid = _post(p.url, files["rle"])
        assert request(f"{p.url}/instances/{iid}/frames/0/image-uint16")[0] == 200
        said = next(line for line in p.log().splitlines() if "images: " in line)
        for name in ("JPEG Lossless", "JPEG-LS Lossless", "12-bit JPEG Extended"):
            assert name in said, said
        assert "RLE" not in said and "Big Endian" not in said, said
    finally:
        p.stop()


def test_syntax_nobody_decodes(server: PipacsProcess, orthanc: Any,  # noqa: F811
                               tmp_path: Path) -> None:
    """MPEG-2 video (no decoder exists in pydicom, none in Orthanc): 415 for both, pipacs
    naming the syntax."""
    ds = _source("mono8")
    ds.file_meta = FileMetaDataset(ds.file_meta)
    ds.file_meta.TransferSyntaxUID = uid.MPEG2MPML
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    ds["PixelData"].VR = "OB"
    path = _save(ds, tmp_path / "mpeg2.dcm")
    for url in (orthanc.url, server.url):
        iid = _post(url, path)
        assert request(f"{url}/instances/{iid}/preview")[0] == 415, url
    status, _, body = request(f"{server.url}/instances/{iid}/frames/0/image-uint8")
    assert status == 415 and "MPEG2 Main Profile / Main Level" in json.loads(body)["Details"]
