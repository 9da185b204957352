"""Modification routes: POST /{level}/{id}/modify and /anonymize, run as jobs."""

from __future__ import annotations

from typing import Any

import bottle

from .. import browse, modify
from ..context import ServerContext
from ..ids import INSTANCE
from ..jobs import Job, JobFailed
from .common import LEVEL_ROUTE, PLURALS, body_json, resource
from .errors import HttpError
from .jobs import run


def install(app: bottle.Bottle, context: ServerContext) -> None:

    @app.post(f"/{LEVEL_ROUTE}/<pid>/<kind:re:modify|anonymize>")
    def modify_resource(plural: str, pid: str, kind: str) -> Any:
        level = PLURALS[plural]
        res = resource(context, level, pid)
        body = body_json(default={}, kind=dict)
        try:
            req = modify.parse_request(body, level, kind == "anonymize")
        except modify.ModifyError as e:
            raise HttpError(400, "Bad request", str(e)) from None
        if level == INSTANCE:
            # Orthanc answers the modified file and stores nothing.
            try:
                data = modify.modified_bytes(context, pid, req)
            except (OSError, ValueError) as e:
                raise HttpError(500, "Cannot modify the instance", str(e)) from None
            bottle.response.content_type = "application/dicom"
            return data
        instances = browse.descendants(context, res, INSTANCE)

        def work(job: Job) -> dict[str, Any]:
            def progress(n: int, total: int) -> None:
                job.check_cancelled()
                job.set_progress(n, total)

            try:
                return modify.run(context, res, req, instances, progress)
            except modify.ModifyError as e:
                raise JobFailed("Cannot modify the resource", 500, str(e)) from e

        return run(context, body, Job("ResourceModification", work))
