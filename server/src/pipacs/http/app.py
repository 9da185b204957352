"""The HTTP application: create_app(context) assembles the Bottle routes and access control."""

from __future__ import annotations

import base64
import functools
import gzip
import hmac
import ipaddress
import json
import logging
from typing import Any

import bottle

from .. import tls
from ..context import ServerContext
from ..index import DatabaseError
from ..jobs import STORAGE_FULL, disk_full
from . import system

logger = logging.getLogger(__name__)


class HttpError(Exception):
    """An error answered to the client with Orthanc's JSON shape."""

    def __init__(self, status: int, message: str, details: str = ""):
        self.status = status
        self.message = message
        self.details = details
        super().__init__(message)


class StreamAborted(Exception):
    """A streamed answer that failed after its first byte: its status is sent and cannot
    change, so the connection is cut (waitress then sends no final chunk) and the client
    sees a truncated transfer. The route has logged why; waitress logs no traceback."""


class _QuietAbort(logging.Filter):
    """Drops waitress' "Exception while serving" traceback for a StreamAborted."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamAborted))


def _quiet_aborts() -> None:
    waitress_log = logging.getLogger("waitress")
    if not any(isinstance(f, _QuietAbort) for f in waitress_log.filters):
        waitress_log.addFilter(_QuietAbort())


def storage_full(details: str) -> HttpError:
    """507, Orthanc's answer when a disk is full; `details` names the disk."""
    return HttpError(507, STORAGE_FULL, details)


@functools.lru_cache(maxsize=1024)
def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%")[0]).is_loopback
    except ValueError:
        return False


