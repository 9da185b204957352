"""Disk full: stores refused with 0xA700 / HTTP 507, nothing half-written, recovery without
a restart, a restart on the full disk, and recycling that keeps working.

Each test mounts real small filesystems (tmpfs, and ext4 in a loop-mounted image, the kind an
SD card carries) for the storage area and/or the index, fills them with a ballast file, and
talks to a real pipacs process with dcmtk's storescu and over HTTP.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import PipacsProcess, dcmtk, store_status, wait_until

STORAGE_FULL = 0xA700  # Out of resources


# ---------------------------------------------------------------- small filesystems


@dataclass
class SmallDisk:
    """A mounted filesystem of a few MB; `fill` takes every free byte with a ballast file."""

    root: Path
    kind: str

    @property
    def ballast(self) -> Path:
        return self.root / "ballast"

    def fill(self) -> None:
        """Write the ballast until the filesystem refuses another byte, even after a sync
        (ext4 gives back what it reserved for delayed allocation once blocks are allocated)."""
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for _ in range(10):
                wrote = 0
                for chunk in (1 << 16, 1 << 12, 1 << 9, 1):
                    block = b"\xa5" * chunk
                    while True:
                        try:
                            wrote += os.write(fd, block)
                        except OSError as e:
                            if e.errno != errno.ENOSPC:
                                raise
                            break
                os.fsync(fd)
                if not wrote:
                    break
        finally:
            os.close(fd)

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., SmallDisk]]:
    """make(name, kind="tmpfs", size_kb=4096): a small filesystem mounted at tmp_path/name."""
    mounted: list[Path] = []

    def make(name: str, kind: str = "tmpfs", size_kb: int = 4096) -> SmallDisk:
        where = tmp_path / name
        where.mkdir()
        if kind == "tmpfs":
            proc = _run("mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs",
                        str(where))
        else:
            image = tmp_path / f"{name}.img"
            with image.open("wb") as f:
                f.truncate(size_kb * 1024)
            made = _run("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
            if made.returncode != 0:
                pytest.skip(f"cannot make an ext4 image (mkfs.ext4): {made.stderr.strip()}")
            proc = _run("mount", "-o", "loop", str(image), str(where))
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a small {kind} filesystem (needs root and permission "
                        f"to mount): {proc.stderr.strip()}")
        mounted.append(where)
        return SmallDisk(where, kind)

    yield make
    for where in reversed(mounted):
        if _run("umount", str(where)).returncode != 0:
            _run("umount", "-l", str(where))  # a process still holds it: detach it anyway


# ---------------------------------------------------------------- talking to pipacs


def http(p: PipacsProcess, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    status, _, data = p.request(method, path, body, headers)
    return status, data


def post_instance(p: PipacsProcess, data: bytes) -> tuple[int, dict[str, Any]]:
    status, body = http(p, "POST", "/instances", data)
    return status, json.loads(body) if body else {}


def zip_of(*files: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in files:
            z.writestr(f.name + "-" + f.parent.name, f.read_bytes())
    return buf.getvalue()


def stow(p: PipacsProcess, *files: Path) -> tuple[int, dict[str, Any]]:
    boundary = "diskfullBoundary"
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                    + f.read_bytes() + b"\r\n" for f in files) + b"--" + boundary.encode() + b"--"
    ctype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    status, raw = http(p, "POST", "/dicom-web/studies", body, {"Content-Type": ctype})
    return status, json.loads(raw) if raw else {}


def failure_reasons(answer: dict[str, Any]) -> list[int]:
    return [item["00081197"]["Value"][0] for item in answer.get("00081198", {}).get("Value", [])]


def stored(p: PipacsProcess) -> dict[str, bytes]:
    """Every instance ID with the bytes pipacs serves for it."""
    return {i: p.get(f"/instances/{i}/file") for i in p.get("/instances")}


def check_consistent(p: PipacsProcess, expected: dict[str, bytes] | None = None) -> None:
    """The index and the files agree: every indexed instance has its file and every file is
    indexed; nothing stays staged in .incoming; the bytes are the ones first stored."""
    incoming = p.storage / ".incoming"
    wait_until(lambda: not any(incoming.iterdir()),
               f"staged files left in {incoming}: {sorted(os.listdir(incoming))}")
    ids = p.get("/instances")
    uuids = {p.get(f"/instances/{i}/attachments/dicom/uuid").decode().strip('"\n')
             for i in ids}
    files = {f.name for f in p.storage.rglob("*") if f.is_file()
             and ".incoming" not in f.parts and f.name != "ballast"}
    assert files == uuids, f"files without index rows: {files - uuids}; " \
                           f"index rows without files: {uuids - files}"
    if expected is not None:
        now = stored(p)
        lost = set(expected) - set(now)
        assert not lost, f"instances lost: {lost}"
        changed = [i for i in expected if now[i] != expected[i]]
        assert not changed, f"instances changed: {changed}"


def assert_up(p: PipacsProcess) -> None:
    assert p.proc is not None and p.proc.poll() is None, p.log()
    p.echo()
    assert p.get("/system")["Name"] == "TestPi"
    assert "Traceback" not in p.log(), p.log()


def sizes_ok(p: PipacsProcess) -> None:
    """/statistics agrees with the instances left (the running totals survived refusals)."""
    total = sum(int(p.get(f"/instances/{i}/attachments/dicom/compressed-size"))
                for i in p.get("/instances"))
    assert int(p.get("/statistics")["TotalDiskSize"]) == total


# ---------------------------------------------------------------- the storage area is full


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_storage_full(kind: str, small_disk: Any, make_pipacs: Any,
                      small_data: list[Path]) -> None:
    disk = small_disk("disk", kind, 4096 if kind == "tmpfs" else 8192)
    storage = disk.root / "storage"
    p = make_pipacs(StorageDirectory=str(storage), DicomWeb={"Enable": True})
    ct1, ct2, mr2 = small_data[0:20], small_data[40:60], small_data[60:80]
    assert store_status(p, *ct1[:6]) == [0] * 6
    before = stored(p)
    for pid, data in before.items():  # staged or settled, the stored bytes are served
        assert p.get(f"/instances/{pid}/attachments/dicom/compressed-data") == data
    disk.fill()

    # Every entry point refuses, with the status that says "out of resources".
    assert store_status(p, *ct2[:3]) == [STORAGE_FULL] * 3
    status, body = post_instance(p, ct2[3].read_bytes())
    assert status == 507, body
    assert body["HttpStatus"] == 507 and body["OrthancStatus"] == 19
    assert "no space left" in body["Details"] and str(storage) in body["Details"], body
    status, body = post_instance(p, zip_of(ct2[4], ct2[5]))
    assert status == 507 and str(storage) in body["Details"], body
    status, answer = stow(p, ct2[6])
    assert status == 409 and failure_reasons(answer) == [STORAGE_FULL], answer
    assert "no space left" in p.log()

    assert_up(p)
    check_consistent(p, before)
    sizes_ok(p)

    # Deleting over REST gives room back: the next store fits.
    assert http(p, "DELETE", f"/instances/{next(iter(before))}")[0] == 200
    del before[next(iter(before))]
    assert store_status(p, mr2[0]) == [0]
    before = stored(p)

    # Space returns: every entry point stores again, without a restart.
    disk.free()
    assert store_status(p, *ct2[:3]) == [0] * 3
    assert post_instance(p, ct2[3].read_bytes())[0] == 200
    status, body = post_instance(p, zip_of(ct2[4], ct2[5]))
    assert status == 200 and len(body) == 2, body
    assert stow(p, ct2[6])[0] == 200
    assert len(p.get("/instances")) == len(before) + 7
    check_consistent(p, before)
    sizes_ok(p)


# ---------------------------------------------------------------- the index is full


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_index_full(kind: str, small_disk: Any, make_pipacs: Any,
                    small_data: list[Path]) -> None:
    """The SQLite index (and its WAL, which grows with every commit) has no room left."""
    disk = small_disk("disk", kind, 2048 if kind == "tmpfs" else 8192)
    index = disk.root / "index"
    p = make_pipacs(IndexDirectory=str(index), DicomWeb={"Enable": True})
    assert store_status(p, *small_data[:4]) == [0] * 4
    disk.fill()

    # The WAL may still have room from earlier commits: store until the index refuses.
    statuses = []
    for f in small_data[4:40]:
        statuses += store_status(p, f)
        if statuses[-1]:
            break
    assert statuses[-1] == STORAGE_FULL, statuses
    assert set(statuses[:-1]) <= {0}
    status, body = post_instance(p, small_data[41].read_bytes())
    assert status == 507, body
    assert "no space left" in body["Details"] and str(index) in body["Details"], body
    status, answer = stow(p, small_data[42])
    assert status == 409 and failure_reasons(answer) == [STORAGE_FULL], answer
    assert_up(p)
    before = stored(p)
    assert len(before) == 4 + len(statuses) - 1
    check_consistent(p, before)

    disk.free()
    assert store_status(p, *small_data[43:46]) == [0] * 3
    assert post_instance(p, small_data[46].read_bytes())[0] == 200
    assert stow(p, small_data[47])[0] == 200
    check_consistent(p, before)
    sizes_ok(p)
    assert "Traceback" not in p.log()


# ---------------------------------------------------------------- other writes to a full disk


def until_refused(attempt: Callable[[int], tuple[int, bytes]], what: str,
                  tries: int = 400) -> tuple[int, dict[str, Any]]:
    """Repeat a write until the full disk refuses it (the WAL may still hold room from
    earlier commits): the number of writes that succeeded first, and the 507 answer."""
    for n in range(tries):
        status, body = attempt(n)
        if status != 200:
            assert status == 507, (what, status, body)
            return n, json.loads(body)
    raise AssertionError(f"{what}: never refused on a full disk ({tries} tries)")


def assert_full(body: dict[str, Any], where: Path) -> None:
    """Orthanc's answer to a write on a full disk, naming the disk."""
    assert body["HttpStatus"] == 507 and body["OrthancStatus"] == 19, body
    assert body["Message"] == "The file storage is full", body
    assert "no space left" in body["Details"] and str(where) in body["Details"], body


