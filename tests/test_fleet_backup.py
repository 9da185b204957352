"""The backup job's sealing step (roles/fleet/library/fleet_backup_seal.py) on folders laid
out as rsync --link-dest leaves them: files shared with the previous backup are hard links."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

from fleet_modules import load

seal = load("fleet_backup_seal")


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def sums(folder: Path) -> dict[str, str]:
    return {line.split("  ", 1)[1]: line.split("  ", 1)[0] for line in (folder / "SHA256SUMS").read_text().splitlines()}


def test_first_backup_sums_every_file_and_moves_into_place(tmp_path: Path) -> None:
    partial = tree(tmp_path / "pi-1-20261205T080000Z.partial", {
        "storage/ab/cd/one": b"1" * 10, "storage/.incoming/x": b"2", "index/pipacs-index.db": b"db",
        "extra/fleet-content.json": b"{}"})
    dest = tmp_path / "pi-1-20261205T080000Z"
    out = seal.seal(str(partial), str(dest), "", {"Host": "pi-1", "CountInstances": 1})
    assert not partial.exists() and dest.is_dir()
    assert (out["files"], out["bytes"], out["linked"], out["new_bytes"]) == (4, 15, 0, 15)
    assert sums(dest) == {rel: hashlib.sha256((dest / rel).read_bytes()).hexdigest()
                          for rel in ("storage/ab/cd/one", "storage/.incoming/x", "index/pipacs-index.db",
                                      "extra/fleet-content.json")}
    # The format restore.yml checks with sha256sum --check.
    check = subprocess.run(["sha256sum", "--check", "--quiet", "--strict", "SHA256SUMS"], cwd=dest, check=False)
    assert check.returncode == 0
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest == {"Host": "pi-1", "CountInstances": 1, "Files": 4, "DataMB": 1, "NewBytes": 15, "Previous": ""}


def test_files_linked_to_the_previous_backup_reuse_its_sums(tmp_path: Path) -> None:
    first = tmp_path / "pi-1-20261205T080000Z"
    seal.seal(str(tree(tmp_path / "p1", {"storage/ab/cd/old": b"old" * 100, "index/pipacs-index.db": b"db1"})),
              str(first), "", {})
    # What rsync --link-dest leaves: the unchanged file a hard link, the rest new files.
    second_partial = tree(tmp_path / "p2", {"storage/ab/cd/new": b"new", "index/pipacs-index.db": b"db2"})
    os.link(first / "storage/ab/cd/old", second_partial / "storage/ab/cd/old")
    # A sum only the previous SHA256SUMS holds shows it was reused, not computed again.
    lines = (first / "SHA256SUMS").read_text().replace(
        hashlib.sha256(b"old" * 100).hexdigest(), "0" * 64)
    (first / "SHA256SUMS").write_text(lines)
    second = tmp_path / "pi-1-20261206T080000Z"
    out = seal.seal(str(second_partial), str(second), str(first), {})
    assert (out["files"], out["linked"], out["new_bytes"]) == (3, 1, 6)
    got = sums(second)
    assert got["storage/ab/cd/old"] == "0" * 64
    assert got["storage/ab/cd/new"] == hashlib.sha256(b"new").hexdigest()
    assert json.loads((second / "manifest.json").read_text())["Previous"] == first.name


def test_a_file_with_the_same_name_but_not_linked_is_read_again(tmp_path: Path) -> None:
    first = tmp_path / "b1"
    seal.seal(str(tree(tmp_path / "p1", {"storage/ab/cd/f": b"before"})), str(first), "", {})
    second = tmp_path / "b2"
    out = seal.seal(str(tree(tmp_path / "p2", {"storage/ab/cd/f": b"after!"})), str(second), str(first), {})
    assert out["linked"] == 0
    assert sums(second)["storage/ab/cd/f"] == hashlib.sha256(b"after!").hexdigest()
