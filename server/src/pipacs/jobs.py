"""Jobs: long operations run by a few worker threads, listed at /jobs as Orthanc does."""

from __future__ import annotations

import errno
import functools
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errorcodes import STORAGE_FULL, code_of
from .storage import StorageFullError

logger = logging.getLogger(__name__)

PENDING, RUNNING, SUCCESS, FAILURE, PAUSED = "Pending", "Running", "Success", "Failure", "Paused"


def disk_full(context: Any, e: BaseException) -> str | None:
    """When `e` means a disk is full, what to tell the user (naming the disk); else None.

    Full: SQLite's SQLITE_FULL ("database or disk is full"), an SQLite I/O error while the
    index's disk has no room, and the filesystem's ENOSPC or EDQUOT. Other SQLite errors
    (a locked or corrupt index) are not: they stay internal errors."""
    if isinstance(e, sqlite3.Error):
        code = getattr(e, "sqlite_errorcode", None)
        if not (code == sqlite3.SQLITE_FULL or "database or disk is full" in str(e)
                or (code is not None and code & 0xFF == sqlite3.SQLITE_IOERR
                    and context.index_is_full(e))):
            return None
        return f"no space left for the index in {context.settings.index_dir} ({e})"
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        if isinstance(e, StorageFullError):  # its message names the disk already
            return str(e.strerror)
        where = f" writing {e.filename}" if e.filename else ""
        return f"no space left on the device{where} ({e.strerror or e})"
    return None


class JobFailed(Exception):
    """A job's work failed; `status` is the HTTP status a synchronous caller gets."""

    def __init__(self, message: str, status: int = 500, details: str = ""):
        self.message = message
        self.status = status
        self.details = details
        super().__init__(message)


class JobCancelled(Exception):
    pass


def _timestamp(t: float | None) -> str | None:
    if t is None:
        return None
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}"


@dataclass
class Job:
    """One job: `work(job)` does it, updates `progress` and returns the job's Content."""

    type: str
    work: Callable[[Job], dict[str, Any]]
    priority: int = 0
    description: str = "REST API"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: str = PENDING
    progress: float = 0.0
    content: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    started: float | None = None
    completed: float | None = None
    error: JobFailed | None = None
    output: Any = None  # e.g. the archive file of a create-archive job
    cancel_requested: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def check_cancelled(self) -> None:
        if self.cancel_requested:
            raise JobCancelled()

    def set_progress(self, done: int, total: int) -> None:
        self.progress = 100.0 * done / total if total else 100.0

    def orthanc_json(self) -> dict[str, Any]:
        runtime = 0.0
        if self.started is not None:
            runtime = (self.completed or time.time()) - self.started
        error = self.error
        return {
            "CompletionTime": _timestamp(self.completed),
            "Content": self.content,
            "CreationTime": _timestamp(self.created),
            "EffectiveRuntime": round(runtime, 3),
            "ErrorCode": 0 if error is None else code_of(error.message),
            "ErrorDescription": "Success" if error is None else error.message,
            "ErrorDetails": "" if error is None else error.details,
            "ID": self.id,
            "Priority": self.priority,
            "Progress": int(self.progress),
            "State": self.state,
            "Timestamp": _timestamp(time.time()),
            "Type": self.type,
        }


class JobEngine:
    """ConcurrentJobs worker threads; LimitJobs finished jobs are kept (0: all of them)."""

    def __init__(self, concurrent: int = 2, keep: int = 10):
        self.keep = keep
        self._queue: queue.PriorityQueue[tuple[int, int, str]] = queue.PriorityQueue()
        self._jobs: dict[str, Job] = {}
        self._finished: list[str] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._stopping = False
        # What a full disk refused (see disk_full), or None: such a job fails with error 19.
        self.disk_full: Callable[[BaseException], str | None] = lambda e: None
        self._workers = [threading.Thread(target=self._run, name=f"job-{i}", daemon=True)
                         for i in range(max(1, concurrent))]
        for t in self._workers:
            t.start()

    def submit(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            self._counter += 1
            self._queue.put((-job.priority, self._counter, job.id))
        return job

    def run_sync(self, job: Job) -> dict[str, Any]:
        """Run a job through the engine and wait for it; raises JobFailed on failure."""
        self.submit(job)
        job.done.wait()
        if job.state != SUCCESS:
            raise job.error or JobFailed("the job was cancelled", 500)
        return job.content

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.created)

    def cancel(self, job_id: str) -> bool:
        job = self.get(job_id)
        if job is None:
            return False
        job.cancel_requested = True
        if job.state in (PENDING, PAUSED):
            self._finish(job, FAILURE, JobFailed("Canceled by the user", 500))
        return True

    def resubmit(self, job_id: str) -> bool:
        job = self.get(job_id)
        if job is None or job.state != FAILURE:
            return False
        job.state, job.error, job.progress = PENDING, None, 0.0
        job.cancel_requested = False
        job.completed = None
        job.done.clear()
        with self._lock:
            if job.id in self._finished:
                self._finished.remove(job.id)
            self._counter += 1
            self._queue.put((-job.priority, self._counter, job.id))
        return True

    def stop(self) -> None:
        self._stopping = True
        for _ in self._workers:
            self._queue.put((-(1 << 30), 0, ""))

    def _run(self) -> None:
        while True:
            _, _, job_id = self._queue.get()
            if self._stopping:
                return
            job = self.get(job_id)
            if job is None or job.state != PENDING:
                continue
            job.state = RUNNING
            job.started = time.time()
            try:
                job.content = job.work(job)
            except JobCancelled:
                self._finish(job, FAILURE, JobFailed("Canceled by the user", 500))
            except JobFailed as e:
                logger.error("job %s (%s) failed: %s %s", job.id, job.type, e.message, e.details)
                self._finish(job, FAILURE, e)
            except Exception as e:
                full = self.disk_full(e)
                if full is None:
                    logger.exception("job %s (%s) failed", job.id, job.type)
                    self._finish(job, FAILURE, JobFailed("Internal error", 500, str(e)))
                else:  # an expected failure: no traceback
                    logger.error("job %s (%s) failed: %s", job.id, job.type, full)
                    self._finish(job, FAILURE, JobFailed(STORAGE_FULL, 507, full))
            else:
                job.progress = 100.0
                self._finish(job, SUCCESS, None)

    def _finish(self, job: Job, state: str, error: JobFailed | None) -> None:
        job.state = state
        job.error = error
        job.completed = time.time()
        with self._lock:
            self._finished.append(job.id)
            while self.keep and len(self._finished) > self.keep:
                old = self._jobs.pop(self._finished.pop(0), None)
                if old is not None:
                    _discard_output(old)
        job.done.set()


def _discard_output(job: Job) -> None:
    cleanup = getattr(job.output, "cleanup", None)
    if callable(cleanup):
        try:
            cleanup()
        except OSError:
            pass


_engine_lock = threading.Lock()


def engine_of(context: Any) -> JobEngine:
    """The context's job engine, made on first use (one per server)."""
    with _engine_lock:
        engine = getattr(context, "_pipacs_jobs", None)
        if engine is None:
            s = context.settings
            engine = JobEngine(s.concurrent_jobs, s.limit_jobs)
            engine.disk_full = functools.partial(disk_full, context)
            context._pipacs_jobs = engine
        return engine
