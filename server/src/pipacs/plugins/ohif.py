"""OHIF Viewer 3 served by pipacs, as Orthanc's OHIF plugin serves it: at /ohif/ (the
"RouterBasename"), same origin as DICOMweb, behind the same access rules, offline.

OHIF's published build (npm `@ohif/app`, `dist/`) expects to live at the site's root: its
page and style sheets name "/app.bundle....js", "/assets/...", "url(/font.woff2)". pipacs
serves it under the basename instead and rewrites those three kinds of text as it sends them
(the page gets a `<base href>` and `window.PUBLIC_URL`), appends a data source pointing at
pipacs' own DICOMweb to the build's `app-config.js` (the build's defaults first, ours last,
so ours win), and answers every client-side route (`/ohif/viewer?StudyInstanceUIDs=...`, a
reload, a bookmarked link) with the page: a single-page app has one document. A file with
a `.gz` next to it is sent compressed to clients that accept gzip (the bundle is 17 MB, 4 MB
gzipped: the roles compress once on the controller, the Pi never does). Hashed bundle names
are cached by browsers for good; the page and the configuration are revalidated.

Configuration, Orthanc's section name: "OHIF": {"Location": "/opt/pipacs/ohif",
"RouterBasename": "/ohif", "DataSource": "dicom-web"}; the plugin runs when "Enable" is true
or `libOrthancOHIF` is listed in Plugins. It needs the DICOMweb plugin.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import bottle

from ..context import ServerContext
from . import enabled as plugin_enabled
from .servefolders import Folder

logger = logging.getLogger(__name__)

NAME = "ohif"
SECTION = "ohif"

# Content-hashed file names (webpack's "[id].bundle.[hash].js", "[hash].wasm"): never change.
HASHED = re.compile(r"(^|\.)[0-9a-f]{16}\.(js|wasm|woff2?|css)$")
REWRITTEN = (".html", ".css", ".json")


def base_of(section: dict[str, Any]) -> str:
    """The URL path OHIF is served under ("/ohif" unless RouterBasename says otherwise)."""
    return "/" + str(section.get("RouterBasename", "/ohif")).strip("/")


def installed(section: dict[str, Any]) -> bool:
    """Whether the build named by Location is there (a page at its root)."""
    location = section.get("Location")
    return isinstance(location, str) and bool(location) and (
        Path(location) / "index.html").is_file()


class Ohif:
    def __init__(self, context: ServerContext, section: dict[str, Any]):
        self.base = base_of(section)
        self.folder = Folder(self.base, str(section.get("Location", "")), {"AllowCache": False})
        root = str(context.settings.dicom_web.get("Root", "/dicom-web/")).rstrip("/")
        self.dicom_web = root or "/dicom-web"
        self.cache: dict[Path, tuple[int, bytes]] = {}

    # ---------------------------------------------------------------- text rewritten for the base

    def page(self, data: bytes) -> bytes:
        base = self.base.encode()
        data = re.sub(rb'((?:href|src)=")/(?!/)', rb"\1" + base + b"/", data)
        data = data.replace(b'window.PUBLIC_URL="/"', b'window.PUBLIC_URL="' + base + b'/"')
        return re.sub(rb"<head>", b'<head><base href="' + base + b'/">', data, count=1)

    def style(self, data: bytes) -> bytes:
        return re.sub(rb"url\((['\"]?)/(?!/)", rb"url(\1" + self.base.encode() + b"/", data)

    def manifest(self, data: bytes) -> bytes:
        """The web app manifest's icons and start URL."""
        return re.sub(rb'("(?:src|start_url|scope)"\s*:\s*")/(?!/)', rb"\1" + self.base.encode()
                      + b"/", data)

    def app_config(self, data: bytes) -> bytes:
        source = {
            "friendlyName": "pipacs",
            "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
            "sourceName": "pipacs",
            "configuration": {
                "name": "pipacs",
                "qidoRoot": self.dicom_web,
                "wadoRoot": self.dicom_web,
                "wadoUriRoot": self.dicom_web,
                "qidoSupportsIncludeField": False,
                "supportsReject": False,
                "imageRendering": "wadors",
                "thumbnailRendering": "wadors",
                "enableStudyLazyLoad": True,
                "supportsFuzzyMatching": False,
                "supportsWildcard": True,
                "staticWado": True,
                "singlepart": "bulkdata,video",
                "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
                "acceptHeader": ["multipart/related; type=application/octet-stream; "
                                 "transfer-syntax=*"],
            },
        }
        ours = (
            "\n// pipacs: OHIF under its basename, reading pipacs' own DICOMweb.\n"
            f"window.config.routerBasename = {json.dumps(self.base)};\n"
            f"window.config.dataSources = [{json.dumps(source)}];\n"
            "window.config.defaultDataSourceName = 'pipacs';\n"
            "window.config.showWarningMessageForCrossOrigin = false;\n"
        )
        return data + ours.encode()

    def rewritten(self, path: Path, rewrite: Any) -> Any:
        stat = path.stat()
        hit = self.cache.get(path)
        if hit is None or hit[0] != stat.st_mtime_ns:
            hit = (stat.st_mtime_ns, rewrite(path.read_bytes()))
            self.cache[path] = hit
        body = hit[1]
        etag = f'"{len(body):x}-{stat.st_mtime_ns:x}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        wanted = [t.strip().removeprefix("W/")
                  for t in bottle.request.get_header("If-None-Match", "").split(",")]
        if etag in wanted:
            return bottle.HTTPResponse(status=304, **headers)
        return bottle.HTTPResponse(body=body, status=200, headers={
            **headers, "Content-Type": self.folder.mime(path), "Content-Length": str(len(body))})

    # ---------------------------------------------------------------- files

    def send(self, path: Path) -> Any:
        if path.name == "app-config.js" and path.parent == self.folder.root.resolve():
            return self.rewritten(path, self.app_config)
        if path.suffix in REWRITTEN:
            rewrite = {".html": self.page, ".css": self.style, ".json": self.manifest}
            return self.rewritten(path, rewrite[path.suffix])
        accepted = bottle.request.get_header("Accept-Encoding", "")
        gz = path.with_name(path.name + ".gz")
        if "gzip" in accepted and gz.is_file():
            answer = self.folder.send(gz)
            answer.set_header("Content-Type", self.folder.mime(path))
            answer.set_header("Content-Encoding", "gzip")
        else:
            answer = self.folder.send(path)
        answer.set_header("Vary", "Accept-Encoding")
        if HASHED.search(path.name):
            answer.set_header("Cache-Control", "public, max-age=31536000, immutable")
        return answer

    def serve(self, rel: str) -> Any:
        if not self.folder.root.is_dir():
            return bottle.HTTPError(404, f"OHIF is not installed here ({self.folder.root} "
                                         "does not exist): see the plugins role's ohif option")
        if ".." in rel.split("/"):
            return bottle.HTTPError(403, f"{self.folder.where(rel)} leaves the viewer's folder")
        target = self.folder.resolve(rel)
        if target is not None and target.is_file():
            return self.send(target)
        last = rel.rsplit("/", 1)[-1]
        if "." in last:
            # A chunk named relative to a nested route (/ohif/viewer/x.js): the build's root.
            flat = self.folder.resolve(last)
            if flat is not None and flat.is_file():
                return self.send(flat)
            return bottle.HTTPError(404, f"{self.folder.where(rel)} is not part of the viewer")
        index = self.folder.resolve("index.html")
        if index is None:
            return bottle.HTTPError(404, f"{self.folder.root} has no index.html: not an OHIF build")
        return self.send(index)  # a client-side route: the single page answers it


def install(app: bottle.Bottle | None, context: ServerContext) -> None:
    if app is None:
        return
    section = context.settings.ohif
    ohif = Ohif(context, section)
    if not section.get("Location"):
        logger.warning("OHIF: no Location set; %s/ answers 404", ohif.base)
    elif not ohif.folder.root.is_dir():
        logger.warning("OHIF: %s does not exist; %s/ answers 404 until it does",
                       ohif.folder.root, ohif.base)
    if not plugin_enabled(context.settings, "dicom-web", "dicom_web"):
        logger.warning("OHIF: the DICOMweb plugin is off; the viewer will find no study")

    def redirect() -> Any:
        return bottle.redirect(ohif.base + "/", 301)

    def serve(rel: str = "") -> Any:
        return ohif.serve(rel)

    app.route(ohif.base, "GET", redirect)
    app.route(ohif.base + "/", "GET", serve)
    app.route(ohif.base + "/<rel:path>", "GET", serve)
    logger.info("OHIF: %s/ -> %s", ohif.base, ohif.folder.root)
