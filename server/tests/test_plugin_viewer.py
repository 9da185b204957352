"""The welcome page and the web viewer: assets, and headless Chromium at iPad sizes.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no
websocket library, no downloaded browser. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

from PIL import ImageStat

from chromium import Chromium
from conftest import ORTHANCPI_CONFIG, PipacsProcess, free_port
from pipacs.config import strip_comments

ARTIFACTS = Path(__file__).parent / "artifacts"
SEED = ORTHANCPI_CONFIG
VIEWER = {"Plugins": ["libOrthancWebViewer.so"]}


def get(p: PipacsProcess, path: str, headers: dict[str, str] | None = None) -> Any:
    return p.request("GET", path, headers=headers, timeout=10)


# ---------------------------------------------------------------- without a browser


def test_welcome_page_without_the_viewer(make_pipacs: Any) -> None:
    p = make_pipacs(Name="Room 12 <Pi>")
    status, headers, body = get(p, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"Room 12 &lt;Pi&gt;" in body
    assert b'href="viewer/"' not in body
    assert get(p, "/viewer/")[0] == 404


def test_viewer_assets_are_small_local_and_revalidated(make_pipacs: Any) -> None:
    p = make_pipacs(Name="Lab Pi", **VIEWER)
    status, _, body = get(p, "/")
    assert b'href="viewer/"' in body and b"Lab Pi" in body
    status, headers, page = get(p, "/viewer/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'src="viewer.js"' in page
    assert get(p, "/viewer")[0] == 200  # redirected to /viewer/
    total = 0
    for name in ("index.html", "viewer.js", "viewer.css"):
        status, headers, body = get(p, f"/viewer/{name}", {"Accept-Encoding": "gzip"})
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(body)
        total += len(text)
        # Offline: nothing from another host, ever.
        assert b"http://" not in text and b"https://" not in text and b"//cdn" not in text
        status, _, empty = get(p, f"/viewer/{name}", {"If-None-Match": headers["ETag"]})
        assert status == 304 and empty == b""
    assert total < 40_000  # a few tens of KB at most, for a Pi 1 serving a class
    assert get(p, "/viewer/nothing.js")[0] == 404


def test_seed_configuration_starts(make_pipacs: Any) -> None:
    """The OrthancPi configuration: its ServeFolders path is missing here, a warning only."""
    config = json.loads(strip_comments(SEED.read_text(encoding="utf-8-sig")))
    config.update(DicomPort=free_port(), HttpPort=free_port(), RemoteAccessAllowed=False)
    p = make_pipacs(start=False)
    p.config = config
    p.start()
    log = p.log()
    assert "/home/pi/orthancpi/web does not exist" in log
    plugins = p.get("/plugins")
    assert {"serve-folders", "web-viewer", "worklists"} <= set(plugins)
    status, _, body = get(p, "/")
    assert status == 200
    assert b"OrthancPi" in body and b'href="web/"' in body and b'href="viewer/"' in body
    assert get(p, "/web/index.html")[0] == 404
    p.echo()


# ---------------------------------------------------------------- Chromium


def stage_box(browser: Chromium) -> tuple[int, int, int, int]:
    r = browser.js(
        "(() => { const r = document.querySelector('#stage')"
        ".getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })()"
    )
    return int(r[0]), int(r[1]), int(r[2]), int(r[3])


CANVAS_SPREAD = """(() => {
  const c = document.querySelector('#canvas'), g = c.getContext('2d');
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let n = 0, sum = 0, sq = 0, lit = 0;
  for (let i = 0; i < d.length; i += 4 * 7) {
    const v = d[i]; n++; sum += v; sq += v * v; if (v > 20) lit++;
  }
  const mean = sum / n;
  return {spread: Math.sqrt(sq / n - mean * mean), lit: lit / n};
})()"""


def test_viewer_in_headless_chromium_at_ipad_sizes(
    make_pipacs: Any, small_data: list[Path], tmp_path: Path
) -> None:
    p = make_pipacs(Name="Classroom Pi", **VIEWER)
    p.store(*[f for f in small_data if "S11P0001" in str(f)])
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(p.url + "/viewer/", (1024, 768))
        assert browser.wait("document.querySelectorAll('#studies li.study').length") == 2
        # the name comes from /system, answered independently of the study list
        assert browser.wait("document.querySelector('#title').textContent === 'Classroom Pi'")

        # Tap the first study, as a finger would.
        r = browser.js(
            "(() => { const r = document.querySelector('#studies li.study')"
            ".getBoundingClientRect(); return [r.left + r.width / 2,"
            " r.top + r.height / 2]; })()"
        )
        browser.tap(r[0], r[1])
        if not browser.js("location.hash"):  # no tap gesture synthesised: click instead
            browser.js("document.querySelector('#studies li.study').click()")
        browser.wait("location.hash.startsWith('#study=')")
        browser.wait("Number(document.body.dataset.drawn || 0) >= 1")
        browser.wait("document.querySelectorAll('#series figure img').length == 2")
        drawn = browser.js(CANVAS_SPREAD)
        assert drawn["spread"] > 10 and drawn["lit"] > 0.05, drawn
        first = browser.js("document.querySelector('#overlay').textContent")
        assert "Image 6 / 10" in first

        # Scroll through the series with one finger (the default tool).
        left, top, right, bottom = stage_box(browser)
        x = (left + right) / 2
        browser.swipe(x, top + 40, bottom - 40)
        browser.wait("!document.querySelector('#overlay').textContent.includes('Image 6 /')")
        moved = browser.js("document.querySelector('#overlay').textContent")
        assert "Image 10 / 10" in moved, moved

        shot = ARTIFACTS / "viewer-1024x768.png"
        image = browser.screenshot(shot)
        print(f"\nviewer screenshot: {shot}")
        region = image.crop((left, top, right, bottom))
        assert ImageStat.Stat(region).stddev[0] > 10, "the image area is blank"

        # Portrait iPad: the layout follows and the image is drawn again.
        before = int(browser.js("Number(document.body.dataset.drawn)"))
        browser.viewport(768, 1024)
        # Headless Chromium renders frames on demand: a capture runs the rendering step
        # (where the ResizeObserver fires) as a tablet's screen refresh would.
        deadline = time.monotonic() + 15
        while int(browser.js("Number(document.body.dataset.drawn)")) <= before:
            assert time.monotonic() < deadline, "not drawn again after the rotation"
            browser.call("Page.captureScreenshot", format="png")
            time.sleep(0.2)
        left, top, right, bottom = stage_box(browser)
        assert right - left <= 768 and bottom - top > 300
        drawn = browser.js(CANVAS_SPREAD)
        assert drawn["spread"] > 10, drawn
        shot = ARTIFACTS / "viewer-768x1024.png"
        image = browser.screenshot(shot)
        print(f"viewer screenshot: {shot}")
        assert ImageStat.Stat(image.crop((left, top, right, bottom))).stddev[0] > 10

        # Window/level with a drag re-renders on the server with the new window.
        window = "document.querySelector('#overlay').textContent.match(/W -?\\d+  L -?\\d+/)[0]"
        assert browser.js(window) == "W 1600  L 600"  # the file's own window
        before = int(browser.js("Number(document.body.dataset.drawn)"))
        browser.js("document.querySelector('[data-tool=window]').click()")
        browser.swipe((left + right) / 2, top + 100, top + 180, steps=4)
        assert browser.js(window) == "W 1600  L 100"  # dragged down: a lower level
        browser.wait(f"Number(document.body.dataset.drawn) > {before}")  # rendered anew
        assert browser.js(CANVAS_SPREAD)["spread"] > 10
        assert "Traceback" not in p.log()
    finally:
        browser.close()
