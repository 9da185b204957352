"""Deterministic DICOM test data for benchmarks and tests.

Two kinds of data set, both written as ordinary DICOM Part 10 files:

* "small": pydicom's bundled ``CT_small.dcm`` (39 KB) and ``MR_small.dcm`` (10 KB)
  with fresh UIDs and patient details, laid out as
  ``patients x studies x series x instances`` (default 50 x 2 x 2 x 10 = 2000 files).
  In each patient the even studies are CT and the odd ones MR.
* "large": synthetic 512x512 16-bit CT Image Storage files (explicit VR little endian,
  about 513 KiB each): a body phantom whose shape changes along the slices plus random
  low bits, so the pixel data compresses a little but not too well.
  Default 500 files in 10 studies (one patient, one series per study).

Everything depends only on the seed (same seed, same UIDs and same bytes), and two calls
with different seeds give data sets that share no UID and no PatientID, so the second one
can be sent to a server that already holds the first.

Library use::

    from datagen import make_small, make_large
    paths = make_small(tmp_path / "small", patients=2, seed=7)   # 80 files
    paths = make_large(tmp_path / "large", count=20, studies=2)  # 20 files

Command line::

    python bench/datagen.py small DEST [--patients 50] [--seed 1]
    python bench/datagen.py large DEST [--count 500] [--studies 10] [--seed 2]

Only pydicom is needed (no numpy).
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from pathlib import Path

from pydicom.data import get_testdata_file
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import dcmread
from pydicom.filewriter import write_dataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

__all__ = [
    "CT_IMAGE_STORAGE",
    "MR_IMAGE_STORAGE",
    "make_large",
    "make_small",
    "make_tiny",
    "new_uid",
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"

LARGE_SIZE = 512


def new_uid(rng: random.Random) -> str:
    """A UID under the 2.25 (UUID-derived) root, drawn from ``rng``."""
    return f"2.25.{rng.getrandbits(122) + (1 << 122)}"


def _load_template(name: str) -> Dataset:
    path = get_testdata_file(name)
    if path is None:  # pragma: no cover - pydicom always ships these two
        raise FileNotFoundError(f"pydicom test file {name} not found")
    return dcmread(path)


def _short_element(tag: int, vr: bytes, value: str) -> bytes:
    """One explicit VR little endian element with a 2-byte length (UI, LO, PN, DA, ...)."""
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += b"\0" if vr == b"UI" else b" "
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(raw)) + raw


def _file_meta(sop_class: str, sop_instance: str) -> bytes:
    body = b"".join(
        (
            struct.pack("<HH2sHI", 2, 1, b"OB", 0, 2) + b"\0\1",
            _short_element(0x00020002, b"UI", sop_class),
            _short_element(0x00020003, b"UI", sop_instance),
            _short_element(0x00020010, b"UI", ExplicitVRLittleEndian),
            _short_element(0x00020012, b"UI", PYDICOM_IMPLEMENTATION_UID),
            _short_element(0x00020013, b"SH", "PIPACS_BENCH"),
        )
    )
    return struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(body)) + body


class _Stamper:
    """Writes copies of a dataset that differ only in a few short string elements.

    The constant elements are encoded once with pydicom; the varying ones are encoded
    by hand for each file. About ten times faster than ``Dataset.save_as`` per file.
    """

    def __init__(self, ds: Dataset, keywords: list[str]) -> None:
        self.sop_class = str(ds.SOPClassUID)
        for kw in keywords:
            if kw not in ds:
                setattr(ds, kw, "0")
        variable = {tag_for_keyword(kw): kw for kw in keywords}
        self.parts: list[bytes | tuple[str, int, bytes]] = []
        static = Dataset()
        for elem in sorted(ds, key=lambda e: e.tag):
            if elem.tag in variable:
                self._flush(static)
                static = Dataset()
                self.parts.append((variable[elem.tag], int(elem.tag), elem.VR.encode()))
            else:
                static.add(elem)
        self._flush(static)

    def _flush(self, static: Dataset) -> None:
        if len(static):
            fp = DicomBytesIO()
            fp.is_little_endian = True
            fp.is_implicit_VR = False
            write_dataset(fp, static)
            self.parts.append(fp.getvalue())

    def write(self, path: Path, values: dict[str, str]) -> None:
        chunks = [
            b"\0" * 128,
            b"DICM",
            _file_meta(self.sop_class, values["SOPInstanceUID"]),
        ]
        for part in self.parts:
            if isinstance(part, bytes):
                chunks.append(part)
            else:
                kw, tag, vr = part
                chunks.append(_short_element(tag, vr, values[kw]))
        path.write_bytes(b"".join(chunks))


_SMALL_VARIABLE = [
    "PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID", "StudyID",
    "AccessionNumber", "StudyDate", "StudyTime", "StudyDescription", "SeriesInstanceUID",
    "FrameOfReferenceUID", "SeriesNumber", "SeriesDescription", "SOPInstanceUID",
    "InstanceNumber",
]  # fmt: skip


def make_small(
    dest: str | Path,
    patients: int = 50,
    seed: int = 1,
    *,
    studies: int = 2,
    series: int = 2,
    instances: int = 10,
) -> list[Path]:
    """Write ``patients * studies * series * instances`` small files under ``dest``.

    Layout: ``dest/PATIENTID/STnn/SEnn/IMnnnn.dcm``. Returns the paths in the order
    written (patient by patient, which is also the natural order to send them).
    PatientIDs are ``S<seed>P<nnnn>``.
    """
    dest = Path(dest)
    rng = random.Random(f"small:{seed}")
    stampers = {
        "CT": _Stamper(_load_template("CT_small.dcm"), _SMALL_VARIABLE),
        "MR": _Stamper(_load_template("MR_small.dcm"), _SMALL_VARIABLE),
    }
    paths: list[Path] = []
    v: dict[str, str] = {}
    for p in range(1, patients + 1):
        v["PatientID"] = pid = f"S{seed}P{p:04d}"
        v["PatientName"] = f"BENCH^SMALL{seed}^P{p:04d}"
        v["PatientBirthDate"] = (
            f"{1940 + rng.randrange(70)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
        )
        for st in range(1, studies + 1):
            modality = "CT" if st % 2 else "MR"
            stamper = stampers[modality]
            v["StudyInstanceUID"] = new_uid(rng)
            v["StudyID"] = f"{st}"
            v["AccessionNumber"] = f"A{seed}{p:04d}{st:02d}"
            v["StudyDate"] = (
                f"20{10 + rng.randrange(14)}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
            )
            v["StudyTime"] = f"{rng.randrange(8, 18):02d}{rng.randrange(60):02d}00"
            v["StudyDescription"] = f"Bench {modality} study {st}"
            for se in range(1, series + 1):
                v["SeriesInstanceUID"] = new_uid(rng)
                v["FrameOfReferenceUID"] = new_uid(rng)
                v["SeriesNumber"] = f"{se}"
                v["SeriesDescription"] = f"Bench {modality} series {se}"
                folder = dest / pid / f"ST{st:02d}" / f"SE{se:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                for im in range(1, instances + 1):
                    v["SOPInstanceUID"] = new_uid(rng)
                    v["InstanceNumber"] = f"{im}"
                    path = folder / f"IM{im:04d}.dcm"
                    stamper.write(path, v)
                    paths.append(path)
    return paths


# --- tiny: many instances, few bytes -------------------------------------------------

_TINY_SIZE = 16  # pixels a side: 256 bytes of 8-bit pixel data


def _tiny_template() -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.Modality = "CT"
    ds.Manufacturer = "PiPACS bench"
    ds.ReferringPhysicianName = "BENCH^REFERRER"
    ds.PatientBirthDate = "19000101"  # placeholders: the stamper sets them per file
    ds.StudyDate = "20000101"
    ds.StudyTime = "120000"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = _TINY_SIZE
    ds.Columns = _TINY_SIZE
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(256))[: _TINY_SIZE * _TINY_SIZE]
    return ds


def make_tiny(
    dest: str | Path,
    count: int = 1000,
    seed: int = 4,
    *,
    per_study: int = 10,
    series: int = 2,
    studies: int = 2,
    folders: int = 1,
) -> list[Path]:
    """Write ``count`` tiny CT instances (about 1 KB: 16x16 8-bit pixels) under ``dest``.

    For index scaling: each patient has ``studies`` studies of ``series`` series holding
    ``per_study`` instances between them (default 2 x 2 x 5 = 20 per patient), so 100,000
    instances are 5,000 patients and 10,000 studies. Patients are dealt round-robin into
    ``folders`` sub-folders ``dest/fNN/`` (one per parallel storescu, sent with ``+sd``).
    Layout: ``dest/fNN/PATIENTID/STnn/SEnn/IMnnnn.dcm``; PatientIDs ``T<seed>P<nnnnnn>``,
    AccessionNumbers ``T<seed>A<nnnnnn><nn>``. Returns the paths in the order written.
    """
    dest = Path(dest)
    rng = random.Random(f"tiny:{seed}")
    stamper = _Stamper(_tiny_template(), _SMALL_VARIABLE)
    per_series = max(1, per_study // series)
    paths: list[Path] = []
    v: dict[str, str] = {}
    made = 0
    p = 0
    while made < count:
        p += 1
        v["PatientID"] = pid = f"T{seed}P{p:06d}"
        v["PatientName"] = f"BENCH^TINY{seed}^P{p:06d}"
        v["PatientBirthDate"] = f"{1940 + rng.randrange(70)}0101"
        top = dest / f"f{(p - 1) % max(1, folders):02d}" / pid
        for st in range(1, studies + 1):
            v["StudyInstanceUID"] = new_uid(rng)
            v["StudyID"] = f"{st}"
            v["AccessionNumber"] = f"T{seed}A{p:06d}{st:02d}"
            v["StudyDate"] = f"20{10 + rng.randrange(14)}{rng.randrange(1, 13):02d}01"
            v["StudyTime"] = "120000"
            v["StudyDescription"] = f"Tiny CT study {st}"
            for se in range(1, series + 1):
                v["SeriesInstanceUID"] = new_uid(rng)
                v["FrameOfReferenceUID"] = new_uid(rng)
                v["SeriesNumber"] = f"{se}"
                v["SeriesDescription"] = f"Tiny series {se}"
                folder = top / f"ST{st:02d}" / f"SE{se:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                for im in range(1, per_series + 1):
                    if made >= count:
                        return paths
                    v["SOPInstanceUID"] = new_uid(rng)
                    v["InstanceNumber"] = f"{im}"
                    path = folder / f"IM{im:04d}.dcm"
                    stamper.write(path, v)
                    paths.append(path)
                    made += 1
    return paths


# --- large synthetic CT ------------------------------------------------------------

# Pixel value = high byte * 256 + random low bits. High bytes: 0 air, 4 soft tissue
# (stored 1024 = 0 HU with intercept -1024), 3 fat/lung-ish, 5-6 bone.
_LOW_MASK = bytes(b & 0x3F for b in range(256))


def _ellipse_span(cx: float, cy: float, a: float, b: float, y: int) -> tuple[int, int] | None:
    dy = (y - cy) / b
    if dy * dy >= 1.0:
        return None
    half = a * (1.0 - dy * dy) ** 0.5
    x0 = max(0, int(cx - half))
    x1 = min(LARGE_SIZE, int(cx + half) + 1)
    return (x0, x1) if x1 > x0 else None


def _phantom_high(z: float) -> bytes:
    """High bytes (one per pixel, row-major) of the phantom at relative height z in [0,1]."""
    n = LARGE_SIZE
    c = n / 2
    wobble = 0.5 + 0.5 * abs(((z * 7.3) % 2.0) - 1.0)
    shapes = [
        # (cx, cy, a, b, value), painted in order
        (c, c, 0.43 * n, (0.30 + 0.04 * wobble) * n, 4),  # body
        (c - 0.17 * n, c - 0.02 * n, 0.10 * n * (0.6 + z), 0.14 * n, 3),  # left lung
        (c + 0.17 * n, c - 0.02 * n, 0.10 * n * (1.6 - z), 0.14 * n, 3),  # right lung
        (c, c + 0.18 * n, 0.05 * n, 0.04 * n, 6),  # spine
        (c, c + 0.18 * n, 0.025 * n, 0.02 * n, 5),  # spinal canal
        (
            c + (z - 0.5) * 0.2 * n,
            c - 0.12 * n,
            0.06 * n * wobble,
            0.05 * n,
            5,
        ),  # moving blob
    ]
    out = bytearray(n * n)
    for y in range(n):
        row = y * n
        for cx, cy, a, b, v in shapes:
            span = _ellipse_span(cx, cy, a, b, y)
            if span:
                x0, x1 = span
                out[row + x0 : row + x1] = bytes((v,)) * (x1 - x0)
    return bytes(out)


def _large_pixels(high: bytes, rng: random.Random) -> bytes:
    npix = len(high)
    buf = bytearray(2 * npix)
    buf[0::2] = rng.randbytes(npix).translate(_LOW_MASK)  # little endian: low byte first
    buf[1::2] = high
    return bytes(buf)


def make_large(
    dest: str | Path,
    count: int = 500,
    seed: int = 2,
    *,
    studies: int = 10,
) -> list[Path]:
    """Write ``count`` synthetic 512x512 16-bit CT files under ``dest``, spread over
    ``studies`` studies (one patient and one series each, slices numbered from 1).

    Layout: ``dest/PATIENTID/SE01/IMnnnn.dcm``; PatientIDs are ``L<seed>P<nn>``.
    Returns the paths in the order written.
    """
    dest = Path(dest)
    studies = max(1, min(studies, count)) if count else 1
    rng = random.Random(f"large:{seed}")
    per_study = [count // studies + (1 if i < count % studies else 0) for i in range(studies)]
    phantoms: dict[int, bytes] = {}
    paths: list[Path] = []

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.Modality = "CT"
    ds.Manufacturer = "PiPACS bench"
    ds.ReferringPhysicianName = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = LARGE_SIZE
    ds.Columns = LARGE_SIZE
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"

    for st, n_inst in enumerate(per_study, start=1):
        pid = f"L{seed}P{st:02d}"
        ds.PatientID = pid
        ds.PatientName = f"BENCH^LARGE{seed}^P{st:02d}"
        ds.PatientBirthDate = f"{1940 + rng.randrange(70)}0101"
        ds.StudyInstanceUID = new_uid(rng)
        ds.StudyID = f"{st}"
        ds.AccessionNumber = f"L{seed}{st:04d}"
        ds.StudyDate = f"2023{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
        ds.StudyTime = "120000"
        ds.StudyDescription = "Bench large CT"
        ds.SeriesInstanceUID = new_uid(rng)
        ds.FrameOfReferenceUID = new_uid(rng)
        ds.SeriesNumber = 1
        ds.SeriesDescription = "Bench synthetic axial"
        ds.AcquisitionNumber = 1
        folder = dest / pid / "SE01"
        folder.mkdir(parents=True, exist_ok=True)
        for im in range(1, n_inst + 1):
            # up to 64 distinct phantom shapes along the series
            zi = (im - 1) * 64 // max(1, n_inst)
            if zi not in phantoms:
                phantoms[zi] = _phantom_high(zi / 64)
            sop_uid = new_uid(rng)
            ds.SOPInstanceUID = sop_uid
            meta.MediaStorageSOPInstanceUID = UID(sop_uid)
            ds.InstanceNumber = im
            ds.ImagePositionPatient = [-179.2, -179.2, f"{-float(im):.1f}"]
            ds.SliceLocation = f"{-float(im):.1f}"
            ds.PixelData = _large_pixels(phantoms[zi], rng)
            path = folder / f"IM{im:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="kind", required=True)
    s = sub.add_parser("small", help="re-UID'd CT_small/MR_small files")
    s.add_argument("dest", type=Path)
    s.add_argument("--patients", type=int, default=50)
    s.add_argument("--seed", type=int, default=1)
    t = sub.add_parser("tiny", help="about 1 KB CT files, 20 per patient (index scaling)")
    t.add_argument("dest", type=Path)
    t.add_argument("--count", type=int, default=1000)
    t.add_argument("--folders", type=int, default=1)
    t.add_argument("--seed", type=int, default=4)
    g = sub.add_parser("large", help="synthetic 512x512 16-bit CT files")
    g.add_argument("dest", type=Path)
    g.add_argument("--count", type=int, default=500)
    g.add_argument("--studies", type=int, default=10)
    g.add_argument("--seed", type=int, default=2)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.kind == "small":
        paths = make_small(args.dest, patients=args.patients, seed=args.seed)
    elif args.kind == "tiny":
        paths = make_tiny(args.dest, count=args.count, seed=args.seed, folders=args.folders)
    else:
        paths = make_large(args.dest, count=args.count, seed=args.seed, studies=args.studies)
    dt = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} files, {size / 1e6:.1f} MB in {args.dest} ({dt:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