def create_app(context: ServerContext) -> bottle.Bottle:
    app = bottle.Bottle()
    app.uninstall(True)  # no dict-to-JSON or template plugins: one wrapper per route (wrap)
    s = context.settings

    # Access control is decided once here, not on every request: with RemoteAccessAllowed
    # false the server only listens on loopback (and the TLS front refuses other peers), so
    # the address check below is a second line of defence and is cached per address.
    check_remote = not s.remote_access_allowed
    check_auth = s.authentication_enabled
    credentials = _credential_headers(s.registered_users) if check_auth else {}
    challenge = {"WWW-Authenticate": f'Basic realm="{s.name}"'}
    router_match = app.router.match

    @app.hook("before_request")
    def _before() -> None:
        env = bottle.request.environ
        if check_remote and not _is_loopback(tls.real_address(context, env)):
            raise bottle.HTTPResponse(status=403, body="remote access is not allowed\n")
        if check_auth:
            header = env.get("HTTP_AUTHORIZATION", "")
            if not _authorised(header, credentials, s.registered_users):
                if header:  # a browser's first try comes without: nothing to report
                    _log_refusal(header, s.registered_users, env)
                raise bottle.HTTPResponse(status=401, body="authentication required\n",
                                          headers=challenge)
        # Orthanc ignores empty path segments ("/patients/", "//system"); clients such as
        # orthanc-api-client rely on it. Routes that end with "/" on purpose still match first.
        path = env.get("PATH_INFO", "/")
        if len(path) > 1 and ("//" in path or path.endswith("/")):
            try:
                router_match(env)
            except bottle.HTTPError:
                env["PATH_INFO"] = "/" + "/".join(p for p in path.split("/") if p)

    def error_handler(err: bottle.HTTPError) -> str:
        bottle.response.content_type = "application/json"
        return json.dumps(error_body(err.status_code, str(err.body or err.status_line),
                                     bottle.request), indent=3)

    for code in (400, 401, 403, 404, 405, 415, 500, 503, 507):
        app.error(code)(error_handler)

    def error(e: HttpError) -> str:
        bottle.response.status = e.status
        bottle.response.content_type = "application/json"
        body = error_body(e.status, e.message, bottle.request, e.details)
        return json.dumps(body, indent=3) if s.http_describe_errors else ""

    def wrap(callback: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                result = callback(*args, **kwargs)
            except HttpError as e:
                return error(e)
            except (DatabaseError, OSError) as e:
                # A full disk, wherever a route writes (the index's WAL, a worklist file, a
                # temporary file): 507, no traceback. The index's write transaction has been
                # rolled back (Index.write). Any other error stays a 500 with its traceback.
                full = disk_full(context, e)
                if full is None:
                    raise
                logger.error("HTTP %s %s: %s", bottle.request.method, bottle.request.path, full)
                return error(storage_full(full))
            if s.http_compression_enabled:
                return _maybe_gzip(result)
            return result
        return wrapper

    app.install(wrap)
    _quiet_aborts()
    # The REST modules import this one (HttpError, json_response): load them once it exists.
    from . import archives, instances, jobs, modification, networking, resources, tools

    system.install(app, context)
    resources.install(app, context)
    instances.install(app, context)
    archives.install(app, context)
    tools.install(app, context)
    jobs.install(app, context)
    modification.install(app, context)
    networking.install(app, context)
    from .. import plugins

    context.enabled_plugins = plugins.install_all(app, context)  # type: ignore[attr-defined]
    from ..plugins import welcome

    welcome.install(app, context)  # after the plugins: it links what they serve
    return app


# JSON answers shorter than this are sent as they are: gzip would not save a packet.
GZIP_MINIMUM = 1024


def _maybe_gzip(result: Any) -> Any:
    """gzip a JSON answer when the client accepts it; DICOM and other bytes go as they are."""
    if not isinstance(result, str | bytes) or len(result) < GZIP_MINIMUM:
        return result
    if not bottle.response.content_type.startswith("application/json"):
        return result
    accepted = bottle.request.headers.get("Accept-Encoding", "")
    if "gzip" not in [a.split(";")[0].strip().lower() for a in accepted.split(",")]:
        return result
    data = result.encode("utf-8") if isinstance(result, str) else result
    bottle.response.set_header("Content-Encoding", "gzip")
    bottle.response.add_header("Vary", "Accept-Encoding")
    return gzip.compress(data, compresslevel=5)


# Orthanc's error codes for the messages the REST modules use.
ORTHANC_CODES = {"Bad file format": 15, "Parameter out of range": 3, "Inexistent item": 7,
                 "Unknown resource": 17, "Bad request": 8, "Bad sequence of calls": 6,
                 "Error in the network protocol": 9, "Unknown DICOM tag": 27,
                 "Incompatible image format": 23, "Not implemented": 2,
                 "Unknown modality": 32, "Cannot modify a system metadata": 8,
                 "Inexistent file": 13, "The file storage is full": 19}


def error_body(status: int, message: str, request: Any, details: str = "") -> dict[str, Any]:
    body = {
        "HttpError": bottle.HTTP_CODES.get(status, "Error"),
        "HttpStatus": status,
        "Message": message,
        "Method": request.method,
        "OrthancError": message,
        "OrthancStatus": ORTHANC_CODES.get(message) or {
            400: 8, 401: 8, 403: 8, 404: 17, 415: 8, 507: 19}.get(status, -1),
        "Uri": request.path,
    }
    if details:
        body["Details"] = details
    return body


def _credential_headers(users: dict[str, str]) -> dict[str, str]:
    """The Authorization value each registered user's client sends, mapped to the user."""
    return {"Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(): user
            for user, password in users.items()}


def _log_refusal(header: str, users: dict[str, str], env: dict[str, Any]) -> None:
    """Log a refused login: the client and a registered user's name, never what was typed
    as a password (nor an unknown user name, which may be a password typed in that field)."""
    user = ""
    if header.startswith("Basic "):
        try:
            user = base64.b64decode(header[6:]).decode("utf-8").partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            pass
    who = f"user {user!r}" if user in users else "an unknown user"
    logger.info("HTTP %s %s from %s: wrong credentials for %s", env.get("REQUEST_METHOD"),
                env.get("PATH_INFO"), env.get("REMOTE_ADDR"), who)


def _authorised(header: str, known: dict[str, str], users: dict[str, str]) -> bool:
    """HTTP Basic: the usual encoding is a dictionary hit; anything else is decoded."""
    if header in known:
        return True
    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    expected = users.get(user)
    return expected is not None and hmac.compare_digest(expected.encode(), password.encode())


# JSON answers are compact: Python's json has a C encoder only for compact output, and
# indenting was 40 % of GET /changes?last and 44 % of /studies?expand. Clients parse JSON;
# only error bodies keep Orthanc's indentation, for the person reading curl's output.
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode


def json_response(data: Any) -> str:
    bottle.response.content_type = "application/json"
    return _encode(data)
