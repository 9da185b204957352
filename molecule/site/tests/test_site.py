"""What staff would observe after site.yml on two classroom PACS Pis (see ../molecule.yml)."""

import json
import re
import subprocess
import time

from pipacs_molecule import run_playbook
from pipacs_probe import container_ip, echoscu, http_json, sample_instance, storescu

# From inventory/example: group_vars/pacs (and the vault) plus ../host_vars.
ADMIN = ("admin", "example-teacher-password")
HTTP_PORT, DICOM_PORT = 8042, 4242


def name_of(host) -> str:
    return host.backend.name


def aet_of(host) -> str:
    return "PACS_" + name_of(host)[-2].upper()


def config(host, name: str) -> dict:
    text = host.file(f"/etc/pipacs/{name}").content_string
    return json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))


def test_base_then_server(host):
    assert host.check_output("hostname") == name_of(host)
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Europe/London"
    assert host.service("pipacs").is_enabled
    assert host.service("pipacs").is_running


def test_configuration_from_the_inventory_and_vault(host):
    cfg = config(host, "server.json")
    letter = name_of(host)[-2].upper()
    assert cfg["Name"] == f"Classroom {letter} PACS"
    assert cfg["DicomAet"] == aet_of(host)
    assert cfg["RegisteredUsers"] == {"admin": "example-teacher-password"}
    assert (cfg["MaximumStorageSize"], cfg["MaximumPatientCount"]) == (20000, 500)
    assert cfg["DicomAlwaysAllowFind"] is True
    other = next(iter(cfg["DicomModalities"].values()))
    assert other["Host"] != name_of(host) and other["Host"].startswith("pipacs-site-")
    assert "libOrthancDicomWeb.so" in config(host, "plugins.json")["Plugins"]
    assert host.check_output("systemctl show --property=MemoryMax --value pipacs") == str(400 * 1024 * 1024)


def test_the_other_classroom_resolves_and_answers(host):
    other = "pipacs-site-b1" if name_of(host).endswith("a1") else "pipacs-site-a1"
    other_aet = "PACS_" + other[-2].upper()
    echo = host.run("pipacs-echo %s %s %s", other, str(DICOM_PORT), other_aet)
    assert echo.rc == 0, echo.stderr


def test_echo_store_and_count_from_the_controller(host, tmp_path):
    ip = container_ip(name_of(host))
    echo = echoscu(ip, DICOM_PORT, aet_of(host))
    assert echo.returncode == 0, echo.stderr
    before = http_json_remote(host, "/statistics")["CountInstances"]
    sample_instance(tmp_path / "site.dcm", patient_id=f"SITE-{name_of(host)}")
    store = storescu(ip, DICOM_PORT, aet_of(host), tmp_path / "site.dcm")
    assert store.returncode == 0, store.stderr
    assert http_json_remote(host, "/statistics")["CountInstances"] == before + 1
    assert http_json(host, HTTP_PORT, "/changes?last", *ADMIN)["Last"] > 0


def http_json_remote(host, path: str) -> dict:
    """The REST API from the controller, as a student's laptop would use it (RemoteAccessAllowed)."""
    import base64
    import urllib.request

    req = urllib.request.Request(f"http://{container_ip(name_of(host))}:{HTTP_PORT}{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode())
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.loads(answer.read())


def test_check_mode_reports_no_changes(host):
    # Before the reboot test: a container's runtime rewrites its hostname and /etc/hosts at
    # every start (a Pi does not), which a check run would then rightly report.
    if not name_of(host).endswith("a1"):
        return  # the run covers both hosts
    run = run_playbook("converge.yml", "--check", "--diff")
    assert run.returncode == 0, run.output
    assert run.recap()["changed"] == 0, run.output


def test_pipacs_is_back_after_a_reboot(host):
    if not name_of(host).endswith("a1"):
        return  # one reboot is enough
    subprocess.run(["podman", "restart", "--time", "20", name_of(host)], check=True, timeout=120)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if host.run("pipacs-echo").rc == 0:
            break
        time.sleep(2)
    assert host.check_output("systemctl is-active pipacs") == "active"
    assert http_json_remote(host, "/statistics")["CountInstances"] >= 1, "the stored study survived"
