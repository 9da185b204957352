"""The viewer as a radiology class uses it: window presets, length and angle in mm, an ellipse
region's mean/SD in HU, cine, two series side by side, full screen, touch first.

Headless Chromium with touch emulation at the iPad sizes (1024x768, 768x1024, 1180x820).
Every number the viewer shows is checked against what we compute here from the DICOM file:
PixelSpacing for lengths and angles, the file's own pixel values for region statistics.
Also the route the region statistics read, /frames/{n}/numpy, side by side with Orthanc.
"""

from __future__ import annotations

import io
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from conftest import datagen
from test_plugin_viewer import ARTIFACTS, CANVAS_SPREAD, VIEWER, Chromium, stage_box
from test_rest_orthanc import Orthanc
from test_rest_orthanc import orthanc as reference_orthanc
from test_rest_resources import request

ROW_MM, COL_MM = 0.5, 0.8  # different on purpose: x and y must not be mixed up
IPADS = [(1024, 768), (768, 1024), (1180, 820)]


def ct_study(folder: Path) -> list[Path]:
    """One CT study: series 1 with 6 slices (anisotropic pixels), series 2 with 4 slices, and
    series 3, a single instance of 3 frames."""
    paths = datagen.make_large(folder / "src", count=10, studies=1, seed=5)
    series2, multi = generate_uid(), generate_uid()
    out = []
    for i, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = [ROW_MM, COL_MM]
        if i >= 6:
            ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber = series2, 2, i - 5
            ds.SeriesDescription = "Second"
        else:
            ds.SeriesNumber, ds.SeriesDescription = 1, "First"
        target = folder / f"ct{i:02d}.dcm"
        ds.save_as(target)
        out.append(target)
    ds = pydicom.dcmread(paths[0])
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = multi, 3, "Loop"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    frames = [pydicom.dcmread(p).PixelData for p in paths[:3]]
    ds.NumberOfFrames, ds.PixelData = 3, b"".join(frames)
    ds.save_as(folder / "loop.dcm")
    out.append(folder / "loop.dcm")
    return out


