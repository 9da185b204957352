"""Cross-site requests: a browser's state-changing request from another site is refused.

A page on any site can make the browser of a user of pipacs send it a "simple" request
(POST with a text/plain, form or multipart body) without asking pipacs first, and the
browser adds the Basic credentials it has cached for pipacs. So a request that changes state
(any method but GET, HEAD and OPTIONS; no GET route of pipacs changes state) is refused with
a 403 when its Origin, or lacking one its Referer, names another site than the Host it was
sent to. Browsers send Origin with every POST, PUT and DELETE; clients that are not browsers
(curl, pyorthanc, dcmtk's tools, scripts) send neither and are not affected.

A browser's JSON body must also say it is JSON (`json_type_required`): a cross-site request
with `application/json` is not simple, so a browser asks pipacs first (CORS) and pipacs,
which answers no CORS headers, never gets it. Other clients may send any type, as Orthanc
accepts (`curl -d` sends application/x-www-form-urlencoded).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import bottle

logger = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    """(lower-case host, port) of "host[:port]", the port defaulting to the scheme's."""
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None or parts.username is not None or parts.path:
        return None
    return parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS.get(scheme, 0)


def request_source(env: dict[str, Any]) -> str:
    """The site a browser says the request comes from: Origin, else Referer ("" if neither)."""
    return str(env.get("HTTP_ORIGIN") or env.get("HTTP_REFERER") or "")


def same_site(source: str, host: str) -> bool:
    """Whether `source` (an Origin or a Referer URL) names the server at `host` (the Host
    header). The Host header has no scheme: a same-origin page used the scheme of its own
    origin, so a Host without a port means that scheme's default port."""
    try:
        parts = urlsplit(source)
    except ValueError:
        return False
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.netloc:
        return False  # "null" (sandboxed frames, file:// pages), or not a web page's URL
    origin = _host_port(parts.netloc.rpartition("@")[2], scheme)
    target = _host_port(host, scheme)
    return origin is not None and origin == target


def origin_check() -> Callable[[dict[str, Any]], None]:
    """The check every request passes first: a foreign browser's state-changing request is a
    403 naming its origin."""

    def check(env: dict[str, Any]) -> None:
        if env.get("REQUEST_METHOD", "GET").upper() in SAFE_METHODS:
            return
        source = request_source(env)
        if not source or same_site(source, str(env.get("HTTP_HOST", ""))):
            return
        shown = source[:100]
        logger.warning("HTTP %s %s from %s refused: a cross-site request from %r",
                       env.get("REQUEST_METHOD"), env.get("PATH_INFO"), env.get("REMOTE_ADDR"),
                       shown)
        raise bottle.HTTPError(403, f"Cross-site request refused: {shown!r} is not the site "
                                    f"of this server ({str(env.get('HTTP_HOST', ''))[:100]!r})")

    return check


def json_type_required(env: dict[str, Any]) -> str | None:
    """Why a browser's JSON body is refused (its type is not JSON), else None."""
    if "HTTP_ORIGIN" not in env:
        return None  # not a browser: any type, as Orthanc
    media = str(env.get("CONTENT_TYPE", "")).partition(";")[0].strip().lower()
    if media == "application/json" or (media.startswith("application/")
                                        and media.endswith("+json")):
        return None
    return (f"a request from a web page must send its JSON body as application/json, "
            f"not {media[:100] or 'without a type'!r}")
