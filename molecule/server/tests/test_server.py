"""What a person would observe on a Pi converged by the server role (see ../converge.yml)."""

import json
import re

from pipacs_molecule import run_playbook


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
