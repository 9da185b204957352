"""`pipacs --reindex`: a lost or corrupt index rebuilt from the storage area."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from pipacs import config
from pipacs.context import ServerContext
from pipacs.index import IndexError_


def run(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    return subprocess.run(
        [sys.executable, "-m", "pipacs", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_corrupt_index_is_named_then_rebuilt(make_pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    p = make_pipacs(StorageCompression=True)
    p.store(*small_data)
    before = {k: v for k, v in p.get("/statistics").items() if k.startswith("Count")}
    ids_before = {c["ID"] for c in p.get("/changes?limit=1000")["Changes"]}
    p.stop()
    db = p.folder / "index" / "pipacs-index.db"
    db.write_bytes(b"\0" * 4096 + db.read_bytes()[4096:])  # clobber the header page
    for extra in ("pipacs-index.db-wal", "pipacs-index.db-shm"):
        (p.folder / "index" / extra).unlink(missing_ok=True)

    proc = run("configuration.json", cwd=p.folder)
    assert proc.returncode == 3
    assert "pipacs-index.db" in proc.stderr and "--reindex" in proc.stderr

    proc = run("--reindex", "configuration.json", cwd=p.folder)
    assert proc.returncode == 0, proc.stderr
    assert "indexed 80 instance(s)" in proc.stdout
    kept = list((p.folder / "index").glob("pipacs-index.db.broken-*"))
    assert kept, "the broken index is kept aside, not deleted"

    p.start()
    after = {k: v for k, v in p.get("/statistics").items() if k.startswith("Count")}
    assert after == before
    assert {c["ID"] for c in p.get("/changes?limit=1000")["Changes"]} == ids_before


def test_unreadable_and_duplicate_files_go_to_quarantine(tmp_path, small_data) -> None:  # type: ignore[no-untyped-def]
    settings, _ = config.build_settings(
        {"StorageDirectory": str(tmp_path / "st"), "IndexDirectory": str(tmp_path / "ix")}, tmp_path
    )
    ctx = ServerContext(settings)
    for f in small_data[:5]:
        ctx.store(f.read_bytes())
    ctx.stop()  # settles the staged files
    first = next(ctx.storage.files())
    (first.parent / "0bad0000-0000-4000-8000-000000000000").write_bytes(b"garbage")
    shutil.copy(first, first.parent / "0dup0000-0000-4000-8000-000000000000")
    from pipacs.reindex import reindex

    report = reindex(settings)
    assert report.indexed == 5 and report.duplicates == 1
    assert report.unreadable == ["0bad0000-0000-4000-8000-000000000000"]
    quarantined = sorted(p.name for p in (tmp_path / "st" / ".quarantine").iterdir())
    # the first copy met is indexed, the other one set aside; nothing is deleted
    assert quarantined[0] == "0bad0000-0000-4000-8000-000000000000"
    assert quarantined[1] in (first.name, "0dup0000-0000-4000-8000-000000000000")
    assert len(quarantined) == 2


def test_one_process_per_index(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings, _ = config.build_settings({"StorageDirectory": str(tmp_path / "st")}, tmp_path)
    ctx = ServerContext(settings)
    with pytest.raises(IndexError_, match="another pipacs process is using the index"):
        ServerContext(settings)
    ctx.stop()
    ServerContext(settings).stop()
