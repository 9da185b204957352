"""Python hooks (PythonScripts): filters answered to storescu and REST, events, failing hooks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import store_status, wait_until

RECORDER = """
import json, pathlib
LOG = pathlib.Path(__file__).with_name("events.jsonl")

def _write(*item):
    with LOG.open("a") as f:
        f.write(json.dumps(item) + "\\n")

def received_instance_filter(tags, origin):
    return tags["PatientID"] != "S11P0002"   # this patient never gets in

def on_stored_instance(instance_id, tags, origin):
    _write("stored", instance_id, tags["PatientID"], origin["RequestOrigin"], origin["RemoteAet"])

def on_change(change_type, level, resource_id):
    _write("change", change_type, level, resource_id)

def incoming_http_request_filter(method, uri, ip, username, headers):
    return not uri.startswith("/forbidden") and method != "DELETE"
"""

STATUS = """
def received_instance_filter(tags, origin):
    if tags["PatientID"] == "S11P0001" and tags["SeriesNumber"] == "2":
        return 0xA901       # a status of the filter's choosing
    return True
"""

BROKEN = """
def on_stored_instance(instance_id, tags, origin):
    raise RuntimeError("hook bug in on_stored_instance")

def on_change(change_type, level, resource_id):
    raise RuntimeError("hook bug in on_change")

def received_instance_filter(tags, origin):
    raise ValueError("hook bug in the filter")

def incoming_http_request_filter(method, uri, ip, username, headers):
    raise KeyError("hook bug in the HTTP filter")
"""


def events(folder: Path) -> list[list[Any]]:
    path = folder / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_hooks_filter_events_and_failures(
    make_pipacs: Any, small_data: list[Path], tmp_path: Path
) -> None:
    scripts = tmp_path / "python"
    scripts.mkdir()
    (scripts / "a_recorder.py").write_text(RECORDER)
    (scripts / "b_status.py").write_text(STATUS)
    (scripts / "c_broken.py").write_text(BROKEN)
    (scripts / "d_syntax_error.py").write_text("def on_change(:\n")
    # A folder loads every script in it (as the seed's python/ folder would be listed).
    p = make_pipacs(PythonScripts=[str(scripts)])
    log = p.log()
    assert "d_syntax_error.py failed to load" in log

    p1 = [f for f in small_data if "S11P0001" in str(f)]
    p2 = [f for f in small_data if "S11P0002" in str(f)]
    assert len(p1) == len(p2) == 40

    # Refused patient: storescu hears 0xA700 ("out of resources", as Orthanc answers).
    assert store_status(p, p2[0]) == [0xA700]
    assert p.get("/patients") == []

    # The filter's own status: series 2 of patient 1 is refused with 0xA901, series 1 stored.
    se1 = [f for f in p1 if "/SE01/" in str(f)]
    se2 = [f for f in p1 if "/SE02/" in str(f)]
    assert store_status(p, se2[0]) == [0xA901]
    p.store(*se1[:3])
    assert len(p.get("/instances")) == 3

    # REST uploads meet the same filter: 403, nothing stored.
    assert p.status("POST", "/instances", p2[1].read_bytes()) == 403
    assert len(p.get("/instances")) == 3

    # Events reach on_stored_instance and on_change, then the Stable* changes (StableAge 1).
    wait_until(lambda: sum(e[0] == "stored" for e in events(scripts)) == 3,
               "3 stored events", timeout=10)
    stored = [e for e in events(scripts) if e[0] == "stored"]
    assert {(e[2], e[3], e[4]) for e in stored} == {("S11P0001", "DicomProtocol", "STORESCU")}
    wait_until(
        lambda: (
            {"StableSeries", "StableStudy", "StablePatient"}
            <= {e[1] for e in events(scripts) if e[0] == "change"}
        ),
        "the Stable* changes", timeout=10,
    )
    changes = [e[1] for e in events(scripts) if e[0] == "change"]
    for kind in ("NewPatient", "NewStudy", "NewSeries"):
        assert changes.count(kind) == 1
    assert changes.count("NewInstance") == 3

    # The HTTP filter; the broken one raising is logged and ignored.
    assert p.status("GET", "/forbidden/thing") == 403
    assert p.status("GET", "/system") == 200
    patient = p.get("/patients")[0]
    assert p.status("DELETE", f"/patients/{patient}") == 403

    # Every broken hook was logged, and the server still works on both ports.
    log = p.log()
    for bug in ("in on_stored_instance", "in on_change", "in the filter", "in the HTTP filter"):
        assert f"hook bug {bug}" in log
    p.echo()
    assert p.proc is not None and p.proc.poll() is None


def test_missing_script_is_a_warning(make_pipacs: Any, tmp_path: Path) -> None:
    p = make_pipacs(PythonScripts=[str(tmp_path / "nowhere.py")])
    assert "does not exist" in p.log()
    assert "python" in p.get("/plugins")
    p.echo()
