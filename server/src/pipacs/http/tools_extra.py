"""Orthanc's /tools settings routes: encoding, syntaxes, log levels, metrics, UIDs, conformance."""

from __future__ import annotations

import fnmatch
import json
import logging
import uuid
from typing import Any

import bottle
import pydicom
from pydicom.uid import generate_uid
from pynetdicom import _config as pynetdicom_config

from ..config.keys import DEFAULT_ENCODINGS
from ..context import ServerContext
from ..dicom.contexts import OPTIONAL_SYNTAXES, UNCOMPRESSED, accepted_syntaxes, build_contexts
from .common import LEVEL_ROUTE, PLURALS, body_bytes, resource
from .errors import HttpError
from .responses import json_response, text_response
from .system import LOG_LEVELS, statistics_json

# What GET /tools lists: every /tools/<name> route of pipacs (Orthanc lists its own).
TOOLS = ["accepted-transfer-syntaxes", "bulk-anonymize", "bulk-content", "bulk-delete",
         "bulk-modify", "create-archive", "create-dicom", "create-media",
         "create-media-extended", "default-encoding", "dicom-conformance", "dicom-echo",
         "execute-script", "find", "generate-uid", "invalidate-tags", "log-level",
         "log-level-dicom", "log-level-generic", "log-level-http", "log-level-jobs",
         "log-level-lua", "log-level-plugins", "log-level-sqlite", "lookup", "metrics",
         "metrics-prometheus", "now", "now-local", "reconstruct", "reset", "shutdown",
         "unknown-sop-class-accepted"]

# Orthanc's log categories and the loggers that write them in pipacs (/tools/execute-script
# belongs to the Lua plugin, which answers 403 when Lua is off, as Orthanc).
LOG_CATEGORIES = {
    "dicom": ("pipacs.dicom", "pynetdicom"),
    "generic": ("pipacs",),
    "http": ("pipacs.http", "waitress"),
    "jobs": ("pipacs.jobs",),
    "lua": ("pipacs.plugins.lua",),
    "plugins": ("pipacs.plugins",),
    "sqlite": ("pipacs.index",),
}
UID_ROOTS = {"patient": "PatientID", "study": "StudyInstanceUID",
             "series": "SeriesInstanceUID", "instance": "SOPInstanceUID"}
# Orthanc's level names from a Python logging level, and back.
LEVEL_OF = {logging.DEBUG: "trace", logging.INFO: "verbose"}
ALL_SYNTAXES = [str(u) for u in UNCOMPRESSED] + [u for uids in OPTIONAL_SYNTAXES.values()
                                                 for u in uids]


def unsupported(what: str, why: str) -> HttpError:
    """The answer of an operation pipacs deliberately does not offer (listed in README)."""
    return HttpError(501, "Not implemented", f"not supported: {what} ({why}; see README, "
                     "\"Orthanc operations pipacs does not offer\")")


def level_name(level: int) -> str:
    return "trace" if level <= logging.DEBUG else "verbose" if level <= logging.INFO \
        else "default"


def boolean_body() -> bool:
    """A body "0"/"1"/"true"/"false", as Orthanc's PUT of a boolean setting."""
    text = body_bytes(1024).decode("utf-8", "replace").strip().lower()
    if text not in ("0", "1", "true", "false"):
        raise HttpError(400, "Bad file format", "Boolean value expected")
    return text in ("1", "true")


def syntaxes_of_body() -> list[str]:
    """PUT /tools/accepted-transfer-syntaxes: a JSON string or list of UIDs, "*" and "?"
    wildcards allowed."""
    try:
        value = json.loads(body_bytes(65536))
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "Bad file format", "expected a JSON string or list") from None
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise HttpError(400, "Bad file format", "expected a JSON string or list of strings")
    chosen: list[str] = []
    for pattern in patterns:
        # a pattern that matches no known syntax adds none (Orthanc does the same)
        found = [u for u in ALL_SYNTAXES if fnmatch.fnmatchcase(u, pattern.strip())]
        chosen.extend(u for u in found if u not in chosen)
    return chosen


