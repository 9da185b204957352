"""Stopping the server: what the context owns (Python hooks, jobs, the SCU's associations)
stops before the index closes, so nothing uses a closed index."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import StoreScp, free_port
from pipacs import config
from pipacs.dicom.scu import Scu
from pipacs.jobs import Job
from pipacs.server import Server


def test_shutdown_stops_a_running_job_and_the_scu_before_the_index_closes(
        tmp_path: Path, storescp: StoreScp, small_data: list[Path],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    settings, _ = config.build_settings({
        "StorageDirectory": str(tmp_path / "storage"),
        "DicomPort": free_port(),
        "HttpPort": free_port(),
        "AuthenticationEnabled": False,
        "DicomModalities": {"scp": [storescp.aet, "127.0.0.1", storescp.port]},
        "DicomAssociationCloseDelay": 60,  # the echo's association stays open, idle
    }, tmp_path)
    server = Server(settings)
    server.start()
    ctx = server.context
    try:
        ctx.store(small_data[0].read_bytes())
        scu = ctx.scu
        assert isinstance(scu, Scu)
        scu.echo(settings.modalities["scp"])
        assert len(scu.ae.active_associations) == 1

        started = threading.Event()

        def work(job: Job) -> dict[str, Any]:
            started.set()
            while True:  # uses the index until it is cancelled
                ctx.index.counts()
                job.check_cancelled()
                time.sleep(0.01)

        job = ctx.jobs.submit(Job("Test", work))
        assert started.wait(10)

        seen: dict[str, Any] = {}
        close = ctx.index.close

        def closing() -> None:
            seen["job"] = job.state
            seen["workers"] = [t.name for t in threading.enumerate()
                               if t.name.startswith("job-")]
            seen["associations"] = len(scu.ae.active_associations)
            close()

        monkeypatch.setattr(ctx.index, "close", closing)
        caplog.set_level(logging.INFO)
        server.stop()
    finally:
        server.stop()
    time.sleep(0.3)  # a job left running would fail on the closed index meanwhile
    assert seen == {"job": "Failure", "workers": [], "associations": 0}
    assert job.error is not None and job.error.message == "Canceled by the user"
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info
                or "closed database" in r.getMessage()]
    assert not problems, [r.getMessage() for r in problems]
