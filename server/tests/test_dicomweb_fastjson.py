"""The DICOM JSON read straight from a file's bytes equals pydicom's, key for key, or is left
to pydicom (plugins/dicomweb_fastjson.py)."""

from __future__ import annotations

import json
import logging
import random
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

import datagen
from pipacs import dicomfile
from pipacs.ids import INSTANCE
from pipacs.plugins.dicomweb_fastjson import _VRS, file_json
from pipacs.plugins.dicomweb_json import ROOT_MARK, dataset_json
from pipacs.plugins.dicomweb_metadata import HEAD_BYTES, MetadataStore
from test_codecs import CASES, _make
from test_index import make_context

VRS = [vr.encode() for vr in _VRS]
PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BASE = "@@ROOT@@/studies/1/series/2/instances/3"
# pydicom's test files (3.0.2) and our fixtures that the fast path leaves to pydicom, and
# why: a new name here is coverage lost (or a pydicom with other files); a name gone is
# coverage won (remove it).
FALLBACKS = {
    # not DICOM files (our fixtures hold none today), or no preamble / file meta (pydicom
    # guesses)
    "orthancpi-configuration.json", "README.txt", "README", "rtplan.dump", "rtstruct.dump",
    "zipMR.gz", "crayons.icc",
    "test1.json", "test_PN.json", "rtstruct.dcm", "ExplVR_LitEndNoMeta.dcm",
    "ExplVR_BigEndNoMeta.dcm", "no_meta.dcm", "meta_missing_tsyntax.dcm",
    # big endian, deflate
    "image_dfl.dcm", "SC_rgb_small_odd_big_endian.dcm", "liver_expb_1frame.dcm",
    "ExplVR_BigEnd.dcm", "rtdose_expb_1frame.dcm", "MR_small_bigendian.dcm",
    "MR_small_expb.dcm", "rtdose_expb.dcm", "DICOMDIR-bigEnd",
    # what pydicom corrects or guesses: a dataset in the other VR encoding than its syntax,
    # an IS that is not one, LUT descriptors
    "SC_rgb_jpeg.dcm", "badVR.dcm", "examples_overlay.dcm", "examples_palette.dcm",
    # truncated, or an item longer than its sequence
    "rtplan_truncated.dcm", "MR_truncated.dcm", "DICOMDIR-nooffset",
    # ISO 2022 code extensions
    "J2K_pixelrep_mismatch.dcm",
}


def _written(ds: pydicom.Dataset, path: Path,
             syntax: str = pydicom.uid.ExplicitVRLittleEndian) -> bytes:
    """The dataset saved as a Part 10 file in that transfer syntax: its bytes."""
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = pydicom.uid.SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


def _pydicom_json(raw: bytes) -> dict[str, Any] | Exception:
    try:
        return dataset_json(dicomfile.read_full(raw), BASE)
    except Exception as e:  # what the server met before: the fast path must not answer
        return e


