"""When the DICOM server collects garbage: after associations have ended, never while idle.

pynetdicom's own loop ran a full collection every 60 turns whatever happened (every 6 s on an
idle pipacs); the acceptor (dicom/scp.py) collects only once associations have ended, and
what they held is freed then."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom.association import Association

from conftest import StoreScp, dcmtk, free_port
from pipacs import config
from pipacs.dicom.scp import Acceptor
from pipacs.dicom.scu import Scu
from pipacs.ids import INSTANCE
from pipacs.server import Server


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           storescp: StoreScp) -> Iterator[Server]:
    monkeypatch.setattr(Acceptor, "GC_SECONDS", 0.3)
    settings, _ = config.build_settings({
        "StorageDirectory": str(tmp_path / "storage"),
        "DicomPort": free_port(),
        "HttpPort": free_port(),
        "AuthenticationEnabled": False,
        "DicomAssociationCloseDelay": 0,  # an association per export
        "DicomModalities": {"scp": [storescp.aet, "127.0.0.1", storescp.port]},
    }, tmp_path)
    s = Server(settings)
    s.start()
    try:
        yield s
    finally:
        s.stop()


def acceptor(server: Server) -> Acceptor:
    assert server.dicom is not None and isinstance(server.dicom.server, Acceptor)
    return server.dicom.server


def associations() -> int:
    return sum(1 for o in gc.get_objects() if isinstance(o, Association))


def full_collections_during(seconds: float) -> int:
    """How many full collections (generation 2) ran in this process meanwhile."""
    runs = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            runs.append(1)

    gc.callbacks.append(seen)
    try:
        time.sleep(seconds)
    finally:
        gc.callbacks.remove(seen)
    return len(runs)


def test_idle_server_never_collects(server: Server) -> None:
    # pynetdicom's loop would have run one by 6 s (60 turns of 0.1 s)
    assert full_collections_during(6.5) == 0
    assert acceptor(server).collections == 0


def test_ended_associations_are_collected_once(server: Server, small_data: list[Path]) -> None:
    port = str(server.settings.dicom_port)
    aet = server.settings.dicom_aet
    for _ in range(5):
        dcmtk("echoscu", "-aec", aet, "127.0.0.1", port)
    dcmtk("storescu", "-aec", aet, "127.0.0.1", port, *map(str, small_data[:3]))
    a = acceptor(server)
    deadline = time.monotonic() + 10
    while (a.active_associations or not a.collections) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.7)  # a collection after the last association ended
    assert a.accepted == 6
    assert a.collections >= 1
    assert associations() == 0  # nothing of the six left
    done = a.collections
    assert full_collections_during(1.5) == 0  # idle again: no more collections
    assert a.collections == done


def test_associations_pipacs_requested_are_collected(server: Server,
                                                     small_data: list[Path]) -> None:
    ctx = server.context
    ids = [ctx.store(f.read_bytes()).ids[INSTANCE] for f in small_data[:2]]
    scu = Scu(ctx)
    for _ in range(20):  # exports: associations pipacs requests, none accepted
        scu.store(ctx.settings.modalities["scp"], ids)
    a = acceptor(server)
    deadline = time.monotonic() + 10
    while not a.collections and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.7)
    assert a.accepted == 0 and a.collections >= 1
    assert associations() == 0