def hu(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


# ---------------------------------------------------------------- /frames/{n}/numpy


def npy(body: bytes) -> np.ndarray:
    """An .npy answer, or a zipped one (`compress`: Orthanc names the entry `arr_0`, NumPy's
    savez `arr_0.npy`; np.load reads both as "arr_0")."""
    loaded = np.load(io.BytesIO(body), allow_pickle=False)
    return loaded["arr_0"] if isinstance(loaded, np.lib.npyio.NpzFile) else loaded


orthanc = reference_orthanc  # the module-scoped fixture, under its own name


def test_numpy_frames_as_orthanc(orthanc: Orthanc, make_pipacs: Any, tmp_path: Path) -> None:
    files = ct_study(tmp_path)
    p = make_pipacs()
    ids = {}
    for name in (files[0], files[-1]):
        for url in (p.url, orthanc.url):
            status, _, body = request(url + "/instances", "POST", name.read_bytes())
            assert status == 200, body
        ids[name.name] = json.loads(body)["ID"]
    slice_id, loop_id = ids[files[0].name], ids["loop.dcm"]
    for path in (f"/instances/{slice_id}/frames/0/numpy",
                 f"/instances/{slice_id}/frames/0/numpy?rescale=0",
                 f"/instances/{slice_id}/frames/0/numpy?compress=1",
                 f"/instances/{slice_id}/numpy", f"/instances/{loop_id}/numpy?rescale=false",
                 f"/instances/{loop_id}/frames/2/numpy"):
        mine, theirs = request(p.url + path), request(orthanc.url + path)
        assert mine[0] == theirs[0] == 200, (path, mine[0], theirs[0])
        a, b = npy(mine[2]), npy(theirs[2])
        assert (a.dtype, a.shape) == (b.dtype, b.shape), path
        assert np.array_equal(a, b), path
    expected = hu(files[0]).astype(np.float32)[:, :, np.newaxis]
    assert np.array_equal(npy(request(p.url + f"/instances/{slice_id}/frames/0/numpy")[2]),
                          expected)
    for path in (f"/instances/{slice_id}/frames/1/numpy", f"/instances/{loop_id}/frames/3/numpy"):
        assert request(p.url + path)[0] == request(orthanc.url + path)[0] == 400, path


# ---------------------------------------------------------------- Chromium


def drag(browser: Chromium, points: list[dict[str, float]], steps: int = 6) -> None:
    """One finger down at the first point, along the others, up at the last."""
    def touch(kind: str, pt: dict[str, float] | None) -> None:
        browser.call("Input.dispatchTouchEvent", type=kind,
                     touchPoints=[] if pt is None else [{"x": pt["x"], "y": pt["y"], "id": 1}])
    touch("touchStart", points[0])
    for a, b in itertools.pairwise(points):
        for i in range(1, steps + 1):
            touch("touchMove", {"x": a["x"] + (b["x"] - a["x"]) * i / steps,
                                "y": a["y"] + (b["y"] - a["y"]) * i / steps})
    touch("touchEnd", None)


def pinch(browser: Chromium, x: float, y: float, start: float, end: float) -> None:
    def pts(d: float) -> list[dict[str, float]]:
        return [{"x": x - d, "y": y, "id": 1}, {"x": x + d, "y": y, "id": 2}]
    browser.call("Input.dispatchTouchEvent", type="touchStart", touchPoints=pts(start))
    for i in range(1, 9):
        browser.call("Input.dispatchTouchEvent", type="touchMove",
                     touchPoints=pts(start + (end - start) * i / 8))
    browser.call("Input.dispatchTouchEvent", type="touchEnd", touchPoints=[])


def at(browser: Chromium, x: float, y: float, pane: int = 0) -> dict[str, float]:
    """Where pixel (x, y) of the image in a pane is on the screen."""
    return browser.js(f"window.pipacsViewer.toClient({pane}, {x}, {y})")


def tool(browser: Chromium, name: str) -> None:
    browser.js(f"document.querySelector('[data-tool={name}]').click()")


def marks(browser: Chromium, pane: int = 0) -> list[dict[str, Any]]:
    return browser.js(
        f"(() => {{ const P = window.pipacsViewer.panes[{pane}]; return (P.marks[P.index] || [])"
        ".map(m => ({type: m.type, pts: m.pts, stats: m.stats || null})); })()")


def readout(browser: Chromium, pane: int = 0) -> list[str]:
    return browser.js(f"Array.from(document.querySelectorAll('.readout')[{pane}].children)"
                      ".map(li => li.textContent)")


def mm(a: dict[str, float], b: dict[str, float]) -> tuple[float, float]:
    return (b["x"] - a["x"]) * COL_MM, (b["y"] - a["y"]) * ROW_MM


def region(values: np.ndarray, a: dict[str, float], b: dict[str, float]) -> np.ndarray:
    cx, cy = (a["x"] + b["x"]) / 2, (a["y"] + b["y"]) / 2
    rx, ry = abs(b["x"] - a["x"]) / 2, abs(b["y"] - a["y"]) / 2
    ys, xs = np.mgrid[0:values.shape[0], 0:values.shape[1]]
    inside = ((xs + 0.5 - cx) / rx) ** 2 + ((ys + 0.5 - cy) / ry) ** 2 <= 1
    return values[inside]


def open_first_study(browser: Chromium, url: str, size: tuple[int, int]) -> None:
    browser.open(url + "/viewer/", size)
    browser.wait("document.querySelectorAll('#studies li.study').length == 1")
    browser.js("document.querySelector('#studies li.study').click()")
    browser.wait("!!(window.pipacsViewer.panes[0].geom && window.pipacsViewer.panes[0].img)")
    browser.wait("document.querySelectorAll('#series figure').length == 3")


@pytest.mark.parametrize("size", IPADS, ids=[f"{w}x{h}" for w, h in IPADS])
def test_measurements_in_mm_and_hu(make_pipacs: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    files = ct_study(tmp_path)
    p = make_pipacs(Name="Anatomy room", **VIEWER)
    p.store(*files)
    browser = Chromium(tmp_path / "profile")
    try:
        open_first_study(browser, p.url, size)
        overlay = "document.querySelector('#overlay').textContent"
        assert "Image 4 / 6" in browser.js(overlay)
        slice_hu = hu(files[3])  # the middle slice (InstanceNumber 4) is shown first

        # Length: 300 pixels along a row and 200 down a column, drawn with one finger.
        tool(browser, "length")
        drag(browser, [at(browser, 100, 100), at(browser, 400, 300)])
        (m,) = marks(browser)
        a, b = m["pts"]
        dx, dy = mm(a, b)
        assert readout(browser) == [f"{math.hypot(dx, dy):.1f} mm"]
        assert abs(math.hypot(dx, dy) - math.hypot(300 * COL_MM, 200 * ROW_MM)) < 2

        # Angle: drag one arm to the vertex, tap the other end: a right angle on the screen
        # is not one in mm when pixels are not square; the viewer measures in mm.
        tool(browser, "angle")
        drag(browser, [at(browser, 100, 400), at(browser, 300, 400)])
        browser.tap(**at(browser, 300, 250))
        angle = marks(browser)[1]
        p0, v, p2 = angle["pts"]
        u, w = mm(v, p0), mm(v, p2)
        cos = (u[0] * w[0] + u[1] * w[1]) / (math.hypot(*u) * math.hypot(*w))
        degrees = math.degrees(math.acos(cos))
        assert readout(browser)[1] == f"{degrees:.1f}°"
        assert abs(degrees - 90) < 2

        # Ellipse region: mean and SD of the file's own values, in Hounsfield units.
        tool(browser, "ellipse")
        drag(browser, [at(browser, 200, 200), at(browser, 320, 280)])
        browser.wait("document.querySelectorAll('.readout')[0].children.length == 3 && "
                     "document.querySelectorAll('.readout')[0].children[2].textContent"
                     ".startsWith('mean')")
        ellipse = marks(browser)[2]
        inside = region(slice_hu, *ellipse["pts"])
        rx = abs(ellipse["pts"][1]["x"] - ellipse["pts"][0]["x"]) / 2 * COL_MM
        ry = abs(ellipse["pts"][1]["y"] - ellipse["pts"][0]["y"]) / 2 * ROW_MM
        assert ellipse["stats"]["n"] == inside.size > 1000
        assert readout(browser)[2] == (f"mean {inside.mean():.1f} HU, SD {inside.std():.1f}, "
                                       f"{math.pi * rx * ry:.1f} mm²")

        # Window presets re-render on the server; the readouts stay.
        before = browser.js("Number(document.body.dataset.drawn)")
        spread = browser.js(CANVAS_SPREAD)
        browser.js("const s = document.querySelector('#preset'); s.value = '-600,1500';"
                   "s.dispatchEvent(new Event('change'))")
        assert "W 1500  L -600" in browser.js(overlay)
        browser.wait(f"Number(document.body.dataset.drawn) > {before}")
        assert browser.js(CANVAS_SPREAD) != spread
        assert len(readout(browser)) == 3

        # Two fingers pinch: the image grows, whatever the tool.
        left, top, right, bottom = stage_box(browser)
        pinch(browser, (left + right) / 2, (top + bottom) / 2, 40, 120)
        assert browser.js("window.pipacsViewer.panes[0].zoom") > 1.5
        assert len(readout(browser)) == 3  # the pinch measured nothing

        shot = ARTIFACTS / f"viewer-teaching-{size[0]}x{size[1]}.png"
        ARTIFACTS.mkdir(exist_ok=True)
        browser.screenshot(shot)
        browser.js("document.querySelector('#clear').click()")
        assert readout(browser) == []
        assert "Traceback" not in p.log()
    finally:
        browser.close()


def test_cine_compare_and_full_screen(make_pipacs: Any, tmp_path: Path) -> None:
    files = ct_study(tmp_path)
    p = make_pipacs(Name="Anatomy room", **VIEWER)
    p.store(*files)
    browser = Chromium(tmp_path / "profile")
    try:
        open_first_study(browser, p.url, (1180, 820))
        index = "window.pipacsViewer.panes[0].index"

        # Cine: the series plays by itself, and loops; pause stops it.
        start = browser.js(index)
        browser.js("document.querySelector('#cine').click()")
        browser.wait(f"{index} != {start}")
        browser.wait(f"{index} == 0", timeout=10)  # wrapped around after the last slice
        browser.js("document.querySelector('#cine').click()")
        stopped = browser.js(index)
        browser.call("Page.captureScreenshot", format="png")
        assert browser.js(index) == stopped

        # Two series side by side, scrolled together.
        browser.js("document.querySelector('#compare').click()")
        browser.wait("document.querySelectorAll('.pane').length == 2 && "
                     "!!window.pipacsViewer.panes[1].img")
        assert browser.js("window.pipacsViewer.panes[1].items.length") == 4
        drawn = browser.js("(() => { const c = document.querySelectorAll('.pane canvas')[1];"
                           " return c.width > 100 && c.height > 100; })()")
        assert drawn
        browser.js("document.querySelectorAll('.slider')[0].value = 5;"
                   "document.querySelectorAll('.slider')[0].dispatchEvent(new Event('input'))")
        assert browser.js("window.pipacsViewer.panes.map(P => P.index)") == [5, 3]
        browser.js("document.querySelector('#link').click()")  # unlinked: the other stays
        browser.js("document.querySelectorAll('.slider')[0].value = 0;"
                   "document.querySelectorAll('.slider')[0].dispatchEvent(new Event('input'))")
        assert browser.js("window.pipacsViewer.panes.map(P => P.index)") == [0, 3]

        # The multi-frame series: one image per frame.
        browser.js("document.querySelectorAll('#series figure')[2].click()")
        browser.wait("window.pipacsViewer.panes[0].items.length == 3 && "
                     "!!window.pipacsViewer.panes[0].img")
        assert browser.js("window.pipacsViewer.panes[0].items.map(i => i.frame)") == [0, 1, 2]
        assert browser.js(CANVAS_SPREAD)["spread"] > 10

        # Full screen: the header and the series strip give their room to the images.
        browser.js("document.querySelector('#full').click()")
        assert browser.js("document.querySelector('header').offsetParent === null")
        assert browser.js("document.querySelector('#series').offsetParent === null")
        browser.js("document.querySelector('#full').click()")
        assert browser.js("document.querySelector('header').offsetParent !== null")
        assert "Traceback" not in p.log()
    finally:
        browser.close()
