"""The fast paths: their hand-written encodings match pynetdicom's and pydicom's, and they are
installed guarded by the libraries' versions and the names they patch, undone for tests,
switched off by "FastPaths": false; a refused one leaves pynetdicom's stock behaviour, which
still serves real associations (dcmtk's storescu, movescu, findscu)."""

from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynetdicom import association, dimse, dimse_messages, dul, fsm, service_class, transport
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from conftest import dcmtk, free_port
from pipacs import config, fastpaths
from pipacs.context import ServerContext
from pipacs.dicom.fastrsp import encode_store_response
from pipacs.dicom.reactor import encode_pdata, pdata_values
from pipacs.dicom.scp import DicomServer
from pipacs.dicomfile import IMPLEMENTATION_CLASS_UID, part10_header


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC000, 0x0124])
@pytest.mark.parametrize("sop_uid", ["1.2.3.4", "1.2.3.45", "2.25.1234567890123456789"])
def test_store_response_matches_pynetdicom(status: int, sop_uid: str) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rsp.AffectedSOPInstanceUID = sop_uid
    rsp.Status = status
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    expected = b"".join(p.presentation_data_value_list[0][1][1:] for p in msg.encode_msg(1, 16384))
    assert encode_store_response(rsp) == expected


@pytest.mark.parametrize("aet", ["", "STORESCU", "ODD"])
def test_part10_header_reads_back(aet: str) -> None:
    header = part10_header("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", "1.2.840.10008.1.2", aet)
    meta = pydicom.dcmread(io.BytesIO(header), force=True).file_meta
    assert meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert meta.MediaStorageSOPInstanceUID == "1.2.3.45"
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.get("SourceApplicationEntityTitle", "") == aet
    # group length is what pydicom computes for the same elements
    ref = create_file_meta(
        sop_class_uid=meta.MediaStorageSOPClassUID,
        sop_instance_uid=meta.MediaStorageSOPInstanceUID,
        transfer_syntax=meta.TransferSyntaxUID,
        implementation_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version="PIPACS_01",
    )
    if aet:
        ref.SourceApplicationEntityTitle = aet
    assert header[132:] == encode_file_meta(ref)


@pytest.mark.parametrize("implicit", [True, False])
def test_find_answer_matches_pydicom(implicit: bool) -> None:
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import encode

    from pipacs.dicom.fastrsp import Answer

    values = {
        "SpecificCharacterSet": "ISO_IR 192",
        "QueryRetrieveLevel": "STUDY",
        "PatientName": "Müller^Jürgen",
        "PatientID": "P1",
        "StudyDate": "20200101",
        "StudyInstanceUID": "1.2.3",
        "ModalitiesInStudy": "CT\\MR",
        "NumberOfStudyRelatedInstances": "20",
        "ReferringPhysicianName": "",
        "RetrieveAETitle": "PIPACS",
        "NumberOfSlices": "12",
        "StudyDescription": "odd",
    }
    answer = Answer()
    ds = Dataset()
    for kw, v in values.items():
        answer.set(kw, v)
        if kw == "NumberOfSlices":
            ds.NumberOfSlices = int(v)
        elif "\\" in v:
            setattr(ds, kw, v.split("\\"))
        else:
            setattr(ds, kw, v or None)
    ds.ReferencedStudySequence = []
    answer.set("ReferencedStudySequence", "")
    assert answer.encode(implicit) == encode(ds, implicit, True)


