"""Headless Debian Chromium driven over the DevTools protocol on a pipe
(--remote-debugging-pipe): no websocket library, no downloaded browser. Used by the viewer's
tests and by the molecule plugins scenario (every link of the welcome page)."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image


class Chromium:
    """Headless Debian Chromium driven over the DevTools protocol on fds 3 and 4."""

    def __init__(self, profile: Path):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            pytest.fail("chromium is not installed: apt-get install -y chromium (make setup)")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire() -> None:  # in the child: fd 3 reads commands, fd 4 writes answers
            high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(high_r, 3)  # dup2 leaves them inheritable; every other fd is not
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [
                exe,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-breakpad",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--mute-audio",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=wire,
            close_fds=False,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next = 0
        self.session = ""

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)

    def call(self, method: str, timeout: float = 30, **params: Any) -> Any:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                raw, _, self._buffer = self._buffer.partition(b"\0")
                answer = json.loads(raw)
                if answer.get("id") == self._next:
                    assert "error" not in answer, f"{method}: {answer['error']}"
                    return answer.get("result", {})
            left = deadline - time.monotonic()
            assert left > 0, f"no answer to {method}"
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                assert chunk, "chromium closed the pipe"
                self._buffer += chunk

    def open(self, url: str, size: tuple[int, int]) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.call("Page.enable")
        self.call("Page.bringToFront")  # a background tab gets no rendering steps
        self.call("Emulation.setTouchEmulationEnabled", enabled=True, maxTouchPoints=5)
        self.viewport(*size)
        self.call("Page.navigate", url=url)

    def viewport(self, width: int, height: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=True,
            screenWidth=width,
            screenHeight=height,
        )

    def js(self, expression: str) -> Any:
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {expression}")

    def tap(self, x: float, y: float) -> None:
        point = [{"x": x, "y": y, "id": 1}]
        self.call("Input.dispatchTouchEvent", type="touchStart", touchPoints=point)
        self.call("Input.dispatchTouchEvent", type="touchEnd", touchPoints=[])

    def swipe(self, x: float, y0: float, y1: float, steps: int = 12) -> None:
        self.call(
            "Input.dispatchTouchEvent", type="touchStart", touchPoints=[{"x": x, "y": y0, "id": 1}]
        )
        for i in range(1, steps + 1):
            y = y0 + (y1 - y0) * i / steps
            self.call(
                "Input.dispatchTouchEvent",
                type="touchMove",
                touchPoints=[{"x": x, "y": y, "id": 1}],
            )
        self.call("Input.dispatchTouchEvent", type="touchEnd", touchPoints=[])

    def screenshot(self, path: Path) -> Image.Image:
        data = base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])
        path.write_bytes(data)
        return Image.open(io.BytesIO(data)).convert("L")


def link_statuses(browser: Chromium, url: str, timeout: float = 20) -> dict[str, int]:
    """Open `url`, then follow each of its links in turn, as a person tapping them would:
    {absolute link: HTTP status of the page it opened} (the navigation's own status, after
    redirects, as Chromium saw it)."""
    browser.open(url, (1024, 768))
    browser.wait("document.readyState === 'complete' && location.href !== 'about:blank'", timeout)
    links = browser.js("[...new Set([...document.links].map(a => a.href))]")
    statuses = {}
    for link in links:
        browser.js("window.__before = 1")
        browser.call("Page.navigate", url=link)
        browser.wait("!window.__before && document.readyState === 'complete'", timeout)
        statuses[link] = browser.js(
            "performance.getEntriesByType('navigation')[0].responseStatus")
    return statuses
