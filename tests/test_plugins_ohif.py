"""The plugins role's OHIF option, controller and Pi side, without containers: a fake npm
registry on loopback serves a small build shaped like @ohif/app, and the "Pi" is this machine
(connection local, every folder under tmp_path). What is checked: the controller fetches once
and packs a reproducible tarball, a warm cache needs no registry, the Pi gets a versioned
folder with a marker, plugins.json names it, a second run and `--check --diff` change nothing,
a new build replaces the old one, switching OHIF off removes its section and its files, and a
controller without build or registry fails before the Pi is touched (check mode fetches
nothing). The molecule plugins scenario opens the real OHIF on a simulated Pi."""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FETCH = ROOT / "roles" / "plugins" / "files" / "ohif_fetch.py"
CLOSED = "http://127.0.0.1:9"  # nothing listens there: a controller without network

PLAYBOOK = """
- name: The plugins role with OHIF on a local "Pi"
  hosts: pi
  gather_facts: false
  roles:
    - role: plugins
  handlers:
    - name: Count the restarts
      ansible.builtin.shell: echo restart >> {{ restarts }}
      changed_when: true
      listen: restart pipacs
"""


def npm_tarball(version: str) -> bytes:
    """An @ohif/app package: dist/ with a page, a hashed bundle, a source map."""
    files = {
        "package/package.json": json.dumps({"name": "@ohif/app", "version": version}),
        "package/dist/index.html": f"<!doctype html><html><head></head><body>OHIF {version}</body></html>",
        "package/dist/app.bundle.0123456789abcdef.js":
            '__webpack_require__.p = "/";' + "console.log('app');" * 200,
        "package/dist/app.bundle.0123456789abcdef.js.map": "{}",
        "package/dist/assets/logo.svg": "<svg/>",
    }
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


class Registry:
    """A fake npm registry: `versions` {version: tarball}, `tamper` serves wrong bytes."""

    def __init__(self) -> None:
        self.versions = {v: npm_tarball(v) for v in ("3.13.2", "3.13.3")}
        self.tamper = False
        self.requests: list[str] = []
        registry = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.requests.append(self.path)
                body = registry.answer(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str) -> bytes | None:
        meta = re.fullmatch(r"/@ohif%2fapp/(.+)", path)
        if meta and meta[1] in self.versions:
            digest = base64.b64encode(hashlib.sha512(self.versions[meta[1]]).digest()).decode()
            return json.dumps({"dist": {"integrity": f"sha512-{digest}",
                                        "tarball": f"{self.url}/app-{meta[1]}.tgz"}}).encode()
        tgz = re.fullmatch(r"/app-(.+)\.tgz", path)
        if tgz and tgz[1] in self.versions:
            return self.versions[tgz[1]] + (b"x" if self.tamper else b"")
        return None


@pytest.fixture
def registry() -> Iterator[Registry]:
    reg = Registry()
    yield reg
    reg.server.shutdown()


@pytest.fixture(autouse=True)
def _needs_ansible() -> None:
    if not (BIN / "ansible-playbook").exists():
        pytest.skip("ansible-playbook is not installed (pip install -r requirements.txt)")