def accepted(context: ServerContext, chosen: list[str] | None) -> list[str]:
    """The transfer syntaxes the SCP accepts for storage now, sorted as Orthanc lists them:
    the ones last PUT (`chosen`), else those of the <Name>TransferSyntaxAccepted keys."""
    uids = list(chosen) if chosen is not None else accepted_syntaxes(context.settings)
    return sorted(uids, key=lambda u: [int(p) for p in u.split(".")])


def set_accepted(context: ServerContext, uids: list[str]) -> None:
    """Accept exactly these syntaxes for storage from now on (Orthanc's PUT). The groups of
    <Name>TransferSyntaxAccepted keys follow (on when any of their UIDs is chosen). New
    associations see the change: the DICOM server takes the new presentation contexts on
    "SettingsChanged"; query/retrieve contexts keep the uncompressed syntaxes."""
    for attr, group in OPTIONAL_SYNTAXES.items():
        setattr(context.settings, attr, any(u in uids for u in group))
    storage = accepted_syntaxes(context.settings)
    order = [u for u in storage if u in uids] + [u for u in uids if u not in storage]
    contexts = build_contexts(context.settings)
    for cx in contexts:
        if list(cx.transfer_syntax) == storage:
            cx.transfer_syntax = list(order)
    context._emit("SettingsChanged", {"Contexts": contexts})


def conformance(context: ServerContext, chosen: list[str] | None) -> str:
    """A conformance statement made from what the SCP accepts now."""
    s = context.settings
    lines = [f"DICOM conformance statement of pipacs (AET {s.dicom_aet}, port {s.dicom_port})",
             "", "Services as SCP (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET, worklist C-FIND):"]
    for cx in build_contexts(s):
        uid = str(cx.abstract_syntax)
        lines.append(f"  {uid:40} {pydicom.uid.UID(uid).name}")
    lines += ["", "Transfer syntaxes accepted for storage:"]
    lines += [f"  {u:40} {pydicom.uid.UID(u).name}" for u in accepted(context, chosen)]
    unknown = "yes" if s.unknown_sop_class_accepted else "no"
    lines += ["", f"Unknown SOP classes accepted: {unknown}", ""]
    return "\n".join(lines)


def prometheus(context: ServerContext) -> str:
    stats = statistics_json(context)
    values = {
        "orthanc_count_patients": stats["CountPatients"],
        "orthanc_count_studies": stats["CountStudies"],
        "orthanc_count_series": stats["CountSeries"],
        "orthanc_count_instances": stats["CountInstances"],
        "orthanc_disk_size_mb": int(stats["TotalDiskSize"]) / (1024 * 1024),
        "orthanc_uncompressed_size_mb": int(stats["TotalUncompressedSize"]) / (1024 * 1024),
    }
    return "".join(f"{k} {v:g}\n" for k, v in values.items())


