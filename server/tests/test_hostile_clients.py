"""Hostile clients (issue 13): single requests that froze or killed pipacs, against a real one.

- A wildcard pattern that made the backtracking regex run for minutes (`*A*A*...*B` against
  a stored name of 64 A's) answers, through /tools/find and through dcmtk's findscu, and
  C-ECHO and GET /system answer while it runs. Patterns over the limits are refused with
  the tag and the limit named: a 400 on /tools/find and QIDO-RS, a C-FIND failure with an
  Error Comment on the study root and worklist models.
- A 9 KB worklist nesting 260 sequences (it took 22.9 GB, then the kernel killed pipacs)
  is a 400 naming the path and the limit, at once, and the server's memory does not move.

The servers run with an address-space limit, so that the old code fails these tests
without taking the machine's memory with it. Timings are loose bounds for a busy machine;
the figures are in bench/attacks.py.
"""

from __future__ import annotations

import json
import resource
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pydicom
import pytest

from conftest import PipacsProcess, dcmtk

ATTACK = "*A" * 9 + "*B"  # each * more multiplied the old regex's time by about ten
NAME = "A" * 64
MEMORY_LIMIT = 3 << 30  # bytes of address space for the server (idle: 1.3 GB)
SPS = "ScheduledProcedureStepSequence"


def call(p: PipacsProcess, method: str, path: str, body: Any = None,
         timeout: float = 30) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(p.url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def findscu(p: PipacsProcess, model: str, *keys: str, timeout: float = 30) -> str:
    """findscu's debug output, responses in full (it exits 0 on a failure status too)."""
    args = ["findscu", model, "-d", "-to", "10", "-ta", "10", "-td", "30", "-aec", p.aet]
    proc = dcmtk(*args, *[a for k in keys for a in ("-k", k)], "127.0.0.1",
                 str(p.dicom_port), timeout=timeout)
    return proc.stdout + proc.stderr


@pytest.fixture
def server(make_pipacs: Any, tmp_path: Path, small_data: list[Path],
           monkeypatch: pytest.MonkeyPatch) -> PipacsProcess:
    """pipacs with DICOMweb and worklists, one patient named NAME, one worklist for him."""
    # glibc reserves 64 MB of address space per thread arena: few arenas, so that an idle
    # server stays far below MEMORY_LIMIT
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    p: PipacsProcess = make_pipacs(
        start=False,
        Plugins=["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
        Worklists={"Enable": True, "Database": "wl"},
    )
    # Not conftest's readiness poll: its DICOM connections hold association slots until
    # pynetdicom notices they were closed, and storescu below could be refused. HTTP
    # starts after DICOM.
    p.start(wait=False)
    assert p.proc is not None
    resource.prlimit(p.proc.pid, resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    deadline = time.monotonic() + 60
    while True:
        try:
            p.get("/system")
            break
        except OSError:
            assert time.monotonic() < deadline and p.proc.poll() is None, p.log()
            time.sleep(0.1)
    ds = pydicom.dcmread(small_data[0])
    ds.PatientName = NAME
    path = tmp_path / "named.dcm"
    ds.save_as(path)
    p.store(path)
    status, _ = call(p, "POST", "/worklists/create",
                     {"Tags": {"PatientID": "WL1", "PatientName": NAME, SPS: [{"Modality": "CT"}]}})
    assert status == 200
    return p


def find_attack(p: PipacsProcess) -> tuple[int, Any]:
    return call(p, "POST", "/tools/find", {"Level": "Patient", "Query": {"PatientName": ATTACK}})


def test_adversarial_wildcards_answer_on_rest(server: PipacsProcess) -> None:
    assert call(server, "POST", "/tools/find",
                {"Level": "Patient", "Query": {"PatientName": "*A*A*"}})[1] != []
    assert find_attack(server) == (200, [])
    status, studies = call(server, "GET", f"/dicom-web/studies?PatientName={ATTACK}")
    assert (status, studies) == (200, [])


def test_adversarial_wildcards_answer_on_dicom(server: PipacsProcess) -> None:
    out = findscu(server, "-P", "QueryRetrieveLevel=PATIENT", f"PatientName={ATTACK}",
                  "PatientID")
    assert "Pending" not in out and "0x0000: Success" in out, out
    out = findscu(server, "-W", f"PatientName={ATTACK}", "PatientID")
    assert "Pending" not in out and "0x0000: Success" in out, out


def test_echo_and_http_answer_during_the_attack(server: PipacsProcess) -> None:
    answers: list[Any] = []
    threads = [threading.Thread(target=lambda: answers.append(find_attack(server)),
                                daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    dcmtk("echoscu", "-to", "5", "-ta", "5", "-td", "5", "-aec", server.aet, "127.0.0.1",
          str(server.dicom_port), timeout=10)  # the old code left it unanswered
    assert call(server, "GET", "/system", timeout=5)[0] == 200
    for t in threads:
        t.join(60)
    assert answers == [(200, [])] * 3


TOO_MANY = "*A?" * 17  # 34 wildcards
TOO_LONG = "A" * 300 + "*"


@pytest.mark.parametrize(("pattern", "limit"), [(TOO_MANY, "32 wildcards"),
                                                (TOO_LONG, "256 characters")])
def test_patterns_over_the_limits_are_refused_saying_why(
    server: PipacsProcess, pattern: str, limit: str
) -> None:
    status, body = call(server, "POST", "/tools/find",
                        {"Level": "Study", "Query": {"PatientName": pattern}})
    assert status == 400 and f"PatientName: at most {limit}" in json.dumps(body), body
    status, body = call(server, "GET", f"/dicom-web/studies?PatientName={pattern}")
    assert status == 400 and f"PatientName: at most {limit}" in json.dumps(body), body
    for model in ("-S", "-W"):
        keys = ["QueryRetrieveLevel=STUDY"] if model == "-S" else []
        out = findscu(server, model, *keys, f"PatientName={pattern}")
        assert "0xc001: Failed: Unable to process" in out, out
        assert f"PatientName: at most {limit}" in out, out
    server.echo()


def test_deeply_nested_worklists_are_refused(server: PipacsProcess) -> None:
    tags: dict[str, Any] = {"PatientName": "DEEP"}
    for _ in range(260):
        tags = {SPS: [tags]}
    body = {"Tags": tags}
    assert len(json.dumps(body)) < 10_000
    t0 = time.perf_counter()
    status, answer = call(server, "POST", "/worklists/create", body, timeout=60)
    elapsed = time.perf_counter() - t0
    assert status == 400, str(answer)[:500]
    message = json.dumps(answer)
    assert "deeper than 16 levels" in message and f"Tags.{SPS}[0]" in message
    assert len(message) < 2000
    assert elapsed < 10
    assert call(server, "GET", "/system", timeout=5)[0] == 200
    assert len(call(server, "GET", "/worklists")[1]) == 1  # nothing written


@pytest.mark.parametrize("replace", [{"X" * 1_000_000: "v"}, {"0010,0010" + "Z" * 100_000: 5},
                                     {"PatientName": "A", "Y" * 100_000: ["list"]}])
def test_modify_errors_quote_little_of_the_input(server: PipacsProcess,
                                                 replace: dict[str, Any]) -> None:
    study = call(server, "GET", "/studies")[1][0]
    status, answer = call(server, "POST", f"/studies/{study}/modify", {"Replace": replace})
    assert status == 400
    assert len(json.dumps(answer)) < 1000, str(answer)[:300]