def test_find_response_command_matches_pynetdicom() -> None:
    from io import BytesIO

    from pynetdicom.dimse_messages import C_FIND_RSP
    from pynetdicom.dimse_primitives import C_FIND

    from pipacs.dicom.fastrsp import encode_find_response

    for status, identifier in ((0xFF00, b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY "), (0x0000, None)):
        rsp = C_FIND()
        rsp.MessageIDBeingRespondedTo = 3
        rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
        rsp.Status = status
        rsp.Identifier = BytesIO(identifier) if identifier else None
        msg = C_FIND_RSP()
        msg.primitive_to_message(rsp)
        pdvs = [p.presentation_data_value_list[0][1] for p in msg.encode_msg(1, 16384)]
        command, data = encode_find_response(rsp)
        assert command == b"".join(p[1:] for p in pdvs if p[0] & 1)
        assert data == b"".join(p[1:] for p in pdvs if not p[0] & 1)


@pytest.mark.parametrize("context_id", [1, 3, 255])
@pytest.mark.parametrize("size", [0, 1, 101, 16378])
def test_pdata_pdu_matches_pynetdicom(context_id: int, size: int) -> None:
    """The P-DATA-TF PDUs a C-STORE response is sent in from the association thread."""
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    pdv = b"\x03" + bytes(range(256)) * (size // 256) + bytes(size % 256)
    primitive = P_DATA()
    primitive.presentation_data_value_list.append((context_id, pdv))
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    assert encode_pdata(context_id, pdv) == pdu.encode()


def _store_rq_command(**fields: object) -> bytes:
    """A C-STORE-RQ command set as pynetdicom encodes it."""
    from pynetdicom.dimse_messages import C_STORE_RQ

    req = C_STORE()
    req.MessageID = fields.get("MessageID", 7)
    req.AffectedSOPClassUID = fields.get("AffectedSOPClassUID", "1.2.840.10008.5.1.4.1.1.2")
    req.AffectedSOPInstanceUID = fields.get("AffectedSOPInstanceUID", "1.2.3.4.5")
    req.Priority = fields.get("Priority", 2)
    if "MoveOriginatorApplicationEntityTitle" in fields:
        req.MoveOriginatorApplicationEntityTitle = fields["MoveOriginatorApplicationEntityTitle"]
        req.MoveOriginatorMessageID = 3
    req.DataSet = io.BytesIO(b"\x08\x00\x16\x00\x02\x00\x00\x00ab")
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    pdvs = msg.encode_msg(1, 0)
    return b"".join(p.presentation_data_value_list[0][1][1:] for p in pdvs
                    if p.presentation_data_value_list[0][1][0] & 1)


def _pynetdicom_primitive(command: bytes) -> C_STORE:
    """What pynetdicom itself makes of a command set: pydicom's decode, its own
    message_to_primitive (called unbound, so pipacs' hook is not in the way)."""
    from pynetdicom import dimse_messages
    from pynetdicom.dsutils import decode

    msg = dimse_messages.DIMSEMessage()
    msg.command_set = decode(io.BytesIO(command), True, True)
    msg.__class__ = dimse_messages._MESSAGE_TYPES[msg.command_set.CommandField][1]
    msg.data_set = io.BytesIO(b"data")
    msg.context_id = 1
    return _ORIGINAL_TO_PRIMITIVE(msg)


def _original_to_primitive():  # type: ignore[no-untyped-def]
    """pynetdicom's own message_to_primitive (the fast path taken out for a moment)."""
    was_installed = fastpaths.installed("fast-store-commands")
    fastpaths.uninstall()
    try:
        return dimse_messages.DIMSEMessage.message_to_primitive
    finally:
        if was_installed:
            fastpaths.install()


from pipacs.dicom.fastcmd import decode_store_command, store_primitive  # noqa: E402

_ORIGINAL_TO_PRIMITIVE = _original_to_primitive()
_FIELDS = ("MessageID", "Priority", "AffectedSOPClassUID", "AffectedSOPInstanceUID",
           "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID")


def _same_primitive(ours: C_STORE, theirs: C_STORE) -> None:
    for name in _FIELDS:
        assert getattr(ours, name) == getattr(theirs, name), name
    assert type(ours.AffectedSOPClassUID) is type(theirs.AffectedSOPClassUID)


@pytest.mark.parametrize("fields", [
    {},
    {"MessageID": 0, "Priority": 0},
    {"MessageID": 65535, "Priority": 1, "AffectedSOPInstanceUID": "2.25." + "9" * 59},
    {"AffectedSOPInstanceUID": "1.2.3.45"},  # odd length: padded with a NUL
    {"AffectedSOPClassUID": "1.2.840.10008.5.1.4.1.1.4"},
])
def test_store_command_decoded_as_pynetdicom_does(fields: dict[str, object]) -> None:
    command = _store_rq_command(**fields)
    cmd = decode_store_command(command)
    assert cmd is not None, "a plain C-STORE-RQ takes the fast path"
    _same_primitive(store_primitive(cmd, io.BytesIO(b"data")), _pynetdicom_primitive(command))


@pytest.mark.parametrize("fields", [
    {"MoveOriginatorApplicationEntityTitle": "MOVER"},  # a C-MOVE sub-operation
    {"AffectedSOPInstanceUID": "1.2.03.4"},  # not conformant: pynetdicom decides
])
def test_other_command_sets_are_left_to_pynetdicom(fields: dict[str, object]) -> None:
    assert decode_store_command(_store_rq_command(**fields)) is None


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_command_sets_decode_as_pynetdicom_or_not_at_all(data: st.DataObject) -> None:
    raw = bytearray(_store_rq_command(MessageID=data.draw(st.integers(0, 65535))))
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del raw[data.draw(st.integers(0, len(raw))):]
    cmd = decode_store_command(bytes(raw))
    if cmd is None:
        return
    try:
        theirs = _pynetdicom_primitive(bytes(raw))
    except ValueError as e:  # a value its setters refuse (Priority 75): ours refuse it too
        with pytest.raises(type(e)):
            store_primitive(cmd, io.BytesIO(b"data"))
        return
    _same_primitive(store_primitive(cmd, io.BytesIO(b"data")), theirs)


def _pynetdicom_items(pdu: bytes) -> list[tuple[int, bytes]]:
    from pynetdicom.pdu import P_DATA_TF

    decoded = P_DATA_TF()
    decoded.decode(pdu)
    return list(decoded.to_primitive().presentation_data_value_list)


@pytest.mark.parametrize("values", [
    [(1, b"\x03" + b"x" * 100)],
    [(1, b"\x01cmd"), (1, b"\x03end"), (5, b"\x00" + bytes(range(256)) * 64)],
    [(255, b"\x02")],
])
def test_received_pdata_values_match_pynetdicom(values: list[tuple[int, bytes]]) -> None:
    """The receive path's P-DATA-TF items: views of the PDU, equal to pynetdicom's copies."""
    body = b"".join(encode_pdata(c, v)[6:] for c, v in values)
    pdu = b"\x04\x00" + len(body).to_bytes(4, "big") + body
    ours = pdata_values(memoryview(body))
    assert ours is not None
    assert [(c, bytes(v)) for c, v in ours] == _pynetdicom_items(pdu) == values


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_pdata_bodies_decode_as_pynetdicom_or_not_at_all(data: st.DataObject) -> None:
    values = [(1, b"\x01abc"), (3, b"\x02" + b"z" * 40)]
    body = bytearray(b"".join(encode_pdata(c, v)[6:] for c, v in values))
    for _ in range(data.draw(st.integers(1, 3))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        del body[data.draw(st.integers(0, len(body))):]
    ours = pdata_values(memoryview(bytes(body)))
    if ours is None:
        return
    pdu = b"\x04\x00" + len(body).to_bytes(4, "big") + bytes(body)
    assert [(c, bytes(v)) for c, v in ours] == _pynetdicom_items(pdu)


# ---------------------------------------------------------------- installing them

# Every attribute a fast path replaces, by owner: the round trip must put each one back.
OWNERS = (dul.DULServiceProvider, dimse.DIMSEServiceProvider, fsm.StateMachine,
          transport.AssociationSocket, dimse_messages.DIMSEMessage, dul, association,
          dimse_messages, service_class)


def snapshot() -> list[dict[str, Any]]:
    return [dict(vars(owner)) for owner in OWNERS]


@pytest.fixture
def stock() -> Iterator[None]:
    """No fast path installed while the test runs; whatever was installed comes back after."""
    before = [f.name for f in fastpaths.REGISTRY if fastpaths.installed(f.name)]
    fastpaths.uninstall()
    yield
    fastpaths.uninstall()
    if before:
        fastpaths.install()


def fitting(*, fixes_only: bool = False) -> list[str]:
    """The fast paths this environment's libraries allow (all of them with the tested
    releases; `make test-newest` runs these tests against newer ones, where some may not)."""
    return [f.name for f in fastpaths.REGISTRY
            if fastpaths.problem(f) is None and (f.fix or not fixes_only)]


def need_fitting(name: str) -> None:
    (fast_path,) = [f for f in fastpaths.REGISTRY if f.name == name]
    why = fastpaths.problem(fast_path)
    if why is not None:
        pytest.skip(f"{name} does not fit the libraries here: {why}")


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "pipacs.fastpaths" and r.levelno == logging.WARNING]


def test_install_uninstall_round_trip(stock: None, caplog: pytest.LogCaptureFixture) -> None:
    before = snapshot()
    report = fastpaths.install()
    assert report.installed == fitting(), report
    assert len(warnings_of(caplog)) == len(report.refused) == len(fastpaths.REGISTRY) - len(
        report.installed)
    assert (snapshot() != before) == any(n != "waitress-send" for n in report.installed)
    assert fastpaths.install().installed == report.installed  # idempotent
    assert len(warnings_of(caplog)) == len(report.refused)  # warned once
    fastpaths.uninstall()
    assert snapshot() == before
    assert not any(fastpaths.installed(f.name) for f in fastpaths.REGISTRY)


def test_fast_paths_off_installs_only_the_fixes(stock: None) -> None:
    before = snapshot()
    fastpaths.install()
    report = fastpaths.install(enabled=False)
    assert report.installed == fitting(fixes_only=True) and not report.enabled
    assert "fast paths off" in str(report)
    assert association.encode is before[6]["encode"]
    assert dul.DULServiceProvider.__init__ is before[0]["__init__"]


def serve(tmp_path: Path) -> tuple[ServerContext, DicomServer]:
    built, _ = config.build_settings(
        {"StorageDirectory": str(tmp_path / "st"), "DicomPort": free_port()}, tmp_path
    )
    ctx = ServerContext(built)
    ctx.start()
    server = DicomServer(ctx, host="127.0.0.1")
    server.start()
    return ctx, server


def store_through(tmp_path: Path, files: list[Path]) -> None:
    """A real association (dcmtk's storescu) stores every file."""
    ctx, server = serve(tmp_path)
    try:
        dcmtk("storescu", "-aec", "PIPACS", "127.0.0.1", str(ctx.settings.dicom_port),
              *map(str, files))
        for f in files:
            uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            matches, _ = ctx.find(3, {"SOPInstanceUID": uid})
            assert len(matches) == 1, uid
    finally:
        server.stop()
        ctx.stop()


def test_an_untested_release_gets_stock_behaviour(
    stock: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    tmp_path: Path, small_data: list[Path],
) -> None:
    monkeypatch.setitem(fastpaths.TESTED, "pynetdicom", ("0.0.1",))
    before = snapshot()
    report = fastpaths.install()
    pynetdicom_paths = [f.name for f in fastpaths.REGISTRY if f.library == "pynetdicom"]
    assert [n for n in report.refused if n in pynetdicom_paths] == pynetdicom_paths
    assert report.installed == [n for n in fitting() if n not in pynetdicom_paths]
    warned = [w for w in warnings_of(caplog) if "pynetdicom" in w]
    assert len(warned) == len(pynetdicom_paths)  # one each, naming it and why
    release = version("pynetdicom")
    for name, message in zip(pynetdicom_paths, warned, strict=True):
        assert f"fast path {name} not installed" in message
        assert f"pynetdicom {release} is not a tested release (0.0.1)" in message
    assert snapshot() == before  # pynetdicom as it ships
    fastpaths.install()
    assert [w for w in warnings_of(caplog) if "pynetdicom" in w] == warned  # once, not per call
    off = fastpaths.install(enabled=False)  # names only the fixes it would have installed
    assert list(off.refused) == [f.name for f in fastpaths.REGISTRY
                                 if f.library == "pynetdicom" and f.fix]
    store_through(tmp_path, small_data[:3])


def test_a_changed_signature_gets_stock_behaviour(
    stock: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    tmp_path: Path, small_data: list[Path],
) -> None:
    """A release whose _read_pdu_data takes another parameter: that fast path stays out,
    pynetdicom's method (here the changed one) reads the PDUs, the others are installed."""
    original = dul.DULServiceProvider._read_pdu_data
    calls = []

    def changed(self: Any, limit: int | None = None) -> None:
        calls.append(limit)
        original(self)

    need_fitting("pdata-views")
    expected = fitting()
    monkeypatch.setattr(dul.DULServiceProvider, "_read_pdu_data", changed)
    report = fastpaths.install()
    assert "pdata-views" in report.refused and "pdu-limits" in report.refused  # both replace it
    assert report.installed == [n for n in expected if n not in ("pdata-views", "pdu-limits")]
    (message,) = [w for w in warnings_of(caplog) if "pdata-views" in w]
    assert message.startswith("fast path pdata-views not installed, stock behaviour instead:")
    assert "DULServiceProvider._read_pdu_data(self, limit) differs from the tested (self)" \
        in message
    assert dul.DULServiceProvider._read_pdu_data is changed
    store_through(tmp_path, small_data[:3])
    assert calls, "the stock reader served the association"


def test_a_missing_target_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(fastpaths.TESTED, "pynetdicom", (version("pynetdicom"),))
    broken = fastpaths.FastPath(
        "gone", "pynetdicom", "pipacs.dicom.reactor:patch_recv",
        (fastpaths.Target("pynetdicom.dul:DULServiceProvider._renamed_in_a_release"),
         fastpaths.Target("pynetdicom.dul:DULServiceProvider.run_reactor", ("self",))),
    )
    assert fastpaths.problem(broken) == \
        "pynetdicom.dul:DULServiceProvider._renamed_in_a_release is missing"


def test_a_paused_association_thread_leaves_the_response_to_the_sender(stock: None) -> None:
    """pynetdicom's send_c_store clears `_reactor_checkpoint` and trusts a flag that can be
    stale; the association thread's non-blocking get must then find nothing (the race that
    failed C-MOVE sub-operations under load), the sender's blocking get the response."""
    need_fitting("reactor-pause")
    fastpaths.install(enabled=False)  # the fix alone
    assoc = SimpleNamespace(_reactor_checkpoint=threading.Event(), dimse_timeout=1)
    provider = dimse.DIMSEServiceProvider(assoc)  # type: ignore[arg-type]
    provider.msg_queue = queue.Queue()
    provider.msg_queue.put((1, "C-STORE-RSP"))
    assert provider.get_msg(block=False) == (None, None)  # paused: not the reactor's
    assert provider.get_msg(block=True) == (1, "C-STORE-RSP")
    assoc._reactor_checkpoint.set()
    provider.msg_queue.put((1, "C-STORE-RQ"))
    assert provider.get_msg(block=False) == (1, "C-STORE-RQ")  # running: served as before


def test_fast_paths_false_is_stock_end_to_end(make_pipacs: Any, storescp: Any,
                                              small_data: list[Path]) -> None:
    p = make_pipacs(FastPaths=False,
                    DicomModalities={"scp": [storescp.aet, "127.0.0.1", storescp.port]})
    fixes = ", ".join(fitting(fixes_only=True)) or "none"
    assert f"fast paths off (FastPaths: false); fixes installed: {fixes}" in p.log()
    p.store(*small_data[:20])
    first = pydicom.dcmread(small_data[0], stop_before_pixels=True)
    study = str(first.StudyInstanceUID)
    found = dcmtk("findscu", "-S", "-aec", p.aet, "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={study}", "-k", "PatientName",
                  "127.0.0.1", str(p.dicom_port), "-v")
    assert study in found.stdout + found.stderr
    dcmtk("movescu", "-S", "-aec", p.aet, "-aem", storescp.aet, "-k",
          "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
          "127.0.0.1", str(p.dicom_port))
    deadline = time.monotonic() + 10
    while len(storescp.files()) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert {str(pydicom.dcmread(f).SOPInstanceUID) for f in storescp.files()} == {
        str(pydicom.dcmread(f).SOPInstanceUID) for f in small_data[:20]
        if str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) == study
    }
    assert p.get("/changes?last")["Done"] is not None  # HTTP through waitress' own channel


def test_the_server_logs_the_fast_paths_it_installed(pipacs: Any) -> None:
    assert f"fast paths installed: {', '.join(fitting()) or 'none'}" in pipacs.log()