def _check(raw: bytes, name: str) -> bool:
    """True when the fast path answered (the same JSON as pydicom's), False when it left the
    file to pydicom."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = file_json(raw, BASE)
        if fast is None:
            return False
        old = _pydicom_json(raw)
    assert not isinstance(old, Exception), f"{name}: pydicom fails ({old!r}), fast answers"
    # the same text, key order included (the cache keeps the text)
    if json.dumps(fast) != json.dumps(old):
        diff = {k: (old.get(k), fast.get(k)) for k in old.keys() | fast.keys()
                if old.get(k) != fast.get(k)}
        raise AssertionError(f"{name}: pydicom's JSON (left) != fast (right): {diff}"[:3000])
    return True


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)  # pydicom's complaints about the odd files
    yield
    logging.disable(logging.NOTSET)


def test_pydicom_test_files_and_fixtures() -> None:
    files = sorted(p for folder in (PYDICOM_FILES, FIXTURES) for p in folder.rglob("*")
                   if p.is_file())
    fell_back = sorted(p.name for p in files if not _check(p.read_bytes(), p.name))
    answered = len(files) - len(fell_back)
    assert set(fell_back) <= FALLBACKS, (
        f"{answered} of {len(files)} answered; left to pydicom: {fell_back}; "
        f"new: {sorted(set(fell_back) - FALLBACKS)}")
    assert answered >= 145, f"only {answered} of {len(files)} answered: {fell_back}"


def test_bench_data(tmp_path: Path) -> None:
    small = datagen.make_small(tmp_path / "small", patients=1, seed=3, studies=2, series=1,
                               instances=2)
    large = datagen.make_large(tmp_path / "large", count=2, studies=1, seed=4)
    for path in [*small, *large]:
        assert _check(path.read_bytes(), path.name), f"{path.name} left to pydicom"


def test_first_bytes_only(tmp_path: Path) -> None:
    """Given the file's first bytes and its length, the answer is the whole file's, or None
    (then the whole file is read): never one made from bytes it did not have."""
    large = datagen.make_large(tmp_path / "large", count=1, studies=1, seed=5)[0].read_bytes()
    assert len(large) > HEAD_BYTES
    assert file_json(large[:HEAD_BYTES], BASE, len(large)) == file_json(large, BASE) is not None
    names = ["CT_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm", "test-SR.dcm",
             "JPEG2000.dcm", "liver_1frame.dcm", "SC_rgb_rle_2frame.dcm", "waveform_ecg.dcm"]
    answered = 0
    for raw in [large, *((PYDICOM_FILES / name).read_bytes() for name in names)]:
        whole = json.dumps(file_json(raw, BASE))
        for cut in range(132, len(raw), max(1, len(raw) // 150)):
            part = file_json(raw[:cut], BASE, len(raw))
            assert part is None or json.dumps(part) == whole, cut
            answered += part is not None
    assert answered > 100


@pytest.mark.parametrize("compression", [False, True])
def test_metadata_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        compression: bool) -> None:
    """The metadata answer is pydicom's, from a file's first bytes when its pixel data comes
    last and it is stored uncompressed, else from the whole file."""
    large = datagen.make_large(tmp_path / "large", count=1, studies=1, seed=6)[0].read_bytes()
    small = (PYDICOM_FILES / "CT_small.dcm").read_bytes()
    ctx = make_context(tmp_path, StorageCompression=compression)
    found = [ctx.index.get(ctx.store(raw).ids[3], INSTANCE) for raw in (large, small)]
    rows = [ctx.index.instance_row(res.id) if res else None for res in found]
    whole_reads: list[str] = []
    read = ctx.storage.read
    monkeypatch.setattr(ctx.storage, "read",
                        lambda att, *a: whole_reads.append(att.uuid) or read(att, *a))
    store = MetadataStore(ctx, cache=False)
    for row, raw in zip(rows, (large, small), strict=True):
        assert row is not None
        expected = dataset_json(dicomfile.read_full(raw), ROOT_MARK + row.path)
        assert json.loads(store.full(row)) == expected
    assert len(whole_reads) == (2 if compression else 0)


def test_codec_files(tmp_path: Path) -> None:
    fell_back = []
    for name, kind, how, _, _ in CASES:
        path = _make(tmp_path, name, kind, how)
        if not _check(path.read_bytes(), name):
            fell_back.append(name)
    assert fell_back == ["big-endian", "deflated"], fell_back


def test_charsets_and_values(tmp_path: Path) -> None:
    """Text in the character sets decoded here, multi-values, empty values, numbers as
    pydicom gives them, private tags, nested sequences with their bulk data paths."""
    cases = 0
    for charset, name in (("ISO_IR 100", "Müller^Jörg"), ("ISO_IR 192", "Дмитрий^Ёлкин"),
                          ("ISO_IR 144", "Иванов^Иван"), ("ISO_IR 126", "Διονυσιος"),
                          ("", "Plain^Name")):
        for syntax in (pydicom.uid.ExplicitVRLittleEndian, pydicom.uid.ImplicitVRLittleEndian):
            ds = pydicom.Dataset()
            if charset:
                ds.SpecificCharacterSet = charset
            ds.PatientName = f"{name}=ideo=phon\\Second^Name"
            ds.PatientID = "  id with spaces  "
            ds.InstitutionName = name.replace("^", " ")
            ds.StudyDescription = "a\\b\\\\"
            ds.ImageComments = "line 1\\still line 1  "
            ds.ImageType = ["ORIGINAL", "", "AXIAL"]
            ds.SliceThickness = " 2.50 "
            ds.PixelSpacing = ["0.5", "1e2"]
            ds.ImagePositionPatient = ["-1", "+2.0", " 3.25 "]
            ds.SeriesNumber = " 7"
            ds.AcquisitionNumber = None
            ds.Rows, ds.Columns = 2, 2
            ds.add_new(0x00189219, "FD", [1.5, float("nan")])
            ds.add_new(0x00200013, "IS", "12")
            ds.add_new(0x00280009, "AT", [0x00181063, 0x00181065])
            ds.add_new(0x00091010, "LO", "ACME 1.0")
            ds.add_new(0x00091011, "OB", b"\x01\x02\x03\x04")
            ds.add_new(0x00091012, "OB", bytes(1024))  # inline up to BULK_THRESHOLD
            ds.add_new(0x00091013, "OW", bytes(1026))
            item = pydicom.Dataset()
            item.CodeValue, item.CodeMeaning = "T-1", name
            inner = pydicom.Dataset()
            inner.add_new(0x00420011, "OB", bytes(3000))
            item.add_new(0x0040A730, "SQ", [inner, pydicom.Dataset()])
            ds.add_new(0x00082218, "SQ", [item])
            ds.add_new(0x00081140, "SQ", [])
            ds.PixelData = bytes(8)
            ds.BitsAllocated = 16
            raw = _written(ds, tmp_path / f"{cases}.dcm", syntax)
            assert _check(raw, f"{charset or 'default'} {syntax.name}")
            cases += 1


def test_same_bytes_other_character_set(tmp_path: Path) -> None:
    """The same bytes of text under another SpecificCharacterSet are other text (the values
    already read are remembered by their character set too)."""
    ds = pydicom.Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Ärzte^Ölçü"
    ds.InstitutionName = "Größe Ästhetik"
    raw = _written(ds, tmp_path / "latin1.dcm")
    texts = set()
    for charset in (b"ISO_IR 100", b"ISO_IR 144", b"ISO_IR 126", b"ISO_IR 148", b"ISO_IR 100"):
        other = raw.replace(b"ISO_IR 100", charset)
        assert _check(other, charset.decode())
        texts.add(json.dumps(file_json(other, BASE)))
    assert len(texts) == 4


def test_explicit_un(tmp_path: Path) -> None:
    """An explicit UN element is read as pydicom reads it: as the VR its dictionaries know
    (public tags, private ones by their creator, private creators as LO), as a sequence of
    implicit VR items when its length is undefined, else as bytes."""
    ds = pydicom.Dataset()
    ds.add_new(0x00100010, "UN", b"Doe^John")  # PatientName: PN
    ds.add_new(0x00100020, "LO", "ID1")
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x00191001, "UN", b"some text ")  # LT for this creator
    ds.add_new(0x00191002, "UN", struct.pack("<i", -7))  # SL
    ds.add_new(0x00191003, "UN", b"2.50")  # DS
    ds.add_new(0x00191077, "UN", b"\x01\x02")  # not in pydicom's dictionary: UN
    ds.add_new(0x00210010, "UN", b"GEMS_RELA_01")  # a private creator: LO
    written = _written(ds, tmp_path / "un.dcm")
    item = struct.pack("<HHI", 0x0008, 0x0100, 4) + b"T-1 "  # implicit VR: CodeValue
    undefined = (struct.pack("<HH2sHI", 0x0099, 0x1000, b"UN", 0, 0xFFFFFFFF)
                 + struct.pack("<HHI", 0xFFFE, 0xE000, len(item)) + item
                 + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    creator = struct.pack("<HH2sH", 0x0099, 0x0010, b"LO", 6) + b"PIPACS"
    raw = written + creator + undefined
    assert _check(raw, "explicit UN")
    out = file_json(raw, BASE)
    assert out is not None
    assert [out[k]["vr"] for k in ("00100010", "00191001", "00191002", "00191003", "00191077",
                                   "00210010", "00991000")] == [
        "PN", "LT", "SL", "DS", "UN", "LO", "SQ"]


def test_implicit_us_or_ss(tmp_path: Path) -> None:
    """Implicit VR US-or-SS values are read as PixelRepresentation says, as pydicom does for
    the tags it corrects; one it does not correct (pydicom gives its bytes as text) is left
    to pydicom."""
    for rep, value in ((0, 5), (1, -5)):
        ds = pydicom.Dataset()
        ds.PixelRepresentation = rep
        ds.add_new(0x00180015, "CS", "HEAD")
        ds.add_new(0x00280106, "SS" if rep else "US", value)  # SmallestImagePixelValue
        ds.add_new(0x00281111, "US", 7)  # a US or SS pydicom leaves uncorrected
        path, implicit = tmp_path / f"{rep}.dcm", pydicom.uid.ImplicitVRLittleEndian
        assert not _check(_written(ds, path, implicit), "uncorrected")
        del ds[0x00281111]
        assert _check(_written(ds, path, implicit), f"PixelRepresentation {rep}")


def _mutations(raw: bytes, rng: random.Random) -> Iterator[tuple[str, bytes]]:
    """The file cut short at many places, single bytes changed, lengths made huge."""
    head = min(len(raw), raw.find(b"\xe0\x7f\x10\x00") if b"\xe0\x7f\x10\x00" in raw
               else len(raw))
    for cut in sorted({rng.randrange(132, len(raw)) for _ in range(25)} | {head + 6}):
        yield f"cut at {cut}", raw[:cut]
    for _ in range(60):
        at = rng.randrange(132, max(133, head))
        new = rng.choice([0x00, 0xFF, 0x5C, 0x20, 0x1B, rng.randrange(256)])
        yield f"byte {at} = {new:#x}", raw[:at] + bytes([new]) + raw[at + 1:]
    for _ in range(15):
        at = rng.randrange(132, max(133, head - 4))
        yield f"length at {at}", raw[:at] + b"\xff\xff\xff\xff" + raw[at + 4:]
    vrs = [i for i in range(136, head - 1) if raw[i:i + 2] in VRS]
    for at in rng.sample(vrs, min(len(vrs), 25)):
        vr = rng.choice(VRS)
        yield f"VR at {at} = {vr!r}", raw[:at] + vr + raw[at + 2:]


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm",
                                  "test-SR.dcm", "JPEG2000.dcm", "liver_1frame.dcm"])
def test_damaged_files(name: str) -> None:
    """A damaged file is answered as pydicom answers it, or left to pydicom; nothing
    escapes from the fast path."""
    raw = (PYDICOM_FILES / name).read_bytes()
    rng = random.Random(name)
    answered = 0
    for what, damaged in _mutations(raw, rng):
        answered += _check(damaged, f"{name}, {what}")
    assert answered > 20, f"{name}: only {answered} damaged copies answered"
