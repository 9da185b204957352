"""OHIF Viewer 3 served by pipacs under /ohif/ (Orthanc's OHIF plugin's place), offline.

The serving rules on a small build shaped like OHIF's (absolute links in the page and the
style sheet, hashed chunks, .gz siblings), then the real build from npm (`make setup` fetches
@ohif/app into .cache/ohif with roles/plugins/files/ohif_fetch.py) in headless Chromium: the
study list, then a CT study in the viewer, every request answered without an error.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest

from conftest import REPO, datagen
from pipacs.config import ConfigError, build_settings
from test_plugin_viewer import ARTIFACTS, Chromium

OHIF_BUILD = REPO / ".cache" / "ohif" / "3.13.2"
CHUNK = "12.bundle.0123456789abcdef.js"


def fake_build(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "index.html").write_text(
        '<!doctype html><html><head><link rel="manifest" href="/manifest.json">'
        '<script src="/app-config.js"></script><script>window.PUBLIC_URL="/"</script>'
        '<script defer src="/app.bundle.0f6159c501addfe9.js"></script>'
        '<link href="/app.bundle.css" rel="stylesheet"><a href="//elsewhere.example/x">x</a>'
        "</head><body><div id=root></div></body></html>")
    (root / "app.bundle.css").write_text("@font-face{src:url(/a34f9d1faa5f3315.woff2)}")
    (root / "app-config.js").write_text("window.config = {routerBasename: null, dataSources: []};")
    (root / "app.bundle.0f6159c501addfe9.js").write_text("console.log('app');" * 100)
    (root / "app.bundle.0f6159c501addfe9.js.gz").write_bytes(
        gzip.compress(b"console.log('app');" * 100))
    (root / CHUNK).write_text("/* a lazily loaded chunk */")
    (root / "assets").mkdir()
    (root / "assets" / "logo.svg").write_text("<svg/>")
    return root


def test_ohif_is_served_under_its_basename(make_pipacs: Any, tmp_path: Path) -> None:
    build = fake_build(tmp_path / "dist")
    p = make_pipacs(DicomWeb={"Enable": True}, OHIF={"Enable": True, "Location": str(build)})

    status, headers, page = p.request("GET", "/ohif/")
    assert status == 200 and headers["Content-Type"].startswith("text/html"), page
    assert b'<head><base href="/ohif/">' in page
    assert b'src="/ohif/app-config.js"' in page and b'href="/ohif/app.bundle.css"' in page
    assert b'window.PUBLIC_URL="/ohif/"' in page
    assert b'href="//elsewhere.example/x"' in page  # a protocol-relative link is not ours
    assert headers["Cache-Control"] == "no-cache"
    assert p.request("GET", "/ohif/", headers={"If-None-Match": headers["ETag"]})[0] == 304
    assert p.request("GET", "/ohif")[0] == 200  # redirected to /ohif/
    assert b'href="ohif/"' in p.request("GET", "/")[2]  # the welcome page links it

    # Client-side routes, reloads and bookmarks: the single page, not a 404.
    for route in ("/ohif/viewer?StudyInstanceUIDs=1.2.3", "/ohif/viewer/dicomweb",
                  "/ohif/local"):
        status, headers, body = p.request("GET", route)
        assert (status, body) == (200, page), route
    # A chunk asked relative to a nested route is the build's own.
    status, _, body = p.request("GET", f"/ohif/viewer/{CHUNK}")
    assert (status, body) == (200, b"/* a lazily loaded chunk */")
    status, _, body = p.request("GET", "/ohif/viewer/missing.js")
    assert status == 404 and b"/ohif/viewer/missing.js is not part of the viewer" in body
    assert b"//" not in body.split(b"/ohif/viewer/missing.js")[0][-40:]
    assert p.request("GET", "/ohif/%2e%2e/%2e%2e/etc/passwd")[0] in (403, 404)

    status, _, css = p.request("GET", "/ohif/app.bundle.css")
    assert status == 200 and css == b"@font-face{src:url(/ohif/a34f9d1faa5f3315.woff2)}"
    status, _, config = p.request("GET", "/ohif/app-config.js")
    text = config.decode()
    assert text.startswith("window.config = {routerBasename: null")  # the build's own first
    assert 'window.config.routerBasename = "/ohif";' in text
    assert '"qidoRoot": "/dicom-web"' in text and "defaultDataSourceName = 'pipacs'" in text

    # The bundle: gzip from its .gz when the client takes it; cached for good (hashed name).
    status, headers, body = p.request("GET", "/ohif/app.bundle.0f6159c501addfe9.js",
                                      headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == b"console.log('app');" * 100
    assert headers["Content-Type"].startswith("application/javascript")
    assert "immutable" in headers["Cache-Control"] and headers["Vary"] == "Accept-Encoding"
    status, headers, body = p.request("GET", "/ohif/app.bundle.0f6159c501addfe9.js")
    assert status == 200 and "Content-Encoding" not in headers and body.startswith(b"console")


def test_ohif_follows_authentication_and_config_errors(make_pipacs: Any, tmp_path: Path) -> None:
    build = fake_build(tmp_path / "dist")
    p = make_pipacs(DicomWeb={"Enable": True}, OHIF={"Enable": True, "Location": str(build)},
                    AuthenticationEnabled=True, RegisteredUsers={"teacher": "pw"})
    assert p.request("GET", "/ohif/viewer?StudyInstanceUIDs=1.2")[0] == 401
    for bad, message in (({"RouterBasename": "ohif"}, "OHIF.RouterBasename"),
                         ({"DataSource": "dicom-json"}, "OHIF.DataSource"),
                         ({"Location": 7}, "OHIF.Location: must be a string")):
        with pytest.raises(ConfigError, match=message):
            build_settings({"OHIF": {"Enable": True, "Location": str(build), **bad}}, tmp_path)
    missing = make_pipacs(OHIF={"Enable": True, "Location": str(tmp_path / "nothing")})
    status, _, body = missing.request("GET", "/ohif/")
    assert status == 404 and b"OHIF is not installed here" in body
    assert b"ohif/" not in missing.request("GET", "/")[2]  # no link to what is not there
    assert "does not exist" in missing.log()


RESOURCES = """(() => performance.getEntriesByType('resource').concat(
  performance.getEntriesByType('navigation')).map(e => [e.name, e.responseStatus || 0]))()"""


def test_real_ohif_in_chromium(make_pipacs: Any, tmp_path: Path) -> None:
    if not (OHIF_BUILD / ".complete").is_file():
        pytest.fail(f"no OHIF build in {OHIF_BUILD}: `make setup` fetches it "
                    "(roles/plugins/files/ohif_fetch.py .cache/ohif)")
    files = datagen.make_large(tmp_path / "ct", count=12, studies=1, seed=9)
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    p = make_pipacs(Name="Classroom", DicomWeb={"Enable": True},
                    OHIF={"Enable": True, "Location": str(OHIF_BUILD)})
    p.store(*files)
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(p.url + "/ohif/", (1180, 820))
        # The study list (the patient's name from QIDO).
        browser.wait("((document.body && document.body.innerText) || '').includes('BENCH')",
                     timeout=90)
        browser.open(p.url + f"/ohif/viewer?StudyInstanceUIDs={uid}", (1180, 820))
        # The viewport's canvas gets the image (cornerstone draws on a canvas).
        browser.wait("(() => { const c = [...document.querySelectorAll('canvas')]"
                     ".filter(c => c.width > 200 && c.height > 200); return c.length > 0; })()",
                     timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until every slice has been asked for and answered
            frames = [u for u, _ in browser.js(RESOURCES) if "/frames/" in u]
            if len(frames) >= len(files):
                break
            time.sleep(1)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.screenshot(ARTIFACTS / "ohif-1180x820.png")
        entries = browser.js(RESOURCES)
        ours = [(u, s) for u, s in entries if u.startswith(p.url)]
        failed = [(u, s) for u, s in ours if s >= 400]
        assert not failed, json.dumps(failed, indent=1)
        assert len([u for u, _ in ours if "/frames/" in u]) >= len(files), ours
        assert not [u for u, _ in entries if not u.startswith((p.url, "data:", "blob:"))], entries
        assert "Traceback" not in p.log()
    finally:
        browser.close()