def install(app: bottle.Bottle, context: ServerContext) -> None:
    s = context.settings
    state: dict[str, Any] = {"metrics": True, "syntaxes": None,
                             "lua": level_name(logging.getLogger().getEffectiveLevel())}

    @app.get("/tools")
    def tools() -> str:
        return json_response(TOOLS)

    @app.get("/tools/default-encoding")
    def get_encoding() -> str:
        return text_response(s.default_encoding)

    @app.put("/tools/default-encoding")
    def put_encoding() -> str:
        name = body_bytes(1024).decode("utf-8", "replace").strip()
        match = next((e for e in DEFAULT_ENCODINGS if e.lower() == name.lower()), None)
        if match is None:
            raise HttpError(400, "Parameter out of range",
                            f"unknown encoding {name[:40]!r}: one of "
                            f"{', '.join(DEFAULT_ENCODINGS)}")
        s.default_encoding = match
        return text_response(match)

    @app.get("/tools/accepted-transfer-syntaxes")
    def get_syntaxes() -> str:
        return json_response(accepted(context, state["syntaxes"]))

    @app.put("/tools/accepted-transfer-syntaxes")
    def put_syntaxes() -> str:
        state["syntaxes"] = syntaxes_of_body()
        set_accepted(context, state["syntaxes"])
        return json_response(accepted(context, state["syntaxes"]))

    @app.get("/tools/unknown-sop-class-accepted")
    def get_unknown() -> str:
        return text_response("1" if s.unknown_sop_class_accepted else "0")

    @app.put("/tools/unknown-sop-class-accepted")
    def put_unknown() -> str:
        s.unknown_sop_class_accepted = boolean_body()
        pynetdicom_config.UNRESTRICTED_STORAGE_SERVICE = s.unknown_sop_class_accepted
        return text_response("")

    @app.get("/tools/log-level-<category>")
    def get_category_level(category: str) -> str:
        loggers = LOG_CATEGORIES.get(category)
        if loggers is None:
            raise HttpError(404, "Unknown resource", f"no log category {category!r}")
        if not loggers:
            return text_response(state["lua"])
        return text_response(level_name(logging.getLogger(loggers[0]).getEffectiveLevel()))

    @app.put("/tools/log-level-<category>")
    def put_category_level(category: str) -> str:
        loggers = LOG_CATEGORIES.get(category)
        if loggers is None:
            raise HttpError(404, "Unknown resource", f"no log category {category!r}")
        name = body_bytes(1024).decode("utf-8", "replace").strip()
        if name not in LOG_LEVELS:
            raise HttpError(400, "Parameter out of range",
                            f'Verbosity can be "default", "verbose" or "trace": {name[:40]}')
        for logger_name in loggers:
            logging.getLogger(logger_name).setLevel(LOG_LEVELS[name])
        if not loggers:
            state["lua"] = name
        return text_response("")

    @app.get("/tools/metrics")
    def get_metrics() -> str:
        return text_response("1" if state["metrics"] else "0")

    @app.put("/tools/metrics")
    def put_metrics() -> str:
        state["metrics"] = boolean_body()
        return text_response("")

    @app.get("/tools/metrics-prometheus")
    def metrics_prometheus() -> str:
        bottle.response.content_type = "text/plain; version=0.0.4"
        return prometheus(context) if state["metrics"] else ""

    @app.get("/tools/generate-uid")
    def generate() -> str:
        level = bottle.request.query.get("level", "").lower()
        if level not in UID_ROOTS:
            raise HttpError(400, "Bad request",
                            'level must be "patient", "study", "series" or "instance"')
        if level == "patient":  # Orthanc makes patient IDs from a UUID too
            return text_response(str(uuid.uuid4()))
        return text_response(str(generate_uid()))

    @app.get("/tools/dicom-conformance")
    def dicom_conformance() -> str:
        return text_response(conformance(context, state["syntaxes"]))

    @app.post("/tools/reconstruct")
    @app.post(f"/{LEVEL_ROUTE}/<pid>/reconstruct")
    def reconstruct(plural: str = "", pid: str = "") -> str:
        if plural:
            resource(context, PLURALS[plural], pid)
        raise unsupported("reconstruct", "pipacs' main tags are always those of the stored "
                          "files; `pipacs --reindex` rebuilds the whole index from them")

    @app.get("/plugins/explorer.js")
    def explorer_js() -> str:
        # The plugins' additions to Orthanc Explorer: pipacs' plugins add none (and pipacs
        # has no Orthanc Explorer), so this is empty, as Orthanc's without such plugins.
        bottle.response.content_type = "application/javascript"
        return ""

    @app.delete("/<table:re:changes|exports>")
    def clear_log(table: str) -> str:
        context.index.clear_log(table)
        return text_response("")

    @app.post("/tools/invalidate-tags")
    def invalidate_tags() -> str:
        # Orthanc drops its cached tags (DICOM-as-JSON attachments) so that they are read
        # again from the files; pipacs keeps no such cache: every tags answer reads the file.
        return text_response("")
