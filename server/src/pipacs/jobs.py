"""Jobs: long operations run by a few worker threads, listed at /jobs as Orthanc does."""

from __future__ import annotations

import errno
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errorcodes import INTERNAL_ERROR, STORAGE_FULL
from .index import DatabaseError, is_io_error, says_full
from .storage import StorageFullError

logger = logging.getLogger(__name__)

PENDING, RUNNING, SUCCESS, FAILURE, PAUSED = "Pending", "Running", "Success", "Failure", "Paused"
CANCELLED = "Canceled by the user"


def disk_full(context: Any, e: BaseException) -> str | None:
    """When `e` means a disk is full, what to tell the user (naming the disk); else None.

    Full: SQLite's SQLITE_FULL ("database or disk is full"), an SQLite I/O error while the
    index's disk has no room, and the filesystem's ENOSPC or EDQUOT. Other SQLite errors
    (a locked or corrupt index) are not: they stay internal errors."""
    if isinstance(e, DatabaseError):
        if not (says_full(e) or (is_io_error(e) and context.index_is_full(e))):
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


class JobEngine:
    """ConcurrentJobs worker threads; LimitJobs finished jobs are kept (0: all of them)."""

    def __init__(self, concurrent: int = 2, keep: int = 10,
                 disk_full: Callable[[BaseException], str | None] = lambda e: None):
        self.keep = keep
        self._queue: queue.PriorityQueue[tuple[int, int, str]] = queue.PriorityQueue()
        self._jobs: dict[str, Job] = {}
        self._finished: list[str] = []
        self._lock = threading.Lock()
        self._counter = 0
        self._stopping = False
        # What a full disk refused (see disk_full), or None: such a job fails with error 19.
        self.disk_full = disk_full
        self._concurrent = max(1, concurrent)
        self._workers: list[threading.Thread] = []  # started with the first job

    def _queue_job(self, job: Job, counter: int | None = None) -> None:
        """Queue `job` (under the lock), starting the workers on first use."""
        if not self._workers:
            self._workers = [threading.Thread(target=self._run, name=f"job-{i}", daemon=True)
                             for i in range(self._concurrent)]
            for t in self._workers:
                t.start()
        if counter is None:
            self._counter += 1
            counter = self._counter
        self._queue.put((-job.priority, counter, job.id))

    def submit(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            stopping = self._stopping
            if not stopping:
                self._queue_job(job)
        if stopping:
            self._finish(job, FAILURE, JobFailed("the server is stopping", 503))
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
            self._finish(job, FAILURE, JobFailed(CANCELLED, 500))
        return True

    def pause(self, job_id: str) -> None:
        """A pending job waits (its workers pass it by) until resumed."""
        job = self.get(job_id)
        if job is not None and job.state == PENDING:
            job.state = PAUSED

    def resume(self, job_id: str) -> None:
        """A paused job is pending again, ahead of the jobs of its priority."""
        job = self.get(job_id)
        if job is not None and job.state == PAUSED:
            job.state = PENDING
            with self._lock:
                self._queue_job(job, counter=0)

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
            self._queue_job(job)
        return True

    # How long stop() waits for running jobs to see their cancellation and end.
    STOP_TIMEOUT = 5.0

    def stop(self) -> None:
        """Stop the workers: running jobs are cancelled (they stop at their next check) and
        waited for, pending ones are left; a job submitted from now on fails at once."""
        with self._lock:
            self._stopping = True
            workers = list(self._workers)
            running = [j for j in self._jobs.values() if j.state == RUNNING]
        for job in running:
            job.cancel_requested = True
        for _ in workers:
            self._queue.put((-(1 << 30), 0, ""))
        deadline = time.monotonic() + self.STOP_TIMEOUT
        for t in workers:
            t.join(max(0.0, deadline - time.monotonic()))
        busy = sum(t.is_alive() for t in workers)
        if busy:
            logger.warning("%d job(s) still running at shutdown", busy)

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
                self._finish(job, FAILURE, JobFailed(CANCELLED, 500))
            except JobFailed as e:
                logger.error("job %s (%s) failed: %s %s", job.id, job.type, e.message, e.details)
                self._finish(job, FAILURE, e)
            except Exception as e:
                full = self.disk_full(e)
                if full is None:
                    logger.exception("job %s (%s) failed", job.id, job.type)
                    self._finish(job, FAILURE, JobFailed(INTERNAL_ERROR, 500, str(e)))
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
