"""System routes: /system, /statistics, /changes, /tools/now."""

from __future__ import annotations

import time
from typing import Any

import bottle

from ..context import ServerContext


def install(app: bottle.Bottle, context: ServerContext) -> None:
    from .app import HttpError, json_response

    @app.get("/system")
    def system() -> str:
        return json_response(context.system_info())

    @app.get("/statistics")
    def statistics() -> str:
        return json_response(context.statistics())

    @app.get("/changes")
    def changes() -> str:
        q = bottle.request.query
        if "last" in q:
            last = context.index.last_change()
            return json_response({"Changes": [last] if last else [], "Done": True,
                                  "Last": last["Seq"] if last else 0})
        since = _int_arg(q, "since", 0, HttpError)
        limit = _int_arg(q, "limit", 100, HttpError)
        if limit <= 0 or limit > 10000:
            raise HttpError(400, "limit must be between 1 and 10000")
        items, done, last_seq = context.index.changes(since, limit)
        return json_response({"Changes": items, "Done": done, "Last": last_seq})

    @app.get("/tools/now")
    def now() -> str:
        bottle.response.content_type = "text/plain"
        return time.strftime("%Y%m%dT%H%M%S", time.gmtime())

    @app.get("/tools/now-local")
    def now_local() -> str:
        bottle.response.content_type = "text/plain"
        return time.strftime("%Y%m%dT%H%M%S", time.localtime())


def _int_arg(q: Any, name: str, default: int, error: Any) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise error(400, f"{name} must be an integer, not {raw!r}") from None
