"""site.yml on one emulated arm64 classroom Pi (see ../molecule.yml): a reduced check that the
roles, and the offline wheelhouse, work on the Pi's CPU. The `site` scenario checks the rest."""

import hashlib
import json
import re
from pathlib import Path

from pipacs_probe import container_ip, echoscu, http_json, sample_instance, storescu

NAME = "pipacs-site-arm64"
AET = "PACS_ARM"
# From inventory/example: group_vars/pacs and its vault.
ADMIN = ("admin", "example-teacher-password")
HTTP_PORT, DICOM_PORT = 8042, 4242
LOCK = Path(__file__).resolve().parents[3] / "server" / "locks" / "arm64.txt"


def test_the_pi_runs_aarch64(host):
    assert host.check_output("uname -m") == "aarch64"
    assert host.check_output("dpkg --print-architecture") == "arm64"


def test_the_wheelhouse_is_built_for_aarch64(host):
    wheels = host.check_output("ls /opt/pipacs/wheelhouse").split()
    compiled = [w for w in wheels if w.endswith(".whl") and not w.endswith("-none-any.whl")]
    assert any(w.startswith("numpy-") for w in compiled), wheels
    assert any(w.startswith("pillow-") for w in compiled), wheels
    assert all(w.endswith("_aarch64.whl") for w in compiled), compiled
    # numpy imports in the release's venv: the right CPU's binary, offline.
    arch = host.check_output(
        "/opt/pipacs/current/bin/python -c %s",
        "import numpy, PIL.Image, platform; print(platform.machine())",
    )
    assert arch == "aarch64"
    # Chosen by the userland (dpkg) architecture: the arm64 lock.
    assert host.file("/opt/pipacs/wheelhouse/requirements.txt").content_string == LOCK.read_text()
    release = host.file("/opt/pipacs/current").linked_to.rsplit("/", 1)[1]
    assert release.endswith("-" + hashlib.sha256(LOCK.read_bytes()).hexdigest()[:12]), release


def test_base_then_server(host):
    assert host.check_output("hostname") == NAME
    assert host.service("pipacs").is_enabled
    assert host.service("pipacs").is_running
    text = host.file("/etc/pipacs/server.json").content_string
    cfg = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))
    assert (cfg["Name"], cfg["DicomAet"]) == ("Classroom ARM PACS", AET)


def test_http_and_echo_answer(host):
    assert http_json(host, HTTP_PORT, "/changes?last", *ADMIN)["Last"] >= 0
    echo = host.run("pipacs-echo 127.0.0.1 %s %s", str(DICOM_PORT), AET)
    assert echo.rc == 0, echo.stderr


def test_echo_and_store_from_the_controller(host, tmp_path):
    ip = container_ip(NAME)
    echo = echoscu(ip, DICOM_PORT, AET)
    assert echo.returncode == 0, echo.stderr
    before = http_json(host, HTTP_PORT, "/statistics", *ADMIN)["CountInstances"]
    sample_instance(tmp_path / "arm64.dcm", patient_id="SITE-ARM64")
    store = storescu(ip, DICOM_PORT, AET, tmp_path / "arm64.dcm")
    assert store.returncode == 0, store.stderr
    assert http_json(host, HTTP_PORT, "/statistics", *ADMIN)["CountInstances"] == before + 1
    assert http_json(host, HTTP_PORT, "/changes?last", *ADMIN)["Last"] > 0
