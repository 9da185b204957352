"""Power cuts, not just SIGKILL: pipacs on powerfs (bench/powerfs.py), a FUSE file system that
forgets at a "cut" every write not yet fsynced. A few trials of bench/powercut.py; the many
trials, and Orthanc beside pipacs, are `python bench/powercut.py` (bench/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from conftest import need

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"),
                                reason="no /dev/fuse here: powerfs is a FUSE file system")

powercut = pytest.importorskip("powercut", reason="bench/ is on sys.path (conftest)")
powerfs = powercut.powerfs


def _write(path: Path, data: bytes, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def test_powerfs_keeps_what_ext4_would(tmp_path: Path) -> None:
    with powercut.mounted(tmp_path) as (mnt, ctl):
        (mnt / "d").mkdir()
        _write(mnt / "d" / "unsynced", b"lost", sync=False)
        _write(mnt / "d" / "synced", b"kept", sync=True)
        _write(mnt / "d" / "synced-later", b"first", sync=True)
        _write(mnt / "d" / "synced-later", b"second, longer", sync=False)
        os.rename(mnt / "d" / "synced", mnt / "d" / "renamed")  # nothing synced after it
        assert powerfs.control(ctl, "cut")["cuts"] == 1
        assert sorted(p.name for p in (mnt / "d").iterdir()) == [
            "synced", "synced-later", "unsynced"]
        # created before an fsync that committed the journal, but never synced itself
        assert (mnt / "d" / "unsynced").read_bytes() == b""
        assert (mnt / "d" / "synced").read_bytes() == b"kept"
        assert (mnt / "d" / "synced-later").read_bytes() == b"first"


def test_powerfs_strict_needs_the_folder_synced(tmp_path: Path) -> None:
    with powercut.mounted(tmp_path, strict=True) as (mnt, ctl):
        _write(mnt / "a", b"data", sync=True)
        _write(mnt / "b", b"data", sync=True)
        powercut._fsync_dir(mnt)
        _write(mnt / "c", b"data", sync=True)  # its name is in no synced folder
        powerfs.control(ctl, "cut")
        assert sorted(p.name for p in mnt.iterdir()) == ["a", "b"]
        assert (mnt / "b").read_bytes() == b"data"


def test_pipacs_loses_no_acknowledged_instance_at_power_cuts() -> None:
    """Cuts during 4 parallel C-STORE associations, index checkpoints and commits."""
    totals = powercut.run(["pipacs"], trials=3, seconds=60, files_per_association=10,
                          seed=5, quiet=True)["pipacs"]
    assert totals.trials >= 2 and totals.acknowledged > 0, "\n".join([str(totals), *totals.notes])
    assert (totals.lost, totals.repairs) == (0, 0), totals.notes


def test_pipacs_makes_its_folders_and_file_names_durable() -> None:
    """Without a journal's ordering a name is durable only once its folder is fsynced: the
    storage and index folders, .incoming's staged files and the fan-out folders (before,
    every acknowledged instance was lost here)."""
    totals = powercut.run(["pipacs"], trials=1, seconds=40, files_per_association=10,
                          strict=True, seed=6, quiet=True)["pipacs"]
    assert totals.trials >= 1 and totals.acknowledged > 0, "\n".join([str(totals), *totals.notes])
    assert (totals.lost, totals.repairs) == (0, 0), totals.notes


@pytest.fixture
def pacs_on_powerfs(tmp_path: Path) -> Iterator[Any]:
    """A factory: pipacs on a fresh powerfs, and the control socket's path."""
    servers = []
    with powercut.mounted(tmp_path / "fs") as (mnt, ctl):

        def start(**config: object) -> tuple[Any, str]:
            data = mnt / "pacs"
            data.mkdir()
            powercut._fsync_dir(mnt)
            srv = powercut.Server("pipacs", data, tmp_path, **config)
            servers.append(srv)
            assert srv.start(), srv.log.read_text()
            return srv, ctl

        yield start
        for srv in servers:
            srv.kill()
            srv.wait()


def _store(srv: Any, *paths: Path, wait: bool = True) -> subprocess.Popen[bytes]:
    client = subprocess.Popen([need("storescu"), "-aec", powercut.AET, "127.0.0.1",
                               str(srv.dicom_port), *map(str, paths)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if wait:
        assert client.wait(120) == 0
        time.sleep(1.5)  # settled: the index made durable, the files moved into place
    return client


def _cut_at_fsync(srv: Any, ctl: str, paths: list[Path], n: int) -> None:
    """Send `paths`; cut the power right after the n-th fsync of a staged file (which commits
    the journal, with every unlink made before it), then restart pipacs."""
    powerfs.control(ctl, f"arm */.incoming/* {n} fsync")
    client = _store(srv, *paths, wait=False)
    deadline = time.monotonic() + 30
    while not powerfs.control(ctl, "status")["frozen"]:
        assert time.monotonic() < deadline, "no such fsync"
        time.sleep(0.01)
    srv.kill()
    powerfs.control(ctl, "cut")
    srv.wait()
    client.kill()
    client.wait()
    assert srv.start(), srv.log.read_text()


def test_deleting_then_a_power_cut_leaves_index_and_files_agreeing(
    pacs_on_powerfs: Any, small_data: list[Path]
) -> None:
    """A study is deleted, then a new file's fsync commits the journal (with the deleted
    files' unlinks) and the power goes. The index's delete must be durable before the
    unlinks: it was not, and the restarted pipacs listed 20 instances whose files were gone."""
    srv, ctl = pacs_on_powerfs()
    _store(srv, *small_data[:40])
    study = json.loads(srv.get("/studies"))[0]
    req = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}/studies/{study}",
                                 method="DELETE")
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
    _cut_at_fsync(srv, ctl, small_data[40:41], 1)
    assert len(json.loads(srv.get("/instances"))) in (20, 21)
    srv.stop()
    assert srv.disagreements() == []


def test_overwritten_instances_survive_a_power_cut(
    pacs_on_powerfs: Any, small_data: list[Path]
) -> None:
    """OverwriteInstances: the replaced files went before the commit replacing their rows
    was durable; after a cut the old rows named removed files, and the new files (staged)
    were dropped as already stored: acknowledged instances became unreadable."""
    srv, ctl = pacs_on_powerfs(OverwriteInstances=True)
    _store(srv, *small_data[:10])
    # sent again, each replacing the first, until the last one's fsync (commits made durable
    # by the settle thread every 0.5 s at most; a cut comes before that for the last ones)
    _cut_at_fsync(srv, ctl, small_data[:10], 10)
    for path in small_data[:10]:
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert not srv.unreadable(uid), (path, srv.unreadable(uid), srv.log.read_text())
    srv.stop()
    assert srv.disagreements() == []