def dicom_answers(p: PipacsProcess, out: Path, *args: str) -> list[Path]:
    """Run a dcmtk query/retrieve tool that writes what it receives to `out`; those files."""
    out.mkdir()
    dcmtk(*args, "-aec", p.aet, "-od", str(out), "127.0.0.1", str(p.dicom_port))
    return sorted(out.iterdir())


def run_job(p: PipacsProcess, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, raw = http(p, "POST", path, json.dumps({**body, "Asynchronous": True}).encode())
    assert status == 200, raw
    job = json.loads(raw)["ID"]
    wait_until(lambda: p.get(f"/jobs/{job}")["State"] in ("Success", "Failure"),
               f"job {job} finishes")
    return p.get(f"/jobs/{job}")  # type: ignore[no-any-return]


WORKLIST = {"PatientID": "WL01", "PatientName": "FULL^DISK",
            "ScheduledProcedureStepSequence": [{"Modality": "US",
                                                "ScheduledStationAETitle": "US_ROOM"}]}


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_other_writes_on_a_full_disk(kind: str, small_disk: Any, make_pipacs: Any,
                                     small_data: list[Path], storescp: Any,
                                     tmp_path: Path) -> None:
    """Protecting, metadata, modifying (a job) and worklist authoring on a full index disk:
    507 naming the disk, nothing half-done, no traceback; reads over DICOM still answer;
    everything works again once there is room, without a restart."""
    disk = small_disk("disk", kind, 2048 if kind == "tmpfs" else 8192)
    index, worklists = disk.root / "index", disk.root / "worklists"
    p = make_pipacs(IndexDirectory=str(index), UserMetadata={"Note": 1024},
                    Worklists={"Enable": True, "Database": str(worklists)},
                    DicomModalities={"scp": [storescp.aet, "127.0.0.1", storescp.port]})
    assert store_status(p, *small_data[:4]) == [0] * 4
    (patient,), (study,) = p.get("/patients"), p.get("/studies")
    uids = p.get(f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"]
    wait_until(lambda: p.get(f"/studies/{study}")["IsStable"], "the study becomes stable")
    status, raw = http(p, "POST", "/worklists/create", json.dumps({"Tags": WORKLIST}).encode())
    assert status == 200, raw
    before = stored(p)
    disk.fill()

    # A worklist file: refused whole, no temporary file left behind.
    status, raw = http(p, "POST", "/worklists/create", json.dumps({"Tags": WORKLIST}).encode())
    assert status == 507, raw
    assert_full(json.loads(raw), worklists)
    assert len(list(worklists.iterdir())) == 1 and len(p.get("/worklists")) == 1

    # Protection: the refused change is rolled back (the last one that succeeded stays).
    protect = f"/patients/{patient}/protected"
    n, body = until_refused(lambda n: http(p, "PUT", protect, b"0" if n % 2 else b"1"),
                            "PUT protected")
    assert_full(body, index)
    assert p.get(protect) == (b"1" if n % 2 else b"0")  # as the last write that succeeded

    # Metadata: a refused PUT keeps the previous value; a DELETE is done or refused whole.
    note = f"/studies/{study}/metadata/Note"
    n, body = until_refused(lambda n: http(p, "PUT", note, f"{n}:{'x' * 30000}".encode()),
                            "PUT metadata")
    assert_full(body, index)
    if not n:
        assert http(p, "GET", note)[0] == 404
    else:
        assert p.get(note).split(b":")[0] == str(n - 1).encode()
        status, raw = http(p, "DELETE", note)
        assert status in (200, 507), raw
        assert http(p, "GET", note)[0] == (404 if status == 200 else 200)

    # Reads need no room: C-FIND, C-MOVE, C-GET and worklist C-FIND still answer.
    study_keys = ("-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uids}")
    assert len(dicom_answers(p, tmp_path / "find", "findscu", "-S", "-X", *study_keys)) == 1
    dcmtk("movescu", "-S", "-aec", p.aet, "-aem", storescp.aet, *study_keys, "127.0.0.1",
          str(p.dicom_port))
    assert len(storescp.files()) == 4
    assert len(dicom_answers(p, tmp_path / "get", "getscu", "-S", *study_keys)) == 4
    wl = dicom_answers(p, tmp_path / "wl", "findscu", "-W", "-X", "-k", "PatientID")
    assert len(wl) == 1

    # Modifying, as a job: it fails with Orthanc's "full storage" error, and what it
    # stored before the disk refused is deleted again.
    modify = {"Replace": {"PatientName": "MODIFIED^NAME"}}
    for _ in range(40):
        job = run_job(p, f"/studies/{study}/modify", modify)
        if job["State"] == "Failure":
            break
        before.update(stored(p))  # it fitted: one more study
    assert job["State"] == "Failure", job
    assert job["ErrorCode"] == 19 and job["ErrorDescription"] == "The file storage is full", job
    assert "no space left" in job["ErrorDetails"] and str(index) in job["ErrorDetails"], job
    assert_up(p)
    check_consistent(p, before)
    assert set(stored(p)) == set(before)

    # Room again: every one of those works, without a restart.
    disk.free()
    status, raw = http(p, "POST", "/worklists/create", json.dumps({"Tags": WORKLIST}).encode())
    assert status == 200, raw
    assert len(p.get("/worklists")) == 2
    assert len(dicom_answers(p, tmp_path / "wl2", "findscu", "-W", "-X", "-k", "PatientID")) == 2
    for value in (b"1", b"0"):
        assert http(p, "PUT", protect, value)[0] == 200 and p.get(protect) == value
    assert http(p, "PUT", note, b"back")[0] == 200 and p.get(note) == b"back"
    job = run_job(p, f"/studies/{study}/modify", modify)
    assert job["State"] == "Success", job
    assert len(p.get("/instances")) == len(before) + 4
    check_consistent(p, before)
    sizes_ok(p)
    assert_up(p)


# ---------------------------------------------------------------- one disk for both (a Pi)


def test_one_full_disk_delete_and_restart(small_disk: Any, make_pipacs: Any,
                                          small_data: list[Path]) -> None:
    """Storage and index share one SD card: a full card still lets a teacher delete over
    REST, and pipacs restarts on it without losing anything."""
    disk = small_disk("disk", "ext4", 8192)
    p = make_pipacs(StorageDirectory=str(disk.root / "storage"),
                    IndexDirectory=str(disk.root / "index"))
    assert store_status(p, *small_data[:10]) == [0] * 10
    disk.fill()
    assert store_status(p, small_data[40]) == [STORAGE_FULL]
    before = stored(p)
    check_consistent(p, before)

    # Deleting needs a little room in the index itself: it must still work on a full disk.
    first = sorted(before)[0]
    assert http(p, "DELETE", f"/instances/{first}")[0] == 200
    del before[first]
    assert store_status(p, small_data[60]) == [0]  # a small MR fits where a CT was
    before = stored(p)
    check_consistent(p, before)

    # A restart on the full disk: it starts (or says clearly why not) and loses nothing.
    disk.fill()
    assert p.stop() == 0
    p.start(wait=False)
    try:
        p.wait_ready()
    except AssertionError:
        assert "no space left" in p.log().lower(), p.log()
        disk.free()
        p.start()
    assert_up(p)
    check_consistent(p, before)
    assert store_status(p, small_data[41]) in ([0], [STORAGE_FULL])
    disk.free()
    assert store_status(p, small_data[42]) == [0]
    check_consistent(p)
    sizes_ok(p)


@pytest.mark.parametrize("which", ["storage", "index"])
def test_restart_on_full_disk(which: str, small_disk: Any, make_pipacs: Any,
                              small_data: list[Path]) -> None:
    """Stopped and started again while its storage or index disk is full."""
    disk = small_disk("disk", "tmpfs", 2048)
    key = "StorageDirectory" if which == "storage" else "IndexDirectory"
    p = make_pipacs(**{key: str(disk.root / which)})
    assert store_status(p, *small_data[:5]) == [0] * 5
    before = stored(p)
    assert p.stop() == 0
    disk.fill()
    p.start(wait=False)
    try:
        p.wait_ready()
    except AssertionError:
        assert "no space left" in p.log().lower(), p.log()
        assert "Traceback" not in p.log(), p.log()
        disk.free()
        p.start()
    assert_up(p)
    check_consistent(p, before)
    disk.free()
    assert store_status(p, small_data[5]) == [0]
    check_consistent(p, before)


# ---------------------------------------------------------------- recycling near the limit


def test_recycling_near_a_full_disk(small_disk: Any, make_pipacs: Any,
                                    small_data: list[Path]) -> None:
    """MaximumStorageSize recycling works close to the limit, and when the disk fills up
    before the limit is reached (a limit set larger than the disk) the oldest unprotected
    patient is recycled instead of refusing the store."""
    disk = small_disk("disk", "tmpfs", 4096)
    storage = disk.root / "storage"
    p = make_pipacs(StorageDirectory=str(storage), MaximumStorageSize=1,
                    MaximumStorageMode="Recycle")
    ct1, mr1, ct2, mr2 = (small_data[i:i + 20] for i in (0, 20, 40, 60))
    # 20 CT files of patient 1 (~0.8 MB), then patient 2's: patient 1 goes to stay under 1 MB.
    assert store_status(p, *ct1) == [0] * 20
    assert store_status(p, *ct2) == [0] * 20
    patients = {x["MainDicomTags"]["PatientID"] for x in p.get("/patients?expand")}
    assert patients == {"S11P0002"}
    used = int(p.get("/statistics")["TotalDiskSize"])
    assert used <= 1024 * 1024
    check_consistent(p)
    sizes_ok(p)

    # The disk fills up below MaximumStorageSize: the oldest unprotected patient makes room.
    assert store_status(p, *mr1[:5]) == [0] * 5  # patient 1 again, a small MR study
    disk.fill()
    assert store_status(p, mr1[5]) == [0]  # patient 2 was recycled to make room
    patients = {x["MainDicomTags"]["PatientID"] for x in p.get("/patients?expand")}
    assert patients == {"S11P0001"}
    check_consistent(p)
    sizes_ok(p)

    # Nobody else to recycle (the only other patient is protected): the refusal stands.
    pid = p.get("/patients")[0]
    assert http(p, "PUT", f"/patients/{pid}/protected", b"1")[0] == 200
    disk.fill()
    assert store_status(p, mr2[0]) == [STORAGE_FULL]
    status, body = post_instance(p, mr2[1].read_bytes())
    assert status == 507, body
    assert_up(p)
    check_consistent(p)
    disk.free()
    assert store_status(p, mr2[2]) == [0]
    check_consistent(p)
    sizes_ok(p)


# ---------------------------------------------------------------- in process: settling


def make_context(folder: Path, **overrides: Any) -> Any:
    from pipacs import config
    from pipacs.context import ServerContext

    data = {"StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
            **overrides}
    settings, _ = config.build_settings(data, folder)
    return ServerContext(settings)


def test_settle_on_a_full_index_disk(small_disk: Any, tmp_path: Path,
                                     small_data: list[Path]) -> None:
    """Stored, then the index's disk fills before the batch is made durable: the files are
    settled all the same (making the WAL durable needs no room), or stay staged, readable,
    until there is room; never dropped."""
    disk = small_disk("disk", "tmpfs", 2048)
    ctx = make_context(tmp_path, IndexDirectory=str(disk.root / "index"))
    try:
        results = [ctx.store(f.read_bytes()) for f in small_data[:3]]
        disk.fill()
        ctx.settle()
        assert not list(ctx.storage.incoming.iterdir())
        for r, f in zip(results, small_data, strict=False):
            assert ctx.read_instance(r.ids[3]) == f.read_bytes()
        disk.free()
    finally:
        ctx.stop()


def test_make_durable_syncs_the_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch fsync really syncs the WAL (a no-op write transaction did not: SQLite skips
    committing, and syncing, when no page changed), and writes nothing to do it."""
    from pipacs.index import Index

    index = Index(tmp_path)
    index.set_property("probe", "1")
    wal = tmp_path / "pipacs-index.db-wal"
    size = wal.stat().st_size
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    index.make_durable()
    assert str(wal) in synced
    assert wal.stat().st_size == size
    index.close()


def test_files_that_cannot_settle_stay_staged_and_readable(tmp_path: Path,
                                                          small_data: list[Path]) -> None:
    """A staged file that cannot move into place (its folder cannot be made) is kept, read
    from .incoming, and settled on a later try: never dropped from the batch."""
    ctx = make_context(tmp_path)
    try:
        result = ctx.store(small_data[0].read_bytes())
        uuid = ctx.index.attachment(ctx.index.get(result.ids[3]).id).uuid
        folder = ctx.storage.path(uuid).parent
        shutil.rmtree(folder)
        folder.write_bytes(b"in the way")  # a file where the folder should be
        assert ctx.settle() == 0
        assert ctx.storage.staged() == [uuid]
        assert ctx.read_instance(result.ids[3]) == small_data[0].read_bytes()
        folder.unlink()
        ctx.storage._made.clear()
        assert ctx.settle() == 1
        assert ctx.storage.path(uuid).exists() and not ctx.storage.staged()
    finally:
        ctx.stop()


def test_recovery_keeps_files_it_cannot_index_now(tmp_path: Path, small_data: list[Path]) -> None:
    """After a crash, a whole staged file the index cannot take now (a full disk) is kept
    for the next start, not removed as if it were a partial write."""
    from pipacs.storage import StorageArea

    storage = StorageArea(tmp_path / "storage")
    att = storage.write(small_data[0].read_bytes())
    assert storage.recover(lambda u: False, lambda u, b: None) == (0, 0, 0)
    assert len(list(storage.incoming.iterdir())) == 1
    assert storage.recover(lambda u: False, lambda u, b: True) == (0, 1, 0)
    assert storage.path(att.uuid).read_bytes() == small_data[0].read_bytes()


def test_space_reserve(small_disk: Any) -> None:
    from pipacs.storage import SpaceReserve

    disk = small_disk("disk", "tmpfs", 2048)
    reserve = SpaceReserve(disk.root)
    assert reserve.ensure() and reserve.path.stat().st_size == 2048 * 1024 // 32
    free = os.statvfs(disk.root).f_bavail
    assert reserve.release() and not reserve.release()
    assert os.statvfs(disk.root).f_bavail > free
    disk.fill()
    assert not reserve.ensure() and not reserve.path.exists()  # no room to spare: later
    disk.free()
    assert reserve.ensure()


def wsgi_call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request to a Bottle app in this process (no socket)."""
    from wsgiref.util import setup_testing_defaults

    env: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path,
                           "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
                           "wsgi.errors": io.StringIO(), "REMOTE_ADDR": "127.0.0.1"}
    setup_testing_defaults(env)
    got: list[str] = []
    out = b"".join(app(env, lambda status, headers, *exc: got.append(status)))
    return int(got[0].split()[0]), out


def test_full_disk_errors_from_any_route_are_507(tmp_path: Path, small_data: list[Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTTP layer answers 507 for SQLite's "full" and the filesystem's ENOSPC raised by
    any route; other SQLite and OS errors stay 500s (they are bugs or other faults)."""
    import sqlite3

    from pipacs.http.app import create_app

    ctx = make_context(tmp_path, AuthenticationEnabled=False)
    try:
        app = create_app(ctx)
        patient = ctx.store(small_data[0].read_bytes()).ids[0]
        full = sqlite3.OperationalError("database or disk is full")
        full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
        for error, expected in ((full, 507), (OSError(errno.ENOSPC, "No space left"), 507),
                                (sqlite3.OperationalError("database is locked"), 500),
                                (sqlite3.IntegrityError("UNIQUE constraint failed"), 500),
                                (OSError(errno.EACCES, "Permission denied"), 500)):
            def fail(*args: Any, error: BaseException = error) -> None:
                raise error

            monkeypatch.setattr(ctx.index, "set_protected", fail)
            status, body = wsgi_call(app, "PUT", f"/patients/{patient}/protected", b"1")
            assert status == expected, (error, body)
            if expected == 507:
                answer = json.loads(body)
                assert answer["Message"] == "The file storage is full", answer
                assert "no space left" in answer["Details"], answer
    finally:
        ctx.stop()


def test_modify_on_a_full_disk_deletes_what_it_stored(tmp_path: Path, small_data: list[Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A modification that the disk refuses half-way leaves no half-modified study: the
    instances it stored are deleted again, the source is kept, the error is a full disk."""
    from pipacs import modify
    from pipacs.context import StoreRefused
    from pipacs.ids import INSTANCE, STUDY
    from pipacs.storage import StorageFullError

    ctx = make_context(tmp_path)
    try:
        for f in small_data[:4]:
            ctx.store(f.read_bytes())
        before = set(ctx.index.list_public_ids(INSTANCE))
        study = ctx.index.get(ctx.index.list_public_ids(STUDY)[0])
        assert study is not None
        instances = [ctx.index.get(i) for i in sorted(before)]
        real_store, calls = ctx.store, []

        def store(data: bytes, *args: Any) -> Any:
            calls.append(1)
            if len(calls) == 3:
                raise StoreRefused("Full", f"[Errno 28] no space left in {tmp_path}")
            return real_store(data, *args)

        monkeypatch.setattr(ctx, "store", store)
        req = modify.parse_request({"Replace": {"PatientName": "CHANGED"}, "KeepSource": False},
                                   STUDY, False)
        with pytest.raises(StorageFullError, match="no space left"):
            modify.run(ctx, study, req, instances)  # type: ignore[arg-type]
        assert len(calls) == 3
        assert set(ctx.index.list_public_ids(INSTANCE)) == before
        for i in before:
            ctx.read_instance(i)
    finally:
        ctx.stop()
