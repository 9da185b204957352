"""Search routes: /tools/find (Orthanc's query rules, via context.find) and /tools/lookup."""

from __future__ import annotations

from typing import Any

import bottle
from pydicom.datadict import keyword_for_tag, tag_for_keyword

from .. import browse
from ..context import ServerContext
from ..ids import INSTANCE, PATIENT, STUDY
from ..matching import PatternRefused, QueryError
from .common import body_bytes, body_json, flag, int_field, parse_level
from .errors import HttpError
from .responses import json_response


def keyword_of(key: str) -> str:
    """A query key as a keyword: "PatientName" or "0010,0010" (or "0010-0010")."""
    text = key.strip()
    if len(text) == 9 and text[4] in ",-|":
        try:
            tag = int(text[:4] + text[5:], 16)
        except ValueError:
            tag = -1
        kw = keyword_for_tag(tag) if tag >= 0 else ""
        if not kw:
            raise HttpError(400, "Unknown DICOM tag", f"no DICOM tag {key!r}")
        return str(kw)
    return text


def known_keyword(key: Any) -> str:
    """keyword_of, and the keyword must be in the DICOM dictionary (it goes into a dataset)."""
    kw = keyword_of(key) if isinstance(key, str) else ""
    if not kw or tag_for_keyword(kw) is None:
        raise HttpError(400, "Unknown DICOM tag", f"no DICOM tag {key!r}")
    return kw


def install(app: bottle.Bottle, context: ServerContext) -> None:

    @app.post("/tools/find")
    def find() -> str:
        body = body_json(kind=dict)
        if "Level" not in body or "Query" not in body:
            raise HttpError(400, "Bad request", 'the body needs "Level" and "Query"')
        level = parse_level(body["Level"])
        raw_query = body["Query"]
        if not isinstance(raw_query, dict):
            raise HttpError(400, "Bad request", '"Query" must be a JSON object')
        query: dict[str, str] = {}
        for key, value in raw_query.items():
            if not isinstance(value, str):
                raise HttpError(400, "Bad request", f"the value of {key} must be a string")
            query[keyword_of(key)] = value
        expand = flag(body, "Expand", False)
        limit = int_field(body, "Limit", 0)
        since = int_field(body, "Since", 0)
        case_sensitive = flag(body, "CaseSensitive", context.settings.case_sensitive_pn)
        try:
            matches, _ = context.find(level, query, case_sensitive_pn=case_sensitive,
                                      limit=since + limit if limit else 0)
        except PatternRefused as e:  # over pipacs' limits: say so
            raise HttpError(400, "Bad request", str(e)) from None
        except QueryError:
            # Orthanc answers an unusable constraint with no match, not an error.
            matches = []
        matches = matches[since:]
        if limit:
            matches = matches[:limit]
        if not expand:
            return json_response([m.public_id for m in matches])
        found = browse.resources_of(context, [m.public_id for m in matches], level)
        return json_response(browse.resources_json(context, found))

    @app.post("/tools/lookup")
    def lookup() -> str:
        try:
            value = body_bytes().decode("utf-8").strip()
        except UnicodeDecodeError:
            raise HttpError(400, "Bad request", "the body must be UTF-8 text") from None
        if not value:
            raise HttpError(400, "Bad request", "the body must hold an identifier")
        found: list[dict[str, Any]] = []
        for level in range(PATIENT, INSTANCE + 1):
            for pid in context.index.public_ids_by_uid(level, value):
                res = context.index.get(pid)
                if res is not None:
                    found.append(browse.short_json(res))
        if "*" not in value and "?" not in value and "\\" not in value:
            matches, _ = context.find(STUDY, {"AccessionNumber": value})
            for m in matches:
                res = context.index.get(m.public_id)
                entry = browse.short_json(res) if res else None
                if entry and entry not in found:
                    found.append(entry)
        return json_response(found)

