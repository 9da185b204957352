"""Power cuts, not just SIGKILL: pipacs on powerfs (bench/powerfs.py), a FUSE file system that
forgets at a "cut" every write not yet fsynced. A few trials of bench/powercut.py; the many
trials, and Orthanc beside pipacs, are `python bench/powercut.py` (bench/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

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
    assert totals.trials >= 2 and totals.acknowledged > 0, totals
    assert (totals.lost, totals.repairs) == (0, 0), totals.notes


def test_pipacs_makes_its_folders_and_file_names_durable() -> None:
    """Without a journal's ordering a name is durable only once its folder is fsynced: the
    storage and index folders, .incoming's staged files and the fan-out folders (before,
    every acknowledged instance was lost here)."""
    totals = powercut.run(["pipacs"], trials=2, seconds=40, files_per_association=10,
                          strict=True, seed=6, quiet=True)["pipacs"]
    assert totals.trials >= 1 and totals.acknowledged > 0, totals
    assert (totals.lost, totals.repairs) == (0, 0), totals.notes


def test_deleting_then_a_power_cut_leaves_index_and_files_agreeing(
    tmp_path: Path, small_data: list[Path]
) -> None:
    """A study is deleted, then a new file's fsync commits the journal (with the deleted
    files' unlinks) and the power goes. The index's delete must be durable before the
    unlinks: it was not, and the restarted pipacs listed instances whose files were gone."""
    with powercut.mounted(tmp_path / "fs") as (mnt, ctl):
        data = mnt / "pacs"
        data.mkdir()
        powercut._fsync_dir(mnt)
        srv = powercut.Server("pipacs", data, tmp_path)
        store = ["storescu", "-aec", powercut.AET, "127.0.0.1", str(srv.dicom_port)]
        assert srv.start()
        try:
            subprocess.run([*store, *map(str, small_data[:40])], check=True, timeout=120)
            time.sleep(1.5)  # settled: the index made durable, the files moved into place
            study = json.loads(srv.get("/studies"))[0]
            req = urllib.request.Request(f"http://127.0.0.1:{srv.http_port}/studies/{study}",
                                         method="DELETE")
            with urllib.request.urlopen(req, timeout=30) as r:
                assert r.status == 200
            powerfs.control(ctl, "arm */.incoming/* 1 fsync")
            client = subprocess.Popen([*store, str(small_data[40])], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 30
            while not powerfs.control(ctl, "status")["frozen"]:
                assert time.monotonic() < deadline, "the new file was never fsynced"
                time.sleep(0.01)
            srv.kill()
            powerfs.control(ctl, "cut")
            srv.wait()
            client.kill()
            client.wait()
            assert srv.start(), srv.log.read_text()
            assert len(json.loads(srv.get("/instances"))) in (20, 40, 41, 21)
        finally:
            srv.stop()
        assert srv.disagreements() == []
