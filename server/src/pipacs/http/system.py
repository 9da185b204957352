"""System routes: /system, /statistics, /changes, /tools/now."""

from __future__ import annotations

import logging
import time
from typing import Any

import bottle

from .. import __version__
from ..context import ServerContext
from ..dicomfile import MAIN_TAGS
from ..ids import INSTANCE, LEVEL_NAMES, LEVEL_PLURALS, PATIENT, SERIES, STUDY
from .auth import remote_user
from .common import query_int
from .errors import HttpError
from .responses import json_response

logger = logging.getLogger(__name__)

LOG_LEVELS = {"default": logging.WARNING, "verbose": logging.INFO, "trace": logging.DEBUG}


def system_json(context: ServerContext) -> dict[str, Any]:
    """GET /system, as Orthanc answers it."""
    s = context.settings
    return {
        "ApiVersion": 18,
        "CheckRevisions": False,
        "DatabaseBackendPlugin": None,
        "DatabaseVersion": context.index.schema_version(),
        "DicomAet": s.dicom_aet,
        "DicomPort": s.dicom_port,
        "HttpPort": s.http_port,
        "IsHttpServerSecure": s.ssl_enabled
        or not s.remote_access_allowed
        or s.authentication_enabled,
        "MainDicomTags": {LEVEL_NAMES[lv]: ";".join(MAIN_TAGS[lv]) for lv in range(4)},
        "MaximumPatientCount": s.maximum_patient_count,
        "MaximumStorageSize": s.maximum_storage_size,
        "Name": s.name,
        "OverwriteInstances": s.overwrite_instances,
        "PluginsEnabled": bool(s.builtin_plugins),
        "ReadOnly": False,
        "StorageAreaPlugin": None,
        "StorageCompression": s.storage_compression,
        "UserMetadata": dict(s.user_metadata),
        "Version": __version__,
        "PipacsVersion": __version__,
        "HasLabels": False,
    }


def statistics_json(context: ServerContext) -> dict[str, Any]:
    """GET /statistics, as Orthanc answers it."""
    counts = context.index.counts()
    compressed, size = context.index.total_sizes()
    return {
        "CountPatients": counts[PATIENT],
        "CountStudies": counts[STUDY],
        "CountSeries": counts[SERIES],
        "CountInstances": counts[INSTANCE],
        "TotalDiskSize": str(compressed),
        "TotalDiskSizeMB": compressed // (1024 * 1024),
        "TotalUncompressedSize": str(size),
        "TotalUncompressedSizeMB": size // (1024 * 1024),
    }


def install(app: bottle.Bottle, context: ServerContext) -> None:
    @app.get("/system")
    def system() -> str:
        return json_response(system_json(context))

    @app.get("/statistics")
    def statistics() -> str:
        return json_response(statistics_json(context))

    @app.get("/changes")
    def changes() -> str:
        q = bottle.request.query
        if "last" in q:
            last = context.index.last_change()
            return json_response({"Changes": [last] if last else [], "Done": True,
                                  "Last": last["Seq"] if last else context.index.last_change_seq()})
        since = query_int("since", 0)
        limit = query_int("limit", 100)
        if limit <= 0 or limit > 10000:
            raise HttpError(400, "Parameter out of range", "limit must be between 1 and 10000")
        items, done, last_seq = context.index.changes(since, limit)
        return json_response({"Changes": items, "Done": done, "Last": last_seq})

    @app.get("/tools/now")
    def now() -> str:
        bottle.response.content_type = "text/plain"
        return time.strftime("%Y%m%dT%H%M%S", time.gmtime())

    @app.get("/exports")
    def exports() -> str:
        since = query_int("since", 0)
        limit = min(query_int("limit", 100), 10000)
        rows, done = context.index.exports(since, limit)
        items = []
        for seq, level, pid, target, patient, study, series, sop, date in rows:
            item = {"Date": date, "ID": pid, "Path": f"/{LEVEL_PLURALS[level]}/{pid}",
                    "PatientID": patient, "RemoteModality": target,
                    "ResourceType": LEVEL_NAMES[level], "Seq": seq}
            for key, value in (("StudyInstanceUID", study), ("SeriesInstanceUID", series),
                               ("SOPInstanceUID", sop)):
                if value:
                    item[key] = value
            items.append(item)
        last = items[-1]["Seq"] if items else since
        return json_response({"Done": done, "Exports": items, "Last": last})

    @app.get("/plugins")
    def plugins() -> str:
        return json_response(sorted(context.plugins.enabled))

    @app.get("/tools/log-level")
    def get_log_level() -> str:
        bottle.response.content_type = "text/plain"
        level = logging.getLogger().getEffectiveLevel()
        return "trace" if level <= logging.DEBUG else "verbose" if level <= logging.INFO \
            else "default"

    @app.put("/tools/log-level")
    def put_log_level() -> str:
        name = bottle.request.body.read().decode("utf-8", "replace").strip()
        if name not in LOG_LEVELS:
            raise HttpError(400, "Parameter out of range",
                            f'Verbosity can be "default", "verbose" or "trace": {name}')
        logging.getLogger().setLevel(LOG_LEVELS[name])
        logging.getLogger("pynetdicom").setLevel(
            logging.DEBUG if name == "trace" else logging.WARNING)
        bottle.response.content_type = "text/plain"
        return ""

    def stop(restart: bool) -> str:
        # Exit code 0 after a stop, as Orthanc: under systemd, Restart=always brings pipacs
        # back (README); the log says who asked.
        if not context.request_shutdown(restart=restart):
            raise HttpError(500, "Not available", "this server cannot be "
                            f"{'restarted' if restart else 'stopped'} from here")
        user = remote_user()
        logger.warning("%s requested over HTTP by %s%s", "restart" if restart else "stop",
                       bottle.request.environ.get("REMOTE_ADDR"), f" (user {user!r})" * bool(user))
        return json_response({})

    @app.post("/tools/shutdown")
    def shutdown() -> str:
        return stop(restart=False)

    @app.post("/tools/reset")
    def reset() -> str:
        return stop(restart=True)

    @app.get("/tools/now-local")
    def now_local() -> str:
        bottle.response.content_type = "text/plain"
        return time.strftime("%Y%m%dT%H%M%S", time.localtime())

