"""What a person would observe on a Pi converged by the plugins role (see ../converge.yml)."""

import json
import re
import sys
from pathlib import Path

import pytest
from pipacs_molecule import run_playbook
from pipacs_probe import container_ip, echoscu, http_get, http_request

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "server" / "tests"))
from chromium import Chromium, link_statuses  # noqa: E402  (the server tests' browser driver)

HTTP_PORT = 8042
ADMIN = ("admin", "daemon-test-pass")
TEACHER = ("smith", "teacher-test-pass")


def plugins_config(host) -> dict:
    text = host.file("/etc/pipacs/plugins.json").content_string
    return json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))


def test_plugins_switched_on_and_off(host):
    cfg = plugins_config(host)
    assert "libOrthancDicomWeb.so" in cfg["Plugins"]
    assert "libModalityWorklists.so" in cfg["Plugins"]
    assert "libServeFolders.so" in cfg["Plugins"]
    assert "libOrthancPython.so" in cfg["Plugins"]
    assert "libOrthancWebViewer.so" not in cfg["Plugins"], "plugins_web_viewer_enabled: false"
    assert cfg["DicomWeb"] == {"Enable": True, "Root": "/dicomweb/"}
    assert cfg["WebViewer"] == {"Enable": False}
    assert cfg["Worklists"] == {"Enable": True, "Database": "/srv/pipacs/worklists"}
    assert cfg["ServeFolders"] == {"/teaching": "/srv/pipacs/web/teaching"}  # pipacs' page at /
    assert cfg["PythonScripts"] == ["/etc/pipacs/hooks/count_hook.py"]


def test_merged_configuration_is_accepted(host):
    check = host.run("/opt/pipacs/current/bin/pipacs --check /etc/pipacs")
    assert check.rc == 0, check.stderr
    plugins = host.file("/etc/pipacs/plugins.json")
    assert (plugins.user, plugins.group, plugins.mode) == ("root", "pipacs", 0o640)


def test_worklist_samples_deployed(host):
    for name in ("ct-chest.wl", "cr-hand.wl"):
        wl = host.file(f"/srv/pipacs/worklists/{name}")
        assert (wl.user, wl.group, wl.mode) == ("root", "pipacs", 0o640)
        assert wl.size > 200


def test_a_worklist_authored_over_rest_is_written_and_served(host):
    # The folder is group-writable and in the unit's ReadWritePaths (ProtectSystem=strict).
    folder = host.file("/srv/pipacs/worklists")
    assert (folder.user, folder.group, folder.mode) == ("root", "pipacs", 0o770)
    tags = {"PatientID": "WL-REST-1", "PatientName": "Rest^Author", "AccessionNumber": "A-REST-1",
            "ScheduledProcedureStepSequence": [{"Modality": "CT", "ScheduledStationAETitle": "CTSIM"}]}
    status, body = http_request(host, HTTP_PORT, "POST", "/worklists/create", json.dumps({"Tags": tags}), *TEACHER)
    assert status == 200, body
    wid = json.loads(body)["ID"]
    wl = host.file(f"/srv/pipacs/worklists/{wid}.wl")
    assert wl.exists and (wl.user, wl.group) == ("pipacs", "pipacs")
    status, body = http_get(host, HTTP_PORT, f"/worklists/{wid}", *ADMIN)
    assert status == 200 and "WL-REST-1" in body, body
    status, body = http_request(host, HTTP_PORT, "DELETE", f"/worklists/{wid}", "", *ADMIN)
    assert status == 200, body
    assert not host.file(f"/srv/pipacs/worklists/{wid}.wl").exists


def test_welcome_page_and_teaching_content(host):
    status, page = http_get(host, HTTP_PORT, "/")  # no password: a student's tablet
    assert status == 200 and "Classroom A" in page and "PACS_A" in page and "4242" in page
    assert 'href="dicomweb/studies"' in page and 'href="teaching/"' in page
    assert 'href="viewer/"' not in page, "no viewer link when the viewer is off"
    assert not host.file("/srv/pipacs/web/welcome").exists, "one welcome page: pipacs' own"
    teaching = host.file("/srv/pipacs/web/teaching/index.html")
    assert teaching.contains("Anatomy 101")
    assert (teaching.user, teaching.group, teaching.mode) == ("root", "pipacs", 0o640)
    assert host.run("su -s /bin/sh -c 'cat /srv/pipacs/web/teaching/index.html' pipacs").rc == 0
    assert host.run("su -s /bin/sh -c 'cat /srv/pipacs/web/teaching/index.html' nobody").rc != 0


def test_every_welcome_link_opens_in_chromium(tmp_path):
    """What a student's tablet does after the captive portal: open the welcome page from the
    Wi-Fi side (the container's address, no password) and tap every link; none may be a 4xx."""
    browser = Chromium(tmp_path / "profile")
    try:
        statuses = link_statuses(browser, f"http://{container_ip('pipacs-plugins')}:{HTTP_PORT}/")
    finally:
        browser.close()
    paths = {re.sub(r"^http://[^/]+", "", link) for link in statuses}
    assert {"/dicomweb/studies", "/teaching/", "/worklists", "/system"} <= paths, statuses
    assert all(200 <= status < 400 for status in statuses.values()), statuses


@pytest.mark.parametrize(("who", "method", "path", "expected"), [
    ("student", "GET", "/dicomweb/studies", 200),
    ("student", "POST", "/tools/find", 200),
    ("student", "POST", "/instances", 401),
    ("student", "POST", "/worklists/create", 401),
    ("student", "GET", "/tools/log-level", 401),
    ("teacher", "DELETE", "/studies/none", 404),
    ("teacher", "POST", "/tools/shutdown", 403),
    ("teacher", "GET", "/jobs", 403),
    ("admin", "GET", "/jobs", 200),
    ("admin", "GET", "/tools/log-level", 200),
])
def test_who_may_do_what(host, who, method, path, expected):
    login = {"student": ("", ""), "teacher": TEACHER, "admin": ADMIN}[who]
    body = json.dumps({"Level": "Study", "Query": {}}) if path == "/tools/find" else ""
    status, answer = http_request(host, HTTP_PORT, method, path, body, *login)
    assert status == expected, answer


def test_hook_deployed(host):
    hook = host.file("/etc/pipacs/hooks/count_hook.py")
    assert (hook.user, hook.group, hook.mode) == ("root", "pipacs", 0o640)


def test_pipacs_runs_with_the_plugins(host):
    assert host.service("pipacs").is_running
    status, _ = http_get(host, HTTP_PORT, "/changes?last", *ADMIN)
    assert status == 200
    echo = echoscu(container_ip("pipacs-plugins"), 4242, "PACS_A")
    assert echo.returncode == 0, echo.stderr


def test_check_mode_reports_no_changes():
    run = run_playbook("converge.yml", "--check", "--diff")
    assert run.returncode == 0, run.output
    assert run.recap()["changed"] == 0, run.output
