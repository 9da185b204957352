"""What a person would observe on a Pi converged by the server role (see ../converge.yml)."""

import hashlib
import json
import os
import re
from pathlib import Path

import pytest
from pipacs_molecule import run_playbook

# The lock the role used: server/locks/<dpkg arch>.txt in prepare.yml's copy of server/.
LOCKS = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "server-src" / "locks"


@pytest.fixture
def pypi_closed(monkeypatch):
    """The controller without PyPI: an index on a closed port, no index at all, no pip config."""
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)


def config(host) -> dict:
    text = host.file("/etc/pipacs/server.json").content_string
    return json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))


def test_current_release_is_a_complete_venv(host):
    current = host.file("/opt/pipacs/current")
    assert current.is_symlink
    release = current.linked_to
    assert re.fullmatch(r"/opt/pipacs/releases/\d+\.\d+\.\d+\S*-[0-9a-f]{12}", release), release
    assert host.file(f"{release}/.pipacs-release").content_string.strip() == release.rsplit("/", 1)[1]
    version = host.check_output("/opt/pipacs/current/bin/pipacs --version")
    assert release.rsplit("/", 1)[1].startswith(version.split()[1] + "-")
    code = host.file(release)
    assert (code.user, code.group, code.mode) == ("root", "root", 0o755), "pipacs cannot change its code"


def test_installed_offline_from_the_pushed_wheelhouse(host):
    wheels = host.file("/opt/pipacs/wheelhouse").listdir()
    assert any(w.startswith("pipacs-") for w in wheels), wheels
    assert any(w.startswith("pynetdicom-") for w in wheels), wheels
    assert host.package("python3-venv").is_installed


def test_the_release_runs_the_locked_versions(host):
    lock = LOCKS / (host.check_output("dpkg --print-architecture") + ".txt")
    assert host.file("/opt/pipacs/wheelhouse/requirements.txt").content_string == lock.read_text()
    release = host.file("/opt/pipacs/current").linked_to.rsplit("/", 1)[1]
    assert release.endswith("-" + hashlib.sha256(lock.read_bytes()).hexdigest()[:12]), release
    pinned = dict(re.findall(r"^([a-z0-9-]+)==(\S+) ", lock.read_text(), flags=re.MULTILINE))
    frozen = host.check_output("/opt/pipacs/current/bin/pip freeze --disable-pip-version-check")
    installed = dict(line.lower().split("==") for line in frozen.splitlines() if "==" in line)
    assert {name: installed.get(name) for name in pinned} == pinned


def test_a_warm_cache_needs_no_pypi(pypi_closed):
    run = run_playbook("converge.yml")
    assert run.returncode == 0, run.output
    assert run.recap()["changed"] == 0, run.output


def test_the_configure_tag_never_touches_the_wheelhouse(pypi_closed):
    run = run_playbook("converge.yml", "--tags", "server_configure")
    assert run.returncode == 0, run.output
    assert run.recap()["changed"] == 0, run.output
    assert "locked wheels" not in run.output, run.output
    assert "Write the server configuration" in run.output, run.output


def test_configuration_has_the_inventory_values(host):
    cfg = config(host)
    assert cfg["Name"] == "Classroom A"
    assert cfg["DicomAet"] == "PACS_A"
    assert (cfg["DicomPort"], cfg["HttpPort"]) == (11112, 8080)
    assert cfg["StorageDirectory"] == "/srv/pacs/images"
    assert cfg["IndexDirectory"] == "/srv/pacs/index"
    assert cfg["RegisteredUsers"] == {"admin": 's3cret "quoted" pass', "teacher": "teach-me"}
    assert cfg["DicomModalities"]["ct-sim"]["AET"] == "CTSIM"
    assert cfg["DicomModalities"]["ct-sim"]["AllowStore"] is False
    assert cfg["OrthancPeers"]["classroom-b"]["Url"] == "http://pi-b1.school.lan:8042/"
    assert (cfg["MaximumStorageSize"], cfg["MaximumPatientCount"]) == (20000, 500)
    assert cfg["StorageCompression"] is True
    assert "Plugins" not in cfg, "plugin keys belong to the plugins role"


def test_configuration_is_private_and_accepted_by_pipacs(host):
    folder = host.file("/etc/pipacs")
    assert (folder.user, folder.group, folder.mode) == ("root", "pipacs", 0o750)
    cfg = host.file("/etc/pipacs/server.json")
    assert (cfg.user, cfg.group, cfg.mode) == ("root", "pipacs", 0o640)
    assert host.run("su -s /bin/sh -c 'cat /etc/pipacs/server.json' nobody").rc != 0
    check = host.run("su -s /bin/sh -c '/opt/pipacs/current/bin/pipacs --check /etc/pipacs' pipacs")
    assert check.rc == 0, check.stderr


def test_check_mode_reports_no_changes():
    run = run_playbook("converge.yml", "--check", "--diff")
    assert run.returncode == 0, run.output
    assert run.recap()["changed"] == 0, run.output


def test_a_configuration_pipacs_refuses_is_not_installed(host):
    before = host.file("/etc/pipacs/server.json").sha256sum
    run = run_playbook("converge.yml", "--extra-vars", '{"server_extra_config": {"HttpThreadsCount": "many"}}')
    assert run.returncode != 0, run.output
    assert "HttpThreadsCount" in run.output, run.output
    assert host.file("/etc/pipacs/server.json").sha256sum == before
