"""Helpers shared by the REST modules: request bodies, arguments and resource lookup."""

from __future__ import annotations

import json
from typing import Any

import bottle

from ..context import ServerContext
from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from ..index import Resource
from .crosssite import json_type_required
from .errors import HttpError

PLURALS = {"patients": PATIENT, "studies": STUDY, "series": SERIES, "instances": INSTANCE}
LEVEL_WORDS = {"patient": PATIENT, "study": STUDY, "series": SERIES, "instance": INSTANCE,
               "image": INSTANCE}
LEVEL_ROUTE = "<plural:re:patients|studies|series|instances>"
# The largest integer the index (SQLite) takes: larger limits, offsets and numbers are 400s.
MAX_INT = 2**63 - 1


def parse_level(value: Any) -> int:
    """A level named as Orthanc's clients do ("Study", "STUDY", "Instance", "Image")."""
    level = LEVEL_WORDS.get(str(value).strip().lower()) if isinstance(value, str) else None
    if level is None:
        raise HttpError(400, f"unknown resource level {value!r}",
                        'Level must be "Patient", "Study", "Series" or "Instance"')
    return level


# JSON bodies (queries, lists of IDs, job options) larger than this are refused with a 413
# before they are read into memory; DICOM uploads are not JSON and have no such limit here.
JSON_BODY_LIMIT = 32 * 1024 * 1024


def body_bytes(limit: int | None = None) -> bytes:
    """The request body; with `limit`, a larger one is a 413 (and is not read)."""
    if limit is None:
        return bottle.request.body.read()
    if bottle.request.content_length > limit:
        raise HttpError(413, "Request Entity Too Large",
                        f"the body ({bottle.request.content_length} bytes) is larger than "
                        f"{limit} bytes")
    raw = bottle.request.body.read(limit + 1)
    if len(raw) > limit:
        raise HttpError(413, "Request Entity Too Large", f"the body is larger than {limit} bytes")
    return raw


def body_json(*, default: Any = None, kind: type | tuple[type, ...] | None = None) -> Any:
    """The request body as JSON; an empty body gives `default`; malformed JSON is a 400.
    From a web page, a body that does not say it is JSON is a 415 (crosssite.py)."""
    refused = json_type_required(bottle.request.environ)
    if refused:
        raise HttpError(415, "Unsupported Media Type", refused)
    raw = body_bytes(JSON_BODY_LIMIT)
    if not raw.strip():
        if default is not None:
            return default
        raise HttpError(400, "Bad request", "the body must contain JSON")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise HttpError(400, "Bad request", f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise HttpError(400, "Bad request", "the body's JSON is nested too deeply") from None
    if kind is not None and not isinstance(value, kind):
        raise HttpError(400, "Bad request", f"the body must contain a JSON "
                        f"{'object' if kind is dict else 'value of the right type'}")
    return value


def flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise HttpError(400, "Bad request", f"{key} must be true or false")
    return value


def int_field(body: dict[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT:
        raise HttpError(400, "Bad request", f"{key} must be an integer from 0 to {MAX_INT}")
    return value


def query_flag(name: str) -> bool:
    """A query argument used as a flag: present and not "false"/"0"."""
    q = bottle.request.query
    if name not in q:
        return False
    return q.get(name, "").lower() not in ("false", "0")


def query_int(name: str, default: int, maximum: int = MAX_INT) -> int:
    """A non-negative integer query argument, `default` when absent or empty; 400 otherwise."""
    return int_value(bottle.request.query.get(name), name, default, 0, maximum)


def int_value(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    """An integer argument from `low` to `high`, `default` when absent or empty; else a 400
    naming the argument (and quoting at most 40 characters of what was sent)."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise HttpError(400, "Bad request",
                        f"{name} must be an integer, not {raw[:40]!r}") from None
    if not low <= value <= high:
        raise HttpError(400, "Parameter out of range",
                        f"{name} must be an integer from {low} to {high}, not {raw[:40]!r}")
    return value


def resource(context: ServerContext, level: int, public_id: str) -> Resource:
    res = context.index.get(public_id, level)
    if res is None:
        word = ("patient", "study", "series", "instance")[level]
        raise HttpError(404, "Unknown resource", f"no {word} with ID {public_id}")
    return res


def any_resource(context: ServerContext, public_id: str) -> Resource:
    res = context.index.get(str(public_id))
    if res is None:
        raise HttpError(404, "Unknown resource", f"no resource with ID {public_id}")
    return res


def resources_of_body(context: ServerContext, value: Any) -> list[Resource]:
    """Resources named by a body: an ID, a list of IDs, or {"Resources": [...]}."""
    if isinstance(value, dict):
        value = value.get("Resources", [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HttpError(400, "Bad request", "expected a resource ID or a list of resource IDs")
    return [any_resource(context, v.strip()) for v in value]
