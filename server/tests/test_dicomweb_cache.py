"""The DICOMweb metadata cache: one checked, compressed file per series under IndexDirectory."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import pydicom

from conftest import PipacsProcess, wait_until
from pipacs.plugins.dicomweb_metadata import (
    CACHE_FOLDER,
    OLD_CACHE_FOLDER,
    decode_entry,
    encode_entry,
)
from pipacs.reindex import INDEX_CACHES

BLOCK = 4096  # what a small file takes on the SD card's ext4


def cache_files(p: PipacsProcess) -> dict[str, Path]:
    folder = p.folder / "index" / CACHE_FOLDER
    return {f.name: f for f in folder.rglob("*") if f.is_file()}


def cached_instances(path: Path) -> list[str] | None:
    try:
        entry = decode_entry(path.read_bytes(), path.name)
    except OSError:
        return None
    return None if entry is None else sorted(entry)


def metadata(p: PipacsProcess, path: str) -> list[dict[str, Any]]:
    req = urllib.request.Request(f"{p.url}/dicom-web/{path}/metadata",
                                 headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        result: list[dict[str, Any]] = json.loads(r.read())
    return result


def delete(p: PipacsProcess, path: str) -> None:
    urllib.request.urlopen(urllib.request.Request(p.url + path, method="DELETE"),
                           timeout=10).read()


def uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID


def sops(answer: list[dict[str, Any]]) -> list[str]:
    return sorted(m["00080018"]["Value"][0] for m in answer)


def series_ids(p: PipacsProcess) -> set[str]:
    return set(p.get("/series"))


def test_entry_format_detects_torn_and_damaged_files() -> None:
    items = [("a", "u1", '{"x":1}'), ("b", "u2", '{"y":[2,3]}')]
    data = encode_entry("s", items)
    assert decode_entry(data, "s") == {"a": ("u1", '{"x":1}'), "b": ("u2", '{"y":[2,3]}')}
    body = zlib.decompress(data).decode()
    assert json.loads(body.partition("\n")[2]) == [{"x": 1}, {"y": [2, 3]}]  # DICOM JSON
    assert decode_entry(encode_entry("s", []), "s") == {}
    assert decode_entry(data, "another series") is None
    for cut in range(len(data)):  # a write cut short by a power cut
        assert decode_entry(data[:cut], "s") is None
    for i in range(len(data)):  # a damaged block
        flipped = bytearray(data)
        flipped[i] ^= 0x55
        assert decode_entry(bytes(flipped), "s") in (None, decode_entry(data, "s"))
    liar = zlib.compress(b'{"format":1,"series":"s","instances":[["a","u1",3]]}\n[{"x":1}]')
    assert decode_entry(liar, "s") is None  # lengths that do not add up


def test_one_small_file_per_series_once_stable(make_pipacs: Any,
                                               small_data: list[Path]) -> None:
    p = make_pipacs(DicomWeb={"Enable": True})
    p.store(*small_data[:40])  # 2 studies of 2 series of 10 instances
    wait_until(lambda: len(cache_files(p)) == 4
             and all(cached_instances(f) for f in cache_files(p).values()), "4 series files")
    files = cache_files(p)
    assert set(files) == series_ids(p)
    assert all(len(cached_instances(f) or []) == 10 for f in files.values())
    assert not [f for f in (p.folder / "index").rglob(".tmp-*")]

    # What the old layout wrote for the same metadata: one "uuid length\ntext" per instance.
    old_bytes = old_disk = new_bytes = new_disk = 0
    for f in files.values():
        size = f.stat().st_size
        new_bytes += size
        new_disk += -(-size // BLOCK) * BLOCK
        for uuid, text in (decode_entry(f.read_bytes(), f.name) or {}).values():
            one = len(f"{uuid} {len(text)}\n{text}".encode())
            old_bytes += one
            old_disk += -(-one // BLOCK) * BLOCK
    assert old_bytes >= 8 * new_bytes, (old_bytes, new_bytes)
    assert old_disk >= 10 * new_disk, (old_disk, new_disk)

    study = uids(small_data[0])[0]
    answer = metadata(p, f"studies/{study}")
    assert sops(answer) == sorted(uids(f)[2] for f in small_data[:20])
    assert "BulkDataURI" in answer[0]["7FE00010"]
    assert p.url in answer[0]["7FE00010"]["BulkDataURI"]


def test_torn_or_damaged_file_is_ignored_and_rebuilt(make_pipacs: Any,
                                                     small_data: list[Path]) -> None:
    p = make_pipacs(DicomWeb={"Enable": True})
    p.store(*small_data[:20])
    wait_until(lambda: len(cache_files(p)) == 2, "2 series files")
    study = uids(small_data[0])[0]
    good = metadata(p, f"studies/{study}")
    p.stop()
    torn, damaged = sorted(cache_files(p).values())
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    p.start()
    assert metadata(p, f"studies/{study}") == good
    wait_until(lambda: all(len(cached_instances(f) or []) == 10 for f in (torn, damaged)),
             "the two files rebuilt")
    assert metadata(p, f"studies/{study}") == good


def test_new_instance_after_stability_is_answered(make_pipacs: Any,
                                                  small_data: list[Path]) -> None:
    p = make_pipacs(DicomWeb={"Enable": True})
    p.store(*small_data[:9])  # a series without its last instance
    wait_until(lambda: len(cache_files(p)) == 1, "the series file")
    (path,) = cache_files(p).values()
    assert len(cached_instances(path) or []) == 9
    study, series, _ = uids(small_data[0])
    assert len(metadata(p, f"studies/{study}/series/{series}")) == 9
    p.store(small_data[9])
    answer = metadata(p, f"studies/{study}/series/{series}")
    assert sops(answer) == sorted(uids(f)[2] for f in small_data[:10])
    one = uids(small_data[9])
    assert sops(metadata(p, "studies/{}/series/{}/instances/{}".format(*one))) == [one[2]]
    wait_until(lambda: len(cached_instances(path) or []) == 10, "the series file with 10")


def test_deleting_invalidates(make_pipacs: Any, small_data: list[Path]) -> None:
    p = make_pipacs(DicomWeb={"Enable": True})
    p.store(*small_data[:20])
    wait_until(lambda: len(cache_files(p)) == 2, "2 series files")
    study = uids(small_data[0])[0]
    instance = p.get(f"/series/{next(iter(cache_files(p)))}/instances")[0]
    series_id = instance["ParentSeries"]
    path = cache_files(p)[series_id]
    delete(p, f"/instances/{instance['ID']}")
    gone = instance["MainDicomTags"]["SOPInstanceUID"]
    assert gone not in sops(metadata(p, f"studies/{study}"))
    assert len(metadata(p, f"studies/{study}")) == 19
    wait_until(lambda: len(cached_instances(path) or []) == 9, "the file without it")
    other = next(s for s in cache_files(p) if s != series_id)
    delete(p, f"/series/{other}")
    wait_until(lambda: other not in cache_files(p), "the deleted series' file removed")
    assert len(metadata(p, f"studies/{study}")) == 9


def test_reindex_clears_the_cache(make_pipacs: Any, small_data: list[Path]) -> None:
    p = make_pipacs(DicomWeb={"Enable": True})
    p.store(*small_data[:10])
    wait_until(lambda: len(cache_files(p)) == 1, "the series file")
    p.stop()
    old = p.folder / "index" / OLD_CACHE_FOLDER / "ab"
    old.mkdir(parents=True)
    (old / "ab-cd").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "pipacs", "--reindex", "configuration.json"],
                          cwd=p.folder, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert CACHE_FOLDER in INDEX_CACHES and OLD_CACHE_FOLDER in INDEX_CACHES
    for name in INDEX_CACHES:
        assert not (p.folder / "index" / name).exists()
    p.start()
    study, series, _ = uids(small_data[0])
    assert len(metadata(p, f"studies/{study}/series/{series}")) == 10
    wait_until(lambda: len(cache_files(p)) == 1, "the series file again")


def test_old_layout_removed_at_start(make_pipacs: Any, small_data: list[Path]) -> None:
    p = make_pipacs(start=False, DicomWeb={"Enable": True})
    old = p.folder / "index" / OLD_CACHE_FOLDER
    for i in range(300):
        sub = old / f"{i % 256:02x}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i:08x}-instance").write_text("uuid 2\n{}")
    p.start()
    wait_until(lambda: not old.exists(), "the old cache folder removed")
    p.store(*small_data[:10])
    study = uids(small_data[0])[0]
    assert len(metadata(p, f"studies/{study}")) == 10
    p.stop(signal.SIGTERM)
    assert "removed the old DICOMweb metadata cache" in p.log()


def test_deleting_an_instance_of_a_series_not_in_memory(make_pipacs: Any,
                                                        small_data: list[Path]) -> None:
    """After a restart (or once the series has left the memory) the cache file is the only
    place the series' entries are: deleting one instance rewrites it without that instance,
    with no WADO-RS call needed (the deleted instance's tags must not stay on the disk)."""
    p = make_pipacs(DicomWeb={"Enable": True})
    p.store(*small_data[:20])  # two series
    wait_until(lambda: [len(cached_instances(f) or []) for f in cache_files(p).values()]
             == [10, 10], "two series files with 10")
    path, other = sorted(cache_files(p).values())
    untouched = other.read_bytes()
    p.stop()
    p.start()  # nothing in memory now
    instance = p.get(f"/series/{path.name}/instances")[3]
    gone, gone_sop = instance["ID"], instance["MainDicomTags"]["SOPInstanceUID"]
    delete(p, f"/instances/{gone}")
    wait_until(lambda: gone not in (cached_instances(path) or [gone]),
             "the series file without the deleted instance")
    assert len(cached_instances(path) or []) == 9
    assert gone_sop.encode() not in zlib.decompress(path.read_bytes())
    assert other.read_bytes() == untouched
    study = uids(small_data[0])[0]
    series = p.get(f"/series/{path.name}")["MainDicomTags"]["SeriesInstanceUID"]
    answer = metadata(p, f"studies/{study}/series/{series}")
    assert len(answer) == 9 and gone_sop not in sops(answer)
    assert "Traceback" not in p.log()
