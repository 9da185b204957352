"""What a person would observe on a Pi where the daemon role runs pipacs (see ../converge.yml)."""

import os
import time
from pathlib import Path

import pytest
from pipacs_molecule import run_playbook
from pipacs_probe import container_ip, echoscu, http_get, http_json, sample_instance, storescu

NAME = "pipacs-daemon"
AET, DICOM_PORT, HTTP_PORT = "PACS_A", 104, 8042
ADMIN = ("admin", "daemon-test-pass")
# HTTPS with the certificate prepare.yml made (server_ssl_certificate), as the server role installs it.
CA = "/etc/pipacs/ssl/certificate.pem"
# A plain HTTP request to the HTTPS port: whatever comes back is no HTTP answer.
PLAIN_HTTP = (
    "import socket\n"
    f"s = socket.create_connection(('127.0.0.1', {HTTP_PORT}), timeout=10)\n"
    "s.sendall(b'GET /changes HTTP/1.0\\r\\n\\r\\n')\n"
    "try:\n    print(s.recv(100))\nexcept OSError as e:\n    print(repr(e))\n"
)


def main_pid(host) -> int:
    return int(host.check_output("systemctl show --property=MainPID --value pipacs"))


def wait_active(host, timeout=30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.run("pipacs-echo").rc == 0:
            return
        time.sleep(1)
    pytest.fail(host.check_output("journalctl -u pipacs --no-pager -n 30"))


def test_service_enabled_and_running_as_pipacs(host):
    service = host.service("pipacs")
    assert service.is_enabled
    assert service.is_running
    assert host.check_output("ps -o user= -p %s", str(main_pid(host))) == "pipacs"


def test_unit_is_valid_and_hardened(host):
    assert host.run("systemd-analyze verify /etc/systemd/system/pipacs.service").rc == 0
    show = dict(
        line.split("=", 1)
        for line in host.check_output(
            "systemctl show pipacs --property=ProtectSystem,ProtectHome,PrivateTmp,NoNewPrivileges,"
            "ReadWritePaths,Restart,User,Group,MemoryMax"
        ).splitlines()
    )
    assert show["ProtectSystem"] == "strict"
    assert show["ProtectHome"] == "yes"
    assert show["PrivateTmp"] == "yes"
    assert show["NoNewPrivileges"] == "yes"
    assert show["Restart"] == "always"
    assert (show["User"], show["Group"]) == ("pipacs", "pipacs")
    assert sorted(show["ReadWritePaths"].split()) == ["/srv/pacs/images", "/srv/pacs/index"]
    assert show["MemoryMax"] == str(300 * 1024 * 1024)
    status = host.file(f"/proc/{main_pid(host)}/status").content_string
    assert "NoNewPrivs:\t1" in status
    # Port 104 is below 1024: CAP_NET_BIND_SERVICE (bit 10) and nothing else.
    assert "CapBnd:\t0000000000000400" in status
    assert "CapEff:\t0000000000000400" in status


def test_pipacs_cannot_write_outside_its_folders(host):
    """The service's own view of the file systems: / read-only, its two folders writable."""
    mounts = {}
    for line in host.file(f"/proc/{main_pid(host)}/mountinfo").content_string.splitlines():
        fields = line.split()
        mounts[fields[4]] = fields[5].split(",")
    assert "ro" in mounts["/"], mounts["/"]
    assert "ro" in mounts["/home"]
    for folder in ("/srv/pacs/images", "/srv/pacs/index"):
        assert "rw" in mounts[folder], (folder, mounts.get(folder))


def test_http_answers_changes_with_authentication(host):
    assert http_json(host, HTTP_PORT, "/changes?last", *ADMIN, tls_ca=CA)["Done"] is True
    status, _ = http_get(host, HTTP_PORT, "/changes?last", tls_ca=CA)
    assert status == 401


def test_https_serves_the_supplied_certificate_and_no_plain_http(host):
    supplied = Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "tls" / "pi.crt"
    assert host.file(CA).content_string.strip() == supplied.read_text().strip()
    pem = host.file("/etc/pipacs/ssl/pipacs.pem")
    assert (pem.user, pem.mode) == ("pipacs", 0o600)
    plain = host.run("python3 -c %s", PLAIN_HTTP)
    assert "HTTP/1." not in plain.stdout, plain.stdout


def test_echo_and_store_from_the_controller(host, tmp_path):
    ip = container_ip(NAME)
    echo = echoscu(ip, DICOM_PORT, AET)
    assert echo.returncode == 0, echo.stderr
    instance = sample_instance(tmp_path / "one.dcm", patient_id="DAEMON-1")
    store = storescu(ip, DICOM_PORT, AET, tmp_path / "one.dcm")
    assert store.returncode == 0, store.stderr
    stats = http_json(host, HTTP_PORT, "/statistics", *ADMIN, tls_ca=CA)
    assert stats["CountInstances"] >= 1
    found = host.run("find /srv/pacs/images -type f -user pipacs ! -name '*.db*' | head -1")
    assert found.stdout.strip(), "the stored file belongs to pipacs"
    assert instance.PatientID == "DAEMON-1"


def test_index_is_written_by_pipacs(host):
    index = host.file("/srv/pacs/index/pipacs-index.db")
    assert index.exists
    assert (index.user, index.group) == ("pipacs", "pipacs")
    assert index.mode & 0o007 == 0, "UMask=0027: others cannot read the index"


def test_restarted_after_a_crash(host):
    before = main_pid(host)
    host.run("kill -9 %s", str(before))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pid = main_pid(host)
        if pid not in (0, before):
            break
        time.sleep(1)
    assert main_pid(host) not in (0, before)
    wait_active(host)


def test_sigterm_stops_cleanly(host):
    host.run_expect([0], "systemctl stop pipacs")
    assert host.run("systemctl is-failed pipacs").stdout.strip() == "inactive"
    host.run_expect([0], "systemctl start pipacs")
    wait_active(host)


def test_check_mode_reports_no_changes_and_keeps_pipacs_running(host):
    before = main_pid(host)
    run = run_playbook("converge.yml", "--check", "--diff")
    assert run.returncode == 0, run.output
    assert run.recap()["changed"] == 0, run.output
    run = run_playbook("converge.yml")
    assert run.returncode == 0, run.output
    assert run.recap()["changed"] == 0, run.output
    assert main_pid(host) == before, "no change, no restart"
