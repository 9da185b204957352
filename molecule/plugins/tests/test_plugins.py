"""What a person would observe on a Pi converged by the plugins role (see ../converge.yml)."""

import json
import re
import sys
import time
from pathlib import Path

import pydicom
import pytest
from PIL import ImageStat
from pipacs_molecule import run_playbook
from pipacs_probe import container_ip, echoscu, http_get, http_request, storescu

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "server" / "tests"))
sys.path.insert(0, str(REPO / "bench"))
import datagen  # noqa: E402  (the server tests' synthetic CT)
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


def test_ohif_build_deployed(host):
    ohif = plugins_config(host)["OHIF"]
    assert ohif["Enable"] is True and ohif["RouterBasename"] == "/ohif", ohif
    assert re.fullmatch(r"/srv/pipacs/ohif/3\.13\.2-[0-9a-f]{12}", ohif["Location"]), ohif
    assert "libOrthancOHIF.so" in plugins_config(host)["Plugins"]
    builds = host.run("ls -A /srv/pipacs/ohif").stdout.split()
    assert builds == [ohif["Location"].rsplit("/", 1)[1]], builds  # one build, the one named
    marker = host.file(ohif["Location"] + "/.pipacs-ohif")
    assert marker.content_string.startswith("@ohif/app 3.13.2\nsha256 "), marker.content_string
    page = host.file(ohif["Location"] + "/index.html")
    assert (page.user, page.group, page.mode) == ("root", "pipacs", 0o640)
    assert host.file(ohif["Location"] + "/app.bundle.0f6159c501addfe9.js.gz").exists


# Every request the page made, with its HTTP status (0: not answered over HTTP).
RESOURCES = """(() => performance.getEntriesByType('resource').concat(
  performance.getEntriesByType('navigation')).map(e => [e.name, e.responseStatus || 0]))()"""
# The viewport: the largest canvas, where cornerstone draws the image.
VIEWPORT = """(() => { const c = [...document.querySelectorAll('canvas')]
  .filter(c => c.width > 200 && c.height > 200)
  .map(c => c.getBoundingClientRect()).sort((a, b) => b.width * b.height - a.width * a.height)[0];
  return c ? [c.left, c.top, c.right, c.bottom] : null; })()"""


def test_ohif_on_the_pi_shows_a_stored_study(tmp_path):
    """A student's tablet (no password, the Wi-Fi side): OHIF's study list shows a CT study
    stored on the Pi, a direct link to the viewer (what a reload or a bookmark asks) opens
    it, its images are drawn, and no request fails."""
    ip = container_ip("pipacs-plugins")
    files = datagen.make_large(tmp_path / "ct", count=6, studies=1, seed=15)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    store = storescu(ip, 4242, "PACS_A", *files)
    assert store.returncode == 0, store.stderr
    base = f"http://{ip}:{HTTP_PORT}/ohif/"
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(base, (1180, 820))
        patient = str(first.PatientName).split("^")[0]
        browser.wait(f"((document.body && document.body.innerText) || '').includes({json.dumps(patient)})",
                     timeout=90)
        browser.open(base + f"viewer?StudyInstanceUIDs={first.StudyInstanceUID}", (1180, 820))
        box = browser.wait(VIEWPORT, timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every slice asked for and answered
            if len([u for u, _ in browser.js(RESOURCES) if "/frames/" in u]) >= len(files):
                break
            time.sleep(1)
        time.sleep(2)  # the last frame drawn
        shot = browser.screenshot(tmp_path / "ohif.png")
        left, top, right, bottom = box
        width, height = right - left, bottom - top
        # The middle of the viewport (its corners hold overlay text): the phantom, not black.
        middle = shot.crop((int(left + width / 4), int(top + height / 4),
                            int(right - width / 4), int(bottom - height / 4)))
        assert ImageStat.Stat(middle).stddev[0] > 10, f"blank viewport ({tmp_path / 'ohif.png'})"
        entries = browser.js(RESOURCES)
    finally:
        browser.close()
    origin = f"http://{ip}:{HTTP_PORT}"
    failed = [(u, s) for u, s in entries if u.startswith(origin) and s >= 400]
    assert not failed, json.dumps(failed, indent=1)
    assert len([u for u, _ in entries if "/frames/" in u]) >= len(files), entries
    assert not [u for u, _ in entries if not u.startswith((origin, "data:", "blob:"))], entries


def test_check_mode_reports_no_changes():
    run = run_playbook("converge.yml", "--check", "--diff")
    assert run.returncode == 0, run.output
    assert run.recap()["changed"] == 0, run.output