class Pi:
    """This machine as a Pi: the role's folders under tmp_path, pipacs from the venv."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.root = tmp_path / "pi"
        self.cache = tmp_path / "cache"
        self.ohif = self.root / "srv" / "ohif"
        self.config = self.root / "etc" / "plugins.json"
        self.restarts = tmp_path / "restarts"
        current = self.root / "opt" / "current" / "bin"
        current.mkdir(parents=True)
        (current / "pipacs").symlink_to(BIN / "pipacs")
        inventory = {"all": {"hosts": {"pi": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}
        (tmp_path / "hosts.yml").write_text(json.dumps(inventory))
        (tmp_path / "play.yml").write_text(PLAYBOOK)

    def run(self, registry: str, *args: str, **variables: object) -> subprocess.CompletedProcess[str]:
        extra = {
            "restarts": str(self.restarts),
            "base_pipacs_group": "root",
            "server_config_dir": str(self.config.parent),
            "server_install_dir": str(self.root / "opt"),
            "plugins_web_dir": str(self.root / "srv" / "web"),
            "plugins_worklists_dir": str(self.root / "srv" / "worklists"),
            "plugins_worklists_samples": False,
            "plugins_ohif_enabled": True,
            "plugins_ohif_cache_dir": str(self.cache),
            "plugins_ohif_dir": str(self.ohif),
            "plugins_ohif_registry": registry,
            **variables,
        }
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
                   PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        return subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(self.tmp / "hosts.yml"),
             str(self.tmp / "play.yml"), "-e", json.dumps(extra), *args],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)

    def plugins_json(self) -> dict:
        text = self.config.read_text()
        return json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))

    def restart_count(self) -> int:
        return len(self.restarts.read_text().split()) if self.restarts.exists() else 0


def recap(run: subprocess.CompletedProcess[str]) -> dict[str, int]:
    line = next(line for line in run.stdout.splitlines() if line.startswith("pi ") and " : ok=" in line)
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)}


def test_fetch_packs_a_reproducible_tarball_and_refuses_what_it_cannot_trust(tmp_path, registry):
    cache = tmp_path / "cache"
    fetch = [sys.executable, str(FETCH), str(cache), "--version", "3.13.2", "--pack"]
    done = subprocess.run([*fetch, "--registry", registry.url + "/"], capture_output=True,
                          text=True, check=True)
    tarball = cache / "3.13.2.tar.gz"
    assert done.stdout.strip() == str(tarball)
    first = tarball.read_bytes()
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and "index.html" in names, names
    assert not [n for n in names if n.endswith(".map") or n == ".complete"], names
    assert "app.bundle.0123456789abcdef.js.gz" in names  # the Pi never compresses
    mtime = int((cache / "3.13.2" / ".complete").stat().st_mtime)
    assert {(m.uid, m.gid, m.uname, m.mtime) for m in members} == {(0, 0, "", mtime)}
    # Packed again from the same build: the same bytes, and no registry needed.
    tarball.unlink()
    again = subprocess.run([*fetch, "--registry", CLOSED], capture_output=True, text=True, check=True)
    assert again.stdout.strip() == str(tarball) and tarball.read_bytes() == first
    assert len(registry.requests) == 2  # the metadata and the tarball, once

    # No build and no registry: one line that says so, no traceback, nothing left behind.
    empty = tmp_path / "empty"
    down = subprocess.run([sys.executable, str(FETCH), str(empty), "--registry", CLOSED, "--pack"],
                          capture_output=True, text=True, check=False)
    assert down.returncode != 0 and "Traceback" not in down.stderr, down.stderr
    assert f"could not be fetched from {CLOSED}" in down.stderr, down.stderr
    assert not empty.exists()
    registry.tamper = True
    bad = subprocess.run([sys.executable, str(FETCH), str(empty), "--registry", registry.url],
                         capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "does not match the registry's sha512" in bad.stderr
    assert not (empty / "3.13.2").exists()


def test_ohif_on_a_pi_once_then_nothing_to_do(tmp_path, registry):
    pi = Pi(tmp_path)
    first = pi.run(registry.url)
    assert first.returncode == 0, first.stdout + first.stderr
    sha = hashlib.sha256((pi.cache / "3.13.2.tar.gz").read_bytes()).hexdigest()
    build = pi.ohif / f"3.13.2-{sha[:12]}"
    assert "OHIF 3.13.2" in (build / "index.html").read_text()
    assert (build / "app.bundle.0123456789abcdef.js.gz").is_file()
    assert (build / ".pipacs-ohif").read_text() == f"@ohif/app 3.13.2\nsha256 {sha}\n"
    assert oct(build.stat().st_mode & 0o777) == "0o750"
    assert oct((build / "index.html").stat().st_mode & 0o777) == "0o640"
    cfg = pi.plugins_json()
    assert cfg["OHIF"] == {"Enable": True, "Location": str(build), "RouterBasename": "/ohif"}
    assert "libOrthancOHIF.so" in cfg["Plugins"]
    assert pi.restart_count() == 1

    # Again, with the registry out of reach: the cache is enough, and nothing changes.
    second = pi.run(CLOSED)
    assert second.returncode == 0, second.stdout + second.stderr
    assert recap(second)["changed"] == 0, second.stdout
    check = pi.run(CLOSED, "--check", "--diff")
    assert check.returncode == 0 and recap(check)["changed"] == 0, check.stdout
    assert pi.restart_count() == 1 and len(registry.requests) == 2

    # A new version: its own folder, named in plugins.json, the old one gone, one restart.
    third = pi.run(registry.url, plugins_ohif_version="3.13.3", plugins_ohif_basename="/viewers/ohif/")
    assert third.returncode == 0, third.stdout + third.stderr
    [new] = [p.name for p in pi.ohif.iterdir()]
    assert new.startswith("3.13.3-") and pi.plugins_json()["OHIF"] == {
        "Enable": True, "Location": str(pi.ohif / new), "RouterBasename": "/viewers/ohif"}
    assert pi.restart_count() == 2

    # Switched off: no OHIF section, no build on the Pi (the controller keeps its cache).
    off = pi.run(CLOSED, plugins_ohif_enabled=False)
    assert off.returncode == 0, off.stdout + off.stderr
    cfg = pi.plugins_json()
    assert "OHIF" not in cfg and "libOrthancOHIF.so" not in cfg["Plugins"]
    assert not pi.ohif.exists() and pi.restart_count() == 3
    assert (pi.cache / "3.13.3.tar.gz").is_file()


def test_no_build_and_no_registry_fails_before_the_pi_is_touched(tmp_path, registry):
    pi = Pi(tmp_path)
    # Check mode fetches nothing and says what a run would do.
    check = pi.run(registry.url, "--check", "--diff")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "A run would fetch @ohif/app 3.13.2 from " + registry.url in check.stdout, check.stdout
    assert registry.requests == [] and not pi.cache.exists()
    assert not pi.config.exists() and not pi.ohif.exists()

    run = pi.run(CLOSED)
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "No OHIF 3.13.2 for pi:" in out and f"could not be fetched from {CLOSED}" in out, out
    assert "Nothing was changed on the Pi by this role." in out
    assert not (pi.root / "srv").exists() and not pi.config.exists()
