"""ServeFolders: static folders at URIs, as Orthanc's plugin ("/web": "folder", or Folders).

Options (Orthanc's): AllowCache (default false: clients revalidate every time, which the
ETag makes cheap), GenerateETag (default true), Extensions (".ext": "MIME type", added to
the built-in table) and Folders (URI -> folder). A folder shows its index.html, else a
listing. A request never leaves its folder: "..", encoded or not, is refused, and every
path is resolved (symlinks included) and checked to lie inside the folder. A missing folder
is a warning at start; it is served as soon as it exists.
"""

from __future__ import annotations

import html
import logging
import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import quote

import bottle

from ..context import ServerContext

logger = logging.getLogger(__name__)

NAME = "serve-folders"
SECTION = "serve_folders"

MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
    ".mjs": "application/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".xml": "application/xml",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".pdf": "application/pdf",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
    ".wasm": "application/wasm",
    ".webmanifest": "application/manifest+json",
    ".zip": "application/zip",
    ".dcm": "application/dicom",
    ".nii": "application/octet-stream",
}
INDEX_FILES = ("index.html", "index.htm")


def served_folders(settings: Any) -> dict[str, str]:
    """URI (no trailing slash) -> folder, from the plain and the Folders forms."""
    sf = settings.serve_folders
    out: dict[str, str] = {}
    folders = sf.get("Folders") if isinstance(sf.get("Folders"), dict) else {}
    for uri, folder in [*((k, v) for k, v in sf.items() if k.startswith("/")), *folders.items()]:
        if isinstance(uri, str) and isinstance(folder, str) and uri.startswith("/"):
            out[uri.rstrip("/") or "/"] = folder
    return out


class Folder:
    """One served folder and the options it is served with."""

    def __init__(self, uri: str, folder: str, options: dict[str, Any]):
        self.uri = uri
        self.root = Path(folder)
        self.allow_cache = options.get("AllowCache", False) is True
        self.etag = options.get("GenerateETag", True) is not False
        self.types = dict(MIME_TYPES)
        for ext, mime in (options.get("Extensions") or {}).items():
            if isinstance(ext, str) and isinstance(mime, str):
                self.types[(ext if ext.startswith(".") else "." + ext).lower()] = mime

    def resolve(self, rel: str) -> Path | None:
        """The real path of `rel` inside the folder, or None when it would leave it."""
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if any(p == ".." or "\\" in p or "\x00" in p for p in parts):
            return None
        try:
            root = self.root.resolve(strict=True)
            target = root.joinpath(*parts).resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if target != root and root not in target.parents:
            return None
        return target

    def mime(self, path: Path) -> str:
        ext = path.suffix.lower()
        if ext in self.types:
            return self.types[ext]
        guessed, _ = mimetypes.guess_type(path.name)
        return guessed or "application/octet-stream"

    def cache_headers(self) -> dict[str, str]:
        if self.allow_cache:
            return {"Cache-Control": "public, max-age=3600"}
        return {"Cache-Control": "no-cache", "Pragma": "no-cache"}

    def where(self, rel: str) -> str:
        """The URI of `rel` in this folder, as the client asked for it (one slash between)."""
        return self.uri.rstrip("/") + "/" + rel

    def serve(self, rel: str) -> Any:
        target = self.resolve(rel)
        if target is None:
            if ".." in rel.split("/"):
                logger.warning("ServeFolders: refused %s (leaves the folder)", self.where(rel))
                return bottle.HTTPError(403, f"{self.where(rel)} leaves the served folder")
            return bottle.HTTPError(404, f"{self.where(rel)} is not in the served folder")
        if target.is_dir():
            if not bottle.request.path.endswith("/"):
                return bottle.redirect(bottle.request.path + "/", 301)
            for name in INDEX_FILES:
                if (target / name).is_file():
                    return self.send(target / name)
            return self.listing(target, rel)
        if not target.is_file():
            return bottle.HTTPError(404, "Not found")
        return self.send(target)

    def send(self, path: Path) -> Any:
        headers = self.cache_headers()
        etag: Any = False
        if self.etag:
            st = path.stat()
            etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}-{st.st_ino:x}"'
            wanted = bottle.request.get_header("If-None-Match", "")
            tags = [t.strip().removeprefix("W/") for t in wanted.split(",")]
            if etag in tags or "*" in tags:
                return bottle.HTTPResponse(status=304, ETag=etag, **headers)
            headers["ETag"] = etag
        # bottle sends the body (Range and HEAD included); the ETag check is ours (quoted,
        # lists and weak tags), so bottle's own is off.
        return bottle.static_file(
            path.name,
            root=str(path.parent),
            mimetype=self.mime(path),
            etag=False,
            headers=headers,
            charset="",
        )

    def listing(self, folder: Path, rel: str) -> str:
        entries = []
        try:
            children = sorted(folder.iterdir(), key=lambda p: p.name.lower())
        except OSError:
            children = []
        for child in children:
            if child.name.startswith("."):
                continue
            name = child.name + ("/" if child.is_dir() else "")
            entries.append(f'<li><a href="{quote(name)}">{html.escape(name)}</a></li>')
        title = html.escape(self.where(rel))
        bottle.response.content_type = "text/html; charset=utf-8"
        for k, v in self.cache_headers().items():
            bottle.response.set_header(k, v)
        return (
            f"<!doctype html><meta charset=utf-8><title>{title}</title>"
            f"<h1>{title}</h1><ul>{''.join(entries)}</ul>"
        )


def install(app: bottle.Bottle | None, context: ServerContext) -> None:
    if app is None:
        return
    options = context.settings.serve_folders
    served = []
    for uri, path in served_folders(context.settings).items():
        folder = Folder(uri, path, options)
        if not folder.root.is_dir():
            logger.warning(
                "ServeFolders: %s does not exist; %s answers 404 until it does", path, uri
            )
        base = "" if uri == "/" else uri

        def redirect(folder: Folder = folder) -> Any:
            return bottle.redirect(folder.uri + "/", 301)

        def serve(rel: str = "", folder: Folder = folder) -> Any:
            return folder.serve(rel)

        if base:
            app.route(base, "GET", redirect)
        app.route(base + "/", "GET", serve)
        app.route(base + "/<rel:path>", "GET", serve)
        served.append(uri)
        logger.info("ServeFolders: %s -> %s", uri, path)
    context.plugins.served_folders = served
