"""The web viewer at /viewer/: a study browser and an image viewer for tablets and laptops.

Plain HTML, CSS and JavaScript from viewer_assets/ (no build step, no CDN), kept in memory,
gzipped once, and revalidated by ETag, so a class of tablets costs the Pi little. Images
come from the REST routes (/instances/{id}/rendered with window and size).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from pathlib import Path
from typing import Any

import bottle

from ..context import ServerContext

logger = logging.getLogger(__name__)

NAME = "web-viewer"
SECTION = "web_viewer"

ASSETS = Path(__file__).with_name("viewer_assets")
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


class Asset:
    def __init__(self, path: Path):
        self.data = path.read_bytes()
        self.gzipped = gzip.compress(self.data, compresslevel=9, mtime=0)
        self.etag = '"' + hashlib.sha1(self.data).hexdigest()[:16] + '"'
        self.type = TYPES.get(path.suffix, "application/octet-stream")

    def response(self) -> Any:
        headers = {"ETag": self.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
        wanted = bottle.request.get_header("If-None-Match", "")
        if self.etag in [t.strip().removeprefix("W/") for t in wanted.split(",")]:
            return bottle.HTTPResponse(status=304, **headers)
        body = self.data
        accepted = bottle.request.get_header("Accept-Encoding", "")
        if "gzip" in [a.split(";")[0].strip().lower() for a in accepted.split(",")]:
            body = self.gzipped
            headers["Content-Encoding"] = "gzip"
        return bottle.HTTPResponse(
            body=body,
            status=200,
            headers={**headers, "Content-Type": self.type, "Content-Length": str(len(body))},
        )


def load_assets() -> dict[str, Asset]:
    return {p.name: Asset(p) for p in sorted(ASSETS.iterdir()) if p.is_file() and p.suffix in TYPES}


def install(app: bottle.Bottle | None, context: ServerContext) -> None:
    if app is None:
        return
    assets = load_assets()
    logger.info(
        "web viewer: %d assets, %d bytes gzipped",
        len(assets),
        sum(len(a.gzipped) for a in assets.values()),
    )

    @app.get("/viewer")
    def viewer_redirect() -> Any:
        return bottle.redirect("/viewer/", 301)

    @app.get("/viewer/")
    def viewer_index() -> Any:
        return assets["index.html"].response()

    @app.get("/viewer/<name>")
    def viewer_asset(name: str) -> Any:
        asset = assets.get(name)
        if asset is None:
            return bottle.HTTPError(404, "Not found")
        return asset.response()
