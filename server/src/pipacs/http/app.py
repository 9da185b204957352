"""The HTTP application: create_app(context) assembles the Bottle routes and access control."""

from __future__ import annotations

import json
import logging
from typing import Any

import bottle

from .. import plugins
from ..context import ServerContext
from ..index import DatabaseError
from ..jobs import disk_full
from ..plugins import welcome
from . import (
    archives,
    attachments,
    bulk,
    createdicom,
    instances,
    jobs,
    modification,
    modules,
    networking,
    networking_extra,
    pixels,
    resources,
    system,
    tools,
    tools_extra,
)
from .access import RoutePermission
from .auth import access_check, challenge
from .crosssite import origin_check
from .errors import HttpError, error_body, quiet_aborts, storage_full
from .responses import maybe_gzip

logger = logging.getLogger(__name__)

# The REST resource families, registered in this order (as Orthanc's RegisterResources).
FAMILIES = (system, resources, instances, archives, tools, jobs, modification, networking,
            tools_extra, pixels, networking_extra, attachments, bulk,
            createdicom, modules)


def method_override(env: dict[str, Any]) -> None:
    """Orthanc's X-HTTP-Method-Override: a POST carrying it is a PUT or a DELETE (for
    clients that can only POST); any other value is a 400. Done before access control."""
    override = env.get("HTTP_X_HTTP_METHOD_OVERRIDE")
    if override is None or env.get("REQUEST_METHOD") != "POST":
        return
    if override.strip().upper() not in ("PUT", "DELETE"):
        raise bottle.HTTPError(400, "X-HTTP-Method-Override must be PUT or DELETE")
    env["REQUEST_METHOD"] = override.strip().upper()


def create_app(context: ServerContext) -> bottle.Bottle:
    app = bottle.Bottle()
    app.uninstall(True)  # no dict-to-JSON or template plugins: one wrapper per route (wrap)
    s = context.settings
    check_access = access_check(context)
    check_origin = origin_check()
    router_match = app.router.match

    @app.hook("before_request")
    def _before() -> None:
        env = bottle.request.environ
        method_override(env)
        check_access(env)
        check_origin(env)
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
                return maybe_gzip(result)
            return result
        return wrapper

    app.install(wrap)
    app.install(RoutePermission(context, challenge(context)))  # who may do what (access.py)
    quiet_aborts()
    for family in FAMILIES:
        family.install(app, context)
    context.plugins.enabled = plugins.install_all(app, context)
    welcome.install(app, context)  # after the plugins: it links what they serve
    return app
