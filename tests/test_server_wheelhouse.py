"""The server role's controller side, on two local "Pis" of different userland architectures:
each architecture's wheelhouse is cached by its lock's hash, a failed download fails only the
Pis of that architecture (never the whole play), and a Pi without an install path is named.
No containers: the Pis are the controller itself (connection local, its Python 3.11), their
platform facts given."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCKS = ROOT / "server" / "locks"

PLAYBOOK = """
- name: The controller side of the server role
  hosts: pis
  gather_facts: true
  gather_subset: [min]
  tasks:
    - name: Load the role's OS variables
      ansible.builtin.import_role:
        name: server
        tasks_from: os_vars
    - name: Check the install path
      ansible.builtin.import_role:
        name: server
        tasks_from: preflight_release
    - name: Fill the wheelhouse cache
      ansible.builtin.import_role:
        name: server
        tasks_from: wheelhouse
    - name: Say which wheelhouse this Pi gets
      ansible.builtin.debug:
        msg: "WHEELHOUSE {{ inventory_hostname }} {{ __server_wheelhouse_cache }}"
"""


def pi(arch: str) -> dict:
    """A local 'Pi' whose platform facts are given (the platform role then skips its probe)."""
    return {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "__platform_done": True,
        "platform_arch": arch,
        "platform_os_vars_files": ["Debian.yml"],
        "platform_summary": f"pi-{arch} (Raspberry Pi test, {arch} userland)",
    }


def run(tmp_path: Path, archs: list[str], **extra) -> subprocess.CompletedProcess[str]:
    inventory = {"all": {"children": {"pis": {"hosts": {f"pi-{a}": pi(a) for a in archs}}}}}
    (tmp_path / "hosts.yml").write_text(json.dumps(inventory))
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    extra = {
        "server_source_dir": str(tmp_path / "source"),
        "server_cache_dir": str(tmp_path / "cache"),
        **extra,
    }
    # No index at all: PyPI, this machine's pip configuration and find-links are out of reach.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
        ANSIBLE_NOCOLOR="1",
    )
    cmd = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(tmp_path / "hosts.yml"),
        str(tmp_path / "play.yml"),
        "-e",
        json.dumps(extra),
    ]
    return subprocess.run(
        cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def warm(tmp_path: Path, arch: str) -> Path:
    """The cache folder of an architecture's lock, as a finished download leaves it."""
    lock = LOCKS / f"{arch}.txt"
    folder = tmp_path / "cache" / "wheels" / f"{arch}-{hashlib.sha256(lock.read_bytes()).hexdigest()[:12]}"
    folder.mkdir(parents=True)
    shutil.copy(lock, folder / "requirements.txt")
    return folder


@pytest.fixture
def source(tmp_path: Path) -> Path:
    shutil.copytree(LOCKS, tmp_path / "source" / "locks")
    return tmp_path / "source"


@pytest.fixture(autouse=True)
def _needs_ansible() -> None:
    if not (BIN / "ansible-playbook").exists():
        pytest.skip("ansible-playbook is not installed (pip install -r requirements.txt)")


def test_a_failed_download_fails_only_the_pis_of_that_architecture(tmp_path, source):
    amd64 = warm(tmp_path, "amd64")
    result = run(tmp_path, ["amd64", "arm64"])
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert f"WHEELHOUSE pi-amd64 {amd64}" in out, out
    assert "WHEELHOUSE pi-arm64" not in out, out
    assert "pi-arm64 (Raspberry Pi test, arm64 userland): the arm64 wheels" in out, out
    recap = {line.split()[0]: line for line in out.splitlines() if " : ok=" in line}
    assert "failed=0" in recap["pi-amd64"], recap
    assert "failed=1" in recap["pi-arm64"], recap


def test_a_warm_cache_needs_no_index(tmp_path, source):
    folders = [warm(tmp_path, "amd64"), warm(tmp_path, "armhf")]
    result = run(tmp_path, ["amd64", "armhf"])
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    for arch, folder in zip(["amd64", "armhf"], folders, strict=True):
        assert f"WHEELHOUSE pi-{arch} {folder}" in out, out


def test_a_changed_lock_gets_its_own_wheelhouse(tmp_path, source):
    old = warm(tmp_path, "amd64")
    with (source / "locks" / "amd64.txt").open("a") as lock:
        lock.write("# changed\n")
    result = run(tmp_path, ["amd64"])
    out = result.stdout + result.stderr
    assert result.returncode != 0, out  # the new lock's wheels cannot be downloaded here
    assert "the amd64 wheels" in out and str(old) not in out.split("pip said")[0], out


def test_a_pi_without_an_install_path_is_named_with_what_to_do(tmp_path, source):
    warm(tmp_path, "amd64")
    result = run(tmp_path, ["amd64", "armel"])
    out = result.stdout + result.stderr
    assert "pi-armel (Raspberry Pi test, armel userland): pipacs has no install path" in out, out
    assert "Raspberry Pi OS (64-bit, arm64)" in out, out
    recap = {line.split()[0]: line for line in out.splitlines() if " : ok=" in line}
    assert "failed=0" in recap["pi-amd64"], recap


def test_the_locks_match_pyproject():
    """After changing server/pyproject.toml's dependencies: `make lock`, and commit the locks."""
    check = subprocess.run(
        [sys.executable, str(LOCKS / "lock.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stderr


def test_the_armhf_lock_leaves_numpy_and_pillow_to_the_os():
    """32-bit Raspberry Pi OS has no numpy/Pillow wheels on PyPI: the armhf lock must hold
    only pure-Python wheels (the role's venv sees python3-numpy and python3-pil)."""
    lock = (LOCKS / "armhf.txt").read_text()
    names = {line.split("==")[0] for line in lock.splitlines() if "==" in line}
    assert names and not names & {"numpy", "pillow"}, names
    assert names < {line.split("==")[0] for line in (LOCKS / "amd64.txt").read_text().splitlines()}
    for arch in ("amd64", "arm64"):
        text = (LOCKS / f"{arch}.txt").read_text()
        assert "numpy==" in text and "pillow==" in text, arch
