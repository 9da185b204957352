"""ServeFolders: MIME types, ETag/304, directory index, and no way out of a served folder."""

from __future__ import annotations

import http.client
import os
from typing import Any

import pytest

from conftest import PipacsProcess

SECRET = b"TOP SECRET: outside every served folder"


def fetch(
    p: PipacsProcess, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request with the path sent exactly as written (no client-side normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", p.http_port, timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.fixture
def served(make_pipacs: Any) -> PipacsProcess:
    p = make_pipacs(
        start=False,
        Plugins=["libServeFolders.so"],
        ServeFolders={"/web": "web", "Extensions": {".xyz": "application/x-test"}},
    )
    web = p.folder / "web"
    (web / "sub" / ".hidden").mkdir(parents=True)
    (web / "index.html").write_text("<h1>class page</h1>")
    (web / "app.js").write_text("console.log('hi');")
    (web / "style.css").write_text("body{}")
    (web / "data.json").write_text("{}")
    (web / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (web / "custom.xyz").write_text("x")
    (web / "blob.qqq").write_bytes(b"\x00\x01")
    (web / "sub" / "file.txt").write_text("in sub")
    (web / "sub" / ".dotfile").write_text("hidden")
    secret = p.folder / "secret"
    secret.mkdir()
    (secret / "secret.txt").write_bytes(SECRET)
    (p.folder / "websecret.txt").write_bytes(SECRET)  # shares the folder's name as a prefix
    os.symlink(secret, web / "escape")
    os.symlink(secret / "secret.txt", web / "leak.txt")
    os.symlink(web / "app.js", web / "inner.js")  # a link that stays inside is fine
    p.start()
    return p


def test_mime_types_index_and_listing(served: PipacsProcess) -> None:
    p = served
    for name, mime in [
        ("app.js", "application/javascript"),
        ("style.css", "text/css"),
        ("data.json", "application/json"),
        ("img.png", "image/png"),
        ("custom.xyz", "application/x-test"),
        ("blob.qqq", "application/octet-stream"),
        ("index.html", "text/html"),
    ]:
        status, headers, _ = fetch(p, f"/web/{name}")
        assert status == 200, name
        assert headers["content-type"].split(";")[0] == mime, name
    status, headers, _ = fetch(p, "/web")
    assert status == 301 and headers["location"].endswith("/web/")
    status, _, body = fetch(p, "/web/")
    assert status == 200 and body == b"<h1>class page</h1>"
    status, headers, _ = fetch(p, "/web/sub")
    assert status == 301 and headers["location"].endswith("/web/sub/")
    status, headers, body = fetch(p, "/web/sub/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'href="file.txt"' in body and b".dotfile" not in body and b".hidden" not in body
    assert fetch(p, "/web/inner.js")[0] == 200
    assert fetch(p, "/web/nothing-here.txt")[0] == 404
    status, headers, body = fetch(p, "/web/app.js", "HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == "18"


def test_etag_and_304(served: PipacsProcess) -> None:
    p = served
    status, headers, body = fetch(p, "/web/app.js")
    etag = headers["etag"]
    assert status == 200 and etag.startswith('"') and etag.endswith('"')
    assert headers["cache-control"] == "no-cache"  # AllowCache false: always revalidate
    for sent in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        status, headers, body = fetch(p, "/web/app.js", headers={"If-None-Match": sent})
        assert status == 304 and body == b"", sent
        assert headers["etag"] == etag
    assert fetch(p, "/web/app.js", headers={"If-None-Match": '"other"'})[0] == 200
    # A changed file gets a new tag, so the old one no longer gives 304.
    (p.folder / "web" / "app.js").write_text("console.log('changed, and longer');")
    status, headers, body = fetch(p, "/web/app.js", headers={"If-None-Match": etag})
    assert status == 200 and b"changed" in body and headers["etag"] != etag


@pytest.mark.parametrize(
    "path",
    [
        "/web/../secret/secret.txt",
        "/web/%2e%2e/secret/secret.txt",
        "/web/%2E%2E/secret/secret.txt",
        "/web/%2e%2e%2fsecret%2fsecret.txt",
        "/web/sub/..%2F..%2Fsecret/secret.txt",
        "/web/sub/../../secret/secret.txt",
        "/web/..%5csecret%5csecret.txt",
        "/web/%2e%2e%2f%2e%2e%2fwebsecret.txt",
        "/web/../websecret.txt",
        "/web/escape/secret.txt",
        "/web/escape/",
        "/web/leak.txt",
        "/web/%00",
        "/web//..//secret/secret.txt",
    ],
)
def test_no_path_escapes_its_folder(served: PipacsProcess, path: str) -> None:
    status, _, body = fetch(served, path)
    assert status in (400, 403, 404), (path, status)
    assert SECRET not in body


def test_extended_form_missing_folder_and_cache(make_pipacs: Any) -> None:
    p = make_pipacs(
        Plugins=["libServeFolders.so"],
        ServeFolders={
            "AllowCache": True,
            "GenerateETag": False,
            "Folders": {"/later": "not-yet", "/docs/": "docs"},
        },
    )
    log = p.log()
    assert "not-yet does not exist" in log  # a warning, not a crash
    assert fetch(p, "/later/a.txt")[0] == 404
    (p.folder / "not-yet").mkdir()
    (p.folder / "not-yet" / "a.txt").write_text("arrived")
    status, headers, body = fetch(p, "/later/a.txt")
    assert status == 200 and body == b"arrived"
    assert "etag" not in headers  # GenerateETag false
    assert "max-age" in headers["cache-control"]  # AllowCache true
    assert fetch(p, "/docs/x")[0] == 404
    assert "serve-folders" in p.get("/plugins")


def test_a_folder_at_the_root_names_missing_files_with_one_slash(make_pipacs: Any) -> None:
    """OHIF's build put at "/" named a reload of /viewer as "//viewer" (two slashes)."""
    p = make_pipacs(Plugins=["libServeFolders.so"], ServeFolders={"/": "site"})
    (p.folder / "site").mkdir()
    (p.folder / "site" / "index.html").write_text("<p>home</p>")
    assert fetch(p, "/index.html")[0] == 200
    status, _, body = fetch(p, "/viewer")
    assert status == 404 and b"/viewer is not in the served folder" in body
    assert b"//viewer" not in body
