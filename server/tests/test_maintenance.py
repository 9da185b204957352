"""pipacs --schema and --backup-index: what the fleet playbooks use around an upgrade."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

from conftest import PIPACS, PipacsProcess
from pipacs.index import INDEX_FILE, SCHEMA_VERSION, Index


def run_cli(p: PipacsProcess, *args: str) -> subprocess.CompletedProcess[str]:
    config = p.write_config()
    return subprocess.run(
        [*PIPACS, *args, str(config)],
        cwd=p.folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_schema_of_a_missing_current_and_old_index(make_pipacs: Any) -> None:
    p = make_pipacs(start=False)
    info = json.loads(run_cli(p, "--schema").stdout)
    assert info["Release"] == SCHEMA_VERSION
    assert info["Index"] is None and info["MigrationNeeded"] is False

    Index(p.folder / "index", schema_version=1).close()  # made by an older pipacs
    info = json.loads(run_cli(p, "--schema").stdout)
    assert (info["Index"], info["MigrationNeeded"], info["TooNew"]) == (1, True, False)
    assert info["Path"] == str(p.folder / "index" / INDEX_FILE)
    # Asking migrated nothing: the index is still at version 1.
    assert json.loads(run_cli(p, "--schema").stdout)["Index"] == 1


def test_schema_names_an_unreadable_index(make_pipacs: Any) -> None:
    p = make_pipacs(start=False)
    (p.folder / "index").mkdir()
    (p.folder / "index" / INDEX_FILE).write_bytes(b"this is not a database" * 100)
    run = run_cli(p, "--schema")
    assert run.returncode == 3
    assert INDEX_FILE in run.stderr and "cannot be read" in run.stderr


def test_backup_while_storing_is_a_whole_readable_index(
    make_pipacs: Any, small_data: list[Path], tmp_path: Path
) -> None:
    p = make_pipacs()
    p.store(*small_data[:20])
    # Copies taken while 60 more instances arrive: each is consistent (passes SQLite's check
    # and has as many instances as instance rows with their attachment).
    storing = threading.Thread(target=p.store, args=small_data[20:])
    storing.start()
    copies = []
    for n in range(3):
        dest = tmp_path / "backups" / f"index-{n}.db"
        run = run_cli(p, "--backup-index", str(dest))
        assert run.returncode == 0, run.stderr
        copies.append((dest, json.loads(run.stdout)))
    storing.join()
    for dest, info in copies:
        assert info["SchemaVersion"] == SCHEMA_VERSION and info["Size"] == dest.stat().st_size
        db = sqlite3.connect(dest)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = db.execute("SELECT count(*) FROM resources WHERE level=3").fetchone()[0]
        with_files = db.execute(
            "SELECT count(*) FROM resources r JOIN attachments a ON a.resource=r.id "
            "WHERE r.level=3 AND a.type=1"
        ).fetchone()[0]
        assert 20 <= rows == with_files == info["CountInstances"] <= 80
        db.close()
    assert not list((tmp_path / "backups").glob(".*partial"))
    # The running server was not disturbed, and a copy restores into a working server.
    assert p.get("/statistics")["CountInstances"] == 80
    p.stop()
    last_dest, last_info = copies[-1]
    (p.folder / "index" / INDEX_FILE).unlink()
    for extra in ("-wal", "-shm"):
        (p.folder / "index" / (INDEX_FILE + extra)).unlink(missing_ok=True)
    (p.folder / "index" / INDEX_FILE).write_bytes(last_dest.read_bytes())
    p.start()
    assert p.get("/statistics")["CountInstances"] == last_info["CountInstances"]


def test_backup_without_an_index_says_so(make_pipacs: Any, tmp_path: Path) -> None:
    p = make_pipacs(start=False)
    run = run_cli(p, "--backup-index", str(tmp_path / "copy.db"))
    assert run.returncode == 3
    assert "no index" in run.stderr
    assert not (tmp_path / "copy.db").exists()


def test_root_leaves_the_index_files_to_their_owner(make_pipacs: Any, tmp_path: Path) -> None:
    """Ansible runs these as root; the service runs as its own user and must still be able to
    open the -wal and -shm files afterwards."""
    import os

    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root to own files as another user")
    p = make_pipacs(start=False)
    Index(p.folder / "index").close()
    nobody = 65534
    for path in (p.folder / "index").iterdir():
        os.chown(path, nobody, nobody)
    assert run_cli(p, "--schema").returncode == 0
    assert run_cli(p, "--backup-index", str(tmp_path / "copy.db")).returncode == 0
    for path in (p.folder / "index").glob(INDEX_FILE + "*"):
        assert (path.stat().st_uid, path.stat().st_gid) == (nobody, nobody), path.name
