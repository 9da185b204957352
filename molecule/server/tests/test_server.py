"""What a person would observe on a Pi converged by the server role (see ../converge.yml)."""

import hashlib
import json
import os
import re
import time
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


# ---- HTTPS (server_ssl_enabled, a certificate made on the controller) -------------------------
MADE = Path(os.environ.get("MOLECULE_INVENTORY_FILE", "/nonexistent")).parent / "pki"


def test_the_certificate_was_made_on_the_controller_and_installed(host):
    name = host.backend.get_hostname()
    made, key = MADE / f"{name}.crt", MADE / f"{name}.key"
    assert made.exists() and key.exists(), sorted(MADE.iterdir()) if MADE.exists() else MADE
    assert key.stat().st_mode & 0o077 == 0, oct(key.stat().st_mode)
    public = host.file("/etc/pipacs/ssl/certificate.pem")
    assert (public.user, public.group, public.mode) == ("root", "pipacs", 0o644)
    assert public.content_string.strip() == made.read_text().strip()
    pem = host.file("/etc/pipacs/ssl/pipacs.pem")
    assert (pem.user, pem.group, pem.mode) == ("pipacs", "pipacs", 0o600)
    assert pem.content_string.strip() == made.read_text().strip() + "\n" + key.read_text().strip()
    names = host.check_output("openssl x509 -in /etc/pipacs/ssl/certificate.pem -noout -ext subjectAltName")
    for wanted in ("DNS:localhost", "IP Address:127.0.0.1", f"DNS:{name}"):
        assert wanted in names, names
    cfg = config(host)
    assert (cfg["SslEnabled"], cfg["SslCertificate"]) == (True, "/etc/pipacs/ssl/pipacs.pem")


HTTPS_PROBE = """
import socket, ssl, sys, urllib.request, urllib.error
port = int(sys.argv[1])
ctx = ssl.create_default_context(cafile="/etc/pipacs/ssl/certificate.pem")
try:
    urllib.request.urlopen("https://127.0.0.1:%d/system" % port, context=ctx, timeout=10)
except urllib.error.HTTPError as e:
    print("https", e.code)
try:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /system HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n")
        answer = s.recv(100)
except OSError as e:
    answer = repr(e).encode()
print("http", answer[:12])
try:
    urllib.request.urlopen("https://127.0.0.1:%d/system" % port, context=ssl.create_default_context(), timeout=10)
except urllib.error.URLError as e:
    print("untrusted", type(e.reason).__name__)
"""


@pytest.fixture
def pipacs_running(host):
    """pipacs started by hand as its service user (the daemon role is not in this scenario)."""
    host.run("systemctl stop pipacs-https-probe; systemctl reset-failed pipacs-https-probe")
    host.check_output(
        "systemd-run --unit pipacs-https-probe --uid pipacs --gid pipacs /opt/pipacs/current/bin/pipacs /etc/pipacs"
    )
    try:
        for _ in range(60):
            if host.run("python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8080), 1)'").rc == 0:
                break
            time.sleep(0.5)
        yield
    finally:
        host.run("systemctl stop pipacs-https-probe")


def test_pipacs_answers_https_with_the_made_certificate_and_no_plain_http(host, pipacs_running):
    out = host.check_output("python3 -c %s 8080", HTTPS_PROBE)
    lines = out.splitlines()
    assert "https 401" in lines, out  # TLS accepted against certificate.pem; the account is missing
    http = [line for line in lines if line.startswith("http ")]
    assert http and "HTTP/1." not in http[0], out
    assert "untrusted SSLCertVerificationError" in lines, out


def test_check_diff_never_shows_a_secret():
    secrets = ["n3w-admin-secret", "n3w-teacher-secret", "n3w-peer-secret"]
    changed = {
        "server_admin_password": secrets[0],
        "server_users": {"teacher": secrets[1]},
        "server_peers": [{"name": "classroom-b", "url": "http://pi-b1.school.lan:8042/",
                          "username": "admin", "password": secrets[2]}],
    }
    run = run_playbook("converge.yml", "--check", "--diff", "--extra-vars", json.dumps(changed))
    assert run.returncode == 0, run.output
    assert run.recap()["changed"] >= 1, run.output  # the file would change: --diff had something to show
    shown = [s for s in secrets + ["s3cret", "teach-me", "peer-pass", "PRIVATE KEY"]
             if s in run.output]
    assert shown == [], run.output
