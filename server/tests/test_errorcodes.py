"""Orthanc's error numbers: error answers and failed jobs take them from one table."""

from __future__ import annotations

from types import SimpleNamespace

from pipacs.errorcodes import ERRORS, STORAGE_FULL, code_of
from pipacs.http.errors import error_body
from pipacs.http.jobs import job_json
from pipacs.jobs import FAILURE, Job, JobFailed


def test_messages_give_orthanc_numbers_then_the_status_decides() -> None:
    assert code_of("Unknown resource", 404) == 17
    assert code_of("Bad file format", 400) == 15
    assert code_of(STORAGE_FULL, 507) == 19
    assert code_of("no such message", 404) == 17  # by the HTTP status
    assert code_of("no such message", 413) == -1
    assert code_of("Internal error", 500) == -1
    assert code_of("no such message") == -1
    assert len({e.message for e in ERRORS}) == len(ERRORS)  # one number per message


def test_error_answers_and_failed_jobs_use_the_same_numbers() -> None:
    request = SimpleNamespace(method="GET", path="/x")
    body = error_body(500, "Error in the network protocol", request, "peer down")
    assert (body["OrthancStatus"], body["HttpError"], body["Details"]) == (
        9, "Internal Server Error", "peer down")
    job = Job("DicomModalityStore", lambda j: {})
    job.state, job.error = FAILURE, JobFailed("Error in the network protocol", 500, "peer down")
    answer = job_json(job)
    assert (answer["ErrorCode"], answer["ErrorDescription"]) == (9, body["OrthancError"])
    job.error = JobFailed("Inexistent file", 404)
    assert job_json(job)["ErrorCode"] == 13
