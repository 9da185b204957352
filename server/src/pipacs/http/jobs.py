"""Job routes: /jobs, one job, its output; and how other routes start jobs."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import bottle

from ..context import ServerContext
from ..errorcodes import code_of
from ..jobs import FAILURE, PAUSED, Job, JobFailed
from .common import flag, query_flag
from .errors import HttpError, StreamAborted
from .responses import json_response

logger = logging.getLogger(__name__)


def _timestamp(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}"


def job_json(job: Job) -> dict[str, Any]:
    """A job as Orthanc's /jobs/{id} answers it."""
    runtime = 0.0
    if job.started is not None:
        runtime = (job.completed or time.time()) - job.started
    error = job.error
    return {
        "CompletionTime": _timestamp(job.completed),
        "Content": job.content,
        "CreationTime": _timestamp(job.created),
        "EffectiveRuntime": round(runtime, 3),
        "ErrorCode": 0 if error is None else code_of(error.message),
        "ErrorDescription": "Success" if error is None else error.message,
        "ErrorDetails": "" if error is None else error.details,
        "ID": job.id,
        "Priority": job.priority,
        "Progress": int(job.progress),
        "State": job.state,
        "Timestamp": _timestamp(time.time()),
        "Type": job.type,
    }


def install(app: bottle.Bottle, context: ServerContext) -> None:
    engine = context.jobs

    def _job(job_id: str) -> Job:
        job = engine.get(job_id)
        if job is None:
            raise HttpError(404, "Unknown resource", f"no job with ID {job_id}")
        return job

    @app.get("/jobs")
    def jobs() -> str:
        items = engine.all()
        if query_flag("expand"):
            return json_response([job_json(j) for j in items])
        return json_response([j.id for j in items])

    @app.get("/jobs/<job_id>")
    def job(job_id: str) -> str:
        return json_response(job_json(_job(job_id)))

    @app.post("/jobs/<job_id>/cancel")
    def cancel(job_id: str) -> str:
        _job(job_id)
        engine.cancel(job_id)
        return json_response({})

    @app.post("/jobs/<job_id>/pause")
    def pause(job_id: str) -> str:
        _job(job_id)
        engine.pause(job_id)
        return json_response({})

    @app.post("/jobs/<job_id>/resume")
    def resume(job_id: str) -> str:
        if _job(job_id).state != PAUSED:  # as Orthanc: only a paused job resumes
            raise HttpError(400, "Bad sequence of calls", "only a paused job can be resumed")
        engine.resume(job_id)
        return json_response({})

    @app.post("/jobs/<job_id>/resubmit")
    def resubmit(job_id: str) -> str:
        if _job(job_id).state != FAILURE or not engine.resubmit(job_id):
            raise HttpError(400, "Bad sequence of calls", "only a failed job can be resubmitted")
        return json_response({})

    @app.get("/jobs/<job_id>/<key>")
    def output(job_id: str, key: str) -> Any:
        j = _job(job_id)
        out = j.output
        if key != "archive" or out is None or not hasattr(out, "open"):
            raise HttpError(404, "Unknown resource", f"job {job_id} has no output {key!r}")
        if j.state != "Success":
            raise HttpError(404, "Unknown resource", "the job has not finished")
        try:
            size, chunks = out.open()
        except OSError as e:
            # Its temporary file has gone (a cleaner of the temporary folder, a reboot):
            # Orthanc answers an output it no longer has with "Inexistent item".
            gone = isinstance(e, FileNotFoundError)
            details = (f"the archive of job {job_id} is no longer available"
                       if gone else f"the archive of job {job_id} cannot be read")
            details += f" ({e.strerror or e}: {out.path})"
            logger.error("GET %s: %s", bottle.request.path, details)
            if gone:
                raise HttpError(404, "Inexistent item", details) from None
            raise HttpError(500, "Internal error", details) from None
        bottle.response.content_type = "application/zip"
        bottle.response.content_length = size
        bottle.response.set_header("Content-Disposition", f'attachment; filename="{j.id}.zip"')
        return _guarded(chunks, job_id)


def _guarded(chunks: Iterator[bytes], job_id: str) -> Iterator[bytes]:
    """A job's output once its answer has started: a read that fails cuts the transfer."""
    try:
        yield from chunks
    except OSError as e:
        logger.error("GET /jobs/%s/archive: reading the archive failed (%s): the transfer "
                     "is cut short", job_id, e)
        raise StreamAborted(str(e)) from None
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def run(context: ServerContext, body: dict[str, Any], job: Job, *,
        synchronous_default: bool = True) -> str:
    """Start `job` as the request asks: wait and answer its content, or answer its ID."""
    synchronous = synchronous_default
    if "Synchronous" in body:
        synchronous = flag(body, "Synchronous", synchronous_default)
    if "Asynchronous" in body:
        synchronous = not flag(body, "Asynchronous", not synchronous_default)
    priority = body.get("Priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise HttpError(400, "Bad request", "Priority must be an integer")
    job.priority = priority
    engine = context.jobs
    if not synchronous:
        engine.submit(job)
        return json_response({"ID": job.id, "Path": f"/jobs/{job.id}"})
    try:
        return json_response(engine.run_sync(job))
    except JobFailed as e:
        raise HttpError(e.status, e.message, e.details) from None
