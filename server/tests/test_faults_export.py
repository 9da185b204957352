"""Exports on a full index disk: the images were sent, so the send succeeds; only the record
of the export (LogExportedResources, /exports) is given up, with a warning in the log.

A real pipacs process whose index lives on a small tmpfs filled with a ballast file (as in
test_diskfull.py), sending to dcmtk's storescp (C-STORE) and to a second pipacs (HTTP peer).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom

from conftest import PipacsProcess
from test_diskfull import http, small_disk, store_status  # noqa: F401 (small_disk: a fixture)

NOT_RECORDED = "could not be recorded"


def send_until_not_recorded(p: PipacsProcess, send: Callable[[], tuple[int, bytes]],
                            check: Callable[[dict[str, Any]], None],
                            tries: int = 400) -> int:
    """Send again and again on the full index disk (its WAL may still hold room for a few
    records) until the log says an export could not be recorded; every send must answer
    200 with what was sent. The number of sends."""
    for n in range(1, tries + 1):
        status, raw = send()
        assert status == 200, (n, status, raw)
        check(json.loads(raw))
        if NOT_RECORDED in p.log():
            return n
    raise AssertionError(f"every export was recorded on a full index disk ({tries} sends)")


def test_store_to_a_modality_on_a_full_index_disk(small_disk: Any, make_pipacs: Any,  # noqa: F811
                                                  small_data: list[Path],
                                                  storescp: Any) -> None:
    disk = small_disk("disk", "tmpfs", 2048)
    p = make_pipacs(IndexDirectory=str(disk.root / "index"), LogExportedResources=True,
                    DicomModalities={"scp": [storescp.aet, "127.0.0.1", storescp.port]})
    assert store_status(p, *small_data[:4]) == [0] * 4
    (study,) = p.get("/studies")
    body = json.dumps({"Resources": [study], "Synchronous": True}).encode()
    assert http(p, "POST", "/modalities/scp/store", body)[0] == 200
    assert p.get("/exports")["Exports"][-1]["ID"] == study
    disk.fill()

    def check(answer: dict[str, Any]) -> None:
        assert answer["InstancesCount"] == 4 and answer["FailedInstancesCount"] == 0, answer
        assert answer["ParentResources"] == [study], answer

    send_until_not_recorded(p, lambda: http(p, "POST", "/modalities/scp/store", body), check)
    received = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
                for f in storescp.files()}
    assert received == {pydicom.dcmread(f).SOPInstanceUID for f in small_data[:4]}
    warnings = [line for line in p.log().splitlines() if NOT_RECORDED in line]
    assert warnings[0].startswith("W ") and study in warnings[0] and "scp" in warnings[0], warnings
    assert "no space left" in warnings[0], warnings
    assert "Traceback" not in p.log(), p.log()

    # Room again: exports are recorded again.
    disk.free()
    assert http(p, "POST", "/modalities/scp/store", body)[0] == 200
    assert p.get("/exports")["Exports"][-1]["ID"] == study


def test_store_to_a_peer_on_a_full_index_disk(small_disk: Any, make_pipacs: Any,  # noqa: F811
                                              small_data: list[Path]) -> None:
    disk = small_disk("disk", "tmpfs", 2048)
    peer = make_pipacs()
    p = make_pipacs(IndexDirectory=str(disk.root / "index"), LogExportedResources=True,
                    OrthancPeers={"peer": [peer.url + "/"]})
    assert store_status(p, *small_data[:2]) == [0] * 2
    (study,) = p.get("/studies")
    body = json.dumps({"Resources": [study], "Synchronous": True}).encode()
    disk.fill()

    def check(answer: dict[str, Any]) -> None:
        assert answer["InstancesCount"] == 2 and answer["FailedInstancesCount"] == 0, answer

    send_until_not_recorded(p, lambda: http(p, "POST", "/peers/peer/store", body), check)
    assert peer.get("/studies") == [study]
    assert len(peer.get("/instances")) == 2
    assert "Traceback" not in p.log(), p.log()
