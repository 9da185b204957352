"""The DICOM SCP: C-ECHO, C-STORE, C-FIND, C-MOVE and C-GET on pynetdicom, calling the context."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from io import BytesIO
from typing import Any, cast

import pydicom
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import (
    AllStoragePresentationContexts,
    PresentationContext,
    QueryRetrievePresentationContexts,
    build_context,
)

from .. import dicomfile, fastpaths
from ..context import Origin, ServerContext, StoreRefused
from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from ..matching import QueryError, vr_of
from .fastrsp import Answer
from .rawsend import RawDataset

logger = logging.getLogger(__name__)

# DICOM statuses used below (PS3.4 and PS3.7 annex C).
SUCCESS = 0x0000
PENDING = 0xFF00
NOT_AUTHORIZED = 0x0124
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
IDENTIFIER_MISMATCH = 0xA900
UNABLE_TO_PROCESS = 0xC001
CANCEL = 0xFE00

VERIFICATION = "1.2.840.10008.1.1"
LEVELS = {"PATIENT": PATIENT, "STUDY": STUDY, "SERIES": SERIES, "IMAGE": INSTANCE}

# The acceptor's order decides which proposed syntax is chosen: explicit VR first keeps the
# VRs the sender wrote, and uncompressed before compressed never adds a lossy step.
UNCOMPRESSED = [
    pydicom.uid.ExplicitVRLittleEndian,
    pydicom.uid.ImplicitVRLittleEndian,
    pydicom.uid.ExplicitVRBigEndian,
]
OPTIONAL_SYNTAXES = {
    "deflated_transfer_syntax_accepted": ["1.2.840.10008.1.2.1.99"],
    "jpeg_transfer_syntax_accepted": [
        f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 52, 53, 54, 55, 56, 58, 59, 60, 61, 62, 63, 64)
    ],
    "jpeg_lossless_transfer_syntax_accepted": [
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.65",
        "1.2.840.10008.1.2.4.66",
        "1.2.840.10008.1.2.4.70",
    ],
    "jpegls_transfer_syntax_accepted": ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"],
    "jpeg2000_transfer_syntax_accepted": [
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.92",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    ],
    "mpeg2_transfer_syntax_accepted": ["1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"],
    "mpeg4_transfer_syntax_accepted": [f"1.2.840.10008.1.2.4.{n}" for n in range(102, 107)],
    "h265_transfer_syntax_accepted": ["1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"],
    "rle_transfer_syntax_accepted": ["1.2.840.10008.1.2.5"],
}


class _SharedContexts(list):  # type: ignore[type-arg, unused-ignore]
    """The accepted contexts, built once and shared by every association.

    pynetdicom deep-copies the server's context list for each association, which costs
    tens of milliseconds with every storage SOP class; negotiation only reads it.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedContexts:
        return self


def accepted_syntaxes(settings: Any) -> list[str]:
    out = [str(u) for u in UNCOMPRESSED]
    for attr, uids in OPTIONAL_SYNTAXES.items():
        if getattr(settings, attr):
            out.extend(uids)
    return out


def build_contexts(settings: Any) -> list[PresentationContext]:
    syntaxes = accepted_syntaxes(settings)
    contexts = []
    seen: set[str] = set()
    for cx in AllStoragePresentationContexts:
        ctx = PresentationContext()
        ctx.abstract_syntax = cx.abstract_syntax
        ctx.transfer_syntax = list(syntaxes)
        # Allow the peer to take the SCP role, so that C-GET can send to it.
        ctx.scu_role = True
        ctx.scp_role = True
        contexts.append(ctx)
        seen.add(str(cx.abstract_syntax))
    for uid in [
        VERIFICATION,
        *[str(c.abstract_syntax) for c in QueryRetrievePresentationContexts],
        "1.2.840.10008.5.1.4.31",
    ]:
        if uid in seen:
            continue
        ctx = PresentationContext()
        ctx.abstract_syntax = uid
        ctx.transfer_syntax = list(UNCOMPRESSED)
        contexts.append(ctx)
        seen.add(uid)
    return contexts


def _nodelay(event: evt.Event) -> None:
    try:
        wrapper = event.assoc.dul.socket
        sock = wrapper.socket if wrapper is not None else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass


def set_answer_value(ds: Dataset, keyword: str, value: str) -> None:
    """Put a string value from the index into a pydicom Dataset, typed by the tag's VR."""
    vr = vr_of(keyword)
    try:
        if vr == "SQ":
            setattr(ds, keyword, [])
        elif not value:
            setattr(ds, keyword, None)
        elif vr in ("US", "UL", "SS", "SL"):
            parts = [int(float(v)) for v in value.split("\\") if v]
            setattr(ds, keyword, parts if len(parts) > 1 else parts[0])
        elif vr in ("FL", "FD"):
            parts_f = [float(v) for v in value.split("\\") if v]
            setattr(ds, keyword, parts_f if len(parts_f) > 1 else parts_f[0])
        elif "\\" in value and vr not in ("LT", "ST", "UT"):
            setattr(ds, keyword, value.split("\\"))
        else:
            setattr(ds, keyword, value)
    except (ValueError, TypeError, OverflowError) as e:
        logger.debug("cannot answer %s=%r: %s", keyword, value, e)
        setattr(ds, keyword, None)


class DicomServer:
    """The DICOM side of pipacs; started and stopped by the server entry point."""

    def __init__(self, context: ServerContext, host: str = ""):
        self.context = context
        self.host = host
        s = context.settings
        fastpaths.install(s.fast_paths)  # done by the server already; idempotent
        _config.UNRESTRICTED_STORAGE_SERVICE = s.unknown_sop_class_accepted
        _config.LOG_REQUEST_IDENTIFIERS = False
        # pynetdicom's standard handlers format every PDU and DIMSE message; keep them for
        # --trace only.
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            _config.LOG_HANDLER_LEVEL = "none"
        _config.LOG_RESPONSE_IDENTIFIERS = False
        self.ae = AE(ae_title=s.dicom_aet)
        self.ae.maximum_pdu_size = s.maximum_pdu_length
        self.ae.network_timeout = s.dicom_scp_timeout or None
        self.ae.dimse_timeout = s.dicom_scp_timeout or None
        self.ae.acse_timeout = max(s.dicom_scp_timeout, 10)
        self.ae.maximum_associations = 32
        self.ae.require_called_aet = False  # checked in _on_requested, honouring case rules
        self.contexts = _SharedContexts(build_contexts(s))
        self.server: Any = None

    def handlers(self) -> list[tuple[Any, Any, list[Any]] | tuple[Any, Any]]:
        ctx = self.context
        return [
            (evt.EVT_CONN_OPEN, _nodelay),
            (evt.EVT_REQUESTED, _on_requested, [ctx]),
            (evt.EVT_C_ECHO, handle_echo, [ctx]),
            (evt.EVT_C_STORE, handle_store, [ctx]),
            (evt.EVT_C_FIND, handle_find, [ctx]),
            (evt.EVT_C_MOVE, handle_move, [ctx]),
            (evt.EVT_C_GET, handle_get, [ctx]),
        ]

    def start(self) -> None:
        port = self.context.settings.dicom_port
        self.server = self.ae.make_server(
            (self.host, port), evt_handlers=self.handlers(), contexts=self.contexts
        )
        self.server.contexts = self.contexts
        # pynetdicom's own start_server polls for shutdown every 0.5 s; 0.1 s keeps SIGTERM
        # handling well under a second.
        self.ae._servers.append(self.server)
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="dicom-acceptor",
            daemon=True,
        )
        self._thread.start()
        logger.info(
            "DICOM server listening on port %d as %s", port, self.context.settings.dicom_aet
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.ae.shutdown()


# ---------------------------------------------------------------- access control


def _aet_equal(a: str, b: str, strict: bool) -> bool:
    a, b = a.strip(), b.strip()
    return a == b if strict else a.upper() == b.upper()


def _peer(event: evt.Event) -> tuple[str, str]:
    req = event.assoc.requestor
    aet = req.ae_title
    if isinstance(aet, bytes):
        aet = aet.decode("ascii", "replace")
    return str(aet).strip(), str(req.address)


def _on_requested(event: evt.Event, ctx: ServerContext) -> None:
    """Refuse associations the configuration does not allow, before negotiation."""
    try:
        s = ctx.settings
        prim = event.assoc.requestor.primitive
        if prim is None:
            return
        called = str(prim.called_ae_title).strip()
        calling = str(prim.calling_ae_title).strip()
        address = str(event.assoc.requestor.address)
        if s.dicom_check_called_aet and not _aet_equal(
            called, s.dicom_aet, s.strict_aet_comparison
        ):
            logger.warning(
                "association from %s (%s) refused: called AET %r is not %r",
                calling,
                address,
                called,
                s.dicom_aet,
            )
            _reject(event, 0x07)
            return
        any_always = (
            s.dicom_always_allow_echo
            or s.dicom_always_allow_store
            or s.dicom_always_allow_find
            or s.dicom_always_allow_get
            or s.dicom_always_allow_move
        )
        if not any_always and ctx.modality_for(calling, address) is None:
            logger.warning("association from unknown AET %r (%s) refused", calling, address)
            _reject(event, 0x03)
    except Exception:
        logger.exception("association check failed")


def _reject(event: evt.Event, diagnostic: int) -> None:
    event.assoc.acse.send_reject(0x01, 0x01, diagnostic)
    event.assoc.kill()


def _allowed(event: evt.Event, ctx: ServerContext, operation: str) -> bool:
    s = ctx.settings
    if getattr(s, f"dicom_always_allow_{operation}"):
        return True
    aet, address = _peer(event)
    modality = ctx.modality_for(aet, address)
    if modality is not None and getattr(modality, f"allow_{operation}"):
        return True
    logger.warning(
        "%s from %r (%s) refused: not allowed by the configuration", operation.upper(), aet, address
    )
    return False


# ---------------------------------------------------------------- handlers


def handle_echo(event: evt.Event, ctx: ServerContext) -> int:
    try:
        return SUCCESS if _allowed(event, ctx, "echo") else NOT_AUTHORIZED
    except Exception:
        logger.exception("C-ECHO failed")
        return PROCESSING_FAILURE


def handle_store(event: evt.Event, ctx: ServerContext) -> int:
    try:
        if not _allowed(event, ctx, "store"):
            return NOT_AUTHORIZED
        aet, address = _peer(event)
        called = event.assoc.acceptor.ae_title
        req = cast(C_STORE, event.request)
        header = dicomfile.part10_header(
            str(req.AffectedSOPClassUID),
            str(req.AffectedSOPInstanceUID),
            str(event.context.transfer_syntax),
            aet,
        )
        data_set = req.DataSet
        if isinstance(data_set, BytesIO):
            # One copy of a large image instead of two (getvalue(), then the concatenation).
            raw = b"".join((header, data_set.getbuffer()))
        else:
            raw = header + event.encoded_dataset(include_meta=False)
        result = ctx.store(raw, Origin("DicomProtocol", aet, address, str(called).strip()))
        if result.status == "AlreadyStored":
            logger.debug("instance %s already stored", result.ids[INSTANCE])
        return SUCCESS
    except StoreRefused as e:
        logger.error("C-STORE from %s refused: %s", _peer(event)[0], e.message)
        if e.status:  # chosen by a filter (received_instance_filter)
            return e.status
        # A filtered instance is "out of resources", as Orthanc answers.
        return {"BadFile": CANNOT_UNDERSTAND, "Full": OUT_OF_RESOURCES,
                "Filtered": OUT_OF_RESOURCES}.get(e.reason, PROCESSING_FAILURE)
    except Exception:
        logger.exception("C-STORE failed")
        return PROCESSING_FAILURE


def _query_of(identifier: Dataset) -> tuple[str | None, dict[str, str], list[Any]]:
    level = None
    query: dict[str, str] = {}
    requested: list[Any] = []
    for elem in identifier:
        kw = elem.keyword
        if kw == "QueryRetrieveLevel":
            level = str(elem.value or "").strip().upper()
            continue
        if kw == "SpecificCharacterSet":
            continue
        requested.append(kw if kw else elem.tag)
        if kw and elem.VR != "SQ":
            try:
                query[kw] = dicomfile._format(elem.value)
            except (ValueError, UnicodeError):
                query[kw] = ""
    return level, query, requested


def handle_find(event: evt.Event, ctx: ServerContext) -> Iterator[tuple[int, Any]]:
    try:
        if not _allowed(event, ctx, "find"):
            yield NOT_AUTHORIZED, None
            return
        identifier = event.identifier
        model = str(event.request.AffectedSOPClassUID)
        if model == "1.2.840.10008.5.1.4.31":
            yield from ctx_worklist_find(event, ctx, identifier)
            return
        level_name, query, requested = _query_of(identifier)
        if level_name not in LEVELS:
            logger.error("C-FIND: bad QueryRetrieveLevel %r", level_name)
            yield IDENTIFIER_MISMATCH, None
            return
        level = LEVELS[level_name]
        s = ctx.settings
        limit = s.limit_find_instances if level == INSTANCE else s.limit_find_results
        matches, complete = ctx.find(level, query, limit=limit)
        encoded = fastpaths.installed("fast-responses")  # else pynetdicom encodes Datasets
        for match in matches:
            if event.is_cancelled:
                yield CANCEL, None
                return
            answer = Answer()
            answer.set("SpecificCharacterSet", "ISO_IR 192")
            answer.set("QueryRetrieveLevel", level_name)
            for key in requested:
                if isinstance(key, str):
                    answer.set(key, ctx.value_of(match, key))
                else:
                    answer.set_tag(key, identifier[key].VR)
            answer.set("RetrieveAETitle", s.dicom_aet)
            yield PENDING, answer if encoded else answer.to_dataset()
        if not complete:
            logger.warning("C-FIND answers cut at %d (LimitFindResults/LimitFindInstances)", limit)
        yield SUCCESS, None
    except QueryError as e:
        logger.error("C-FIND: %s", e)
        yield UNABLE_TO_PROCESS, None
    except Exception:
        logger.exception("C-FIND failed")
        yield UNABLE_TO_PROCESS, None


def ctx_worklist_find(
    event: evt.Event, ctx: ServerContext, identifier: Dataset
) -> Iterator[tuple[int, Dataset | None]]:
    """Modality worklist queries are answered by the worklists plugin when it is enabled."""
    provider = getattr(ctx, "worklist_provider", None)
    if provider is None:
        logger.warning("C-FIND on the worklist model, but the worklists plugin is off")
        yield IDENTIFIER_MISMATCH, None
        return
    yield from provider(event, identifier)


def _instances_for(ctx: ServerContext, identifier: Dataset) -> list[tuple[str, str, str, str, int]]:
    level_name, query, _ = _query_of(identifier)
    if level_name not in LEVELS:
        raise QueryError(f"bad QueryRetrieveLevel {level_name!r}")
    level = LEVELS[level_name]
    keys = {k: v for k, v in query.items() if k in dicomfile.LEVEL_UID[: level + 1] and v}
    if not keys:
        raise QueryError(f"no {dicomfile.LEVEL_UID[level]} in the retrieve identifier")
    matches, _ = ctx.find(level, keys)
    out = []
    for m in matches:
        out.extend(ctx.index.instances_under(m.rows[level], level))
    return out


def _retrieve_contexts(
    instances: list[tuple[str, str, str, str, int]],
) -> list[PresentationContext]:
    by_class: dict[str, list[str]] = {}
    for _, _, sop_class, ts, _ in instances:
        syntaxes = by_class.setdefault(sop_class or "", [])
        if ts and ts not in syntaxes:
            syntaxes.insert(0, ts)
    contexts = []
    for sop_class, syntaxes in sorted(by_class.items())[:128]:
        cx = PresentationContext()
        cx.abstract_syntax = sop_class
        cx.transfer_syntax = [*syntaxes, *(str(t) for t in UNCOMPRESSED[:2] if t not in syntaxes)]
        contexts.append(cx)
    return contexts


class _Unreadable:
    """Stands for an instance whose file cannot be read; pynetdicom counts it as failed."""

    def __bool__(self) -> bool:
        return True


def outgoing_dataset(ctx: ServerContext, public_id: str, sop_class: str, ts: str) -> Dataset:
    """A stored instance ready for C-STORE: its stored bytes when possible, decoded if not."""
    raw = ctx.read_instance(public_id)
    meta, _ = dicomfile.split_meta(raw)
    sop_uid = str(meta.get("MediaStorageSOPInstanceUID", "")) if meta else ""
    if meta and sop_uid and sop_class and ts and fastpaths.installed("rawsend"):
        return RawDataset(raw, sop_class, sop_uid, ts)
    return dicomfile.read_full(raw)


def _datasets(
    ctx: ServerContext, event: evt.Event, instances: list[tuple[str, str, str, str, int]]
) -> Iterator[tuple[int, Any]]:
    for public_id, _, sop_class, ts, _ in instances:
        if event.is_cancelled:
            yield CANCEL, None
            return
        try:
            ds = outgoing_dataset(ctx, public_id, sop_class, ts)
        except Exception as e:
            logger.error("cannot read instance %s to send it: %s", public_id, e)
            yield PENDING, _Unreadable()
            continue
        yield PENDING, ds


def handle_move(event: evt.Event, ctx: ServerContext) -> Iterator[Any]:
    try:
        if not _allowed(event, ctx, "move"):
            yield None, None
            return
        dest = event.move_destination
        if isinstance(dest, bytes):
            dest = dest.decode("ascii", "replace")
        dest = str(dest).strip()
        modality = None
        for m in ctx.settings.modalities.values():
            if _aet_equal(m.aet, dest, ctx.settings.strict_aet_comparison):
                modality = m
                break
        if modality is None:
            logger.error("C-MOVE to unknown destination %r refused", dest)
            yield None, None
            return
        try:
            instances = _instances_for(ctx, event.identifier)
        except QueryError as e:
            logger.error("C-MOVE: %s", e)
            yield modality.host, modality.port, {"ae_title": modality.aet}
            yield UNABLE_TO_PROCESS, None
            return
        yield (
            modality.host,
            modality.port,
            {
                "ae_title": modality.aet,
                "contexts": _retrieve_contexts(instances) or [build_context(VERIFICATION)],
                "evt_handlers": [(evt.EVT_CONN_OPEN, _nodelay)],
            },
        )
        yield len(instances)
        yield from _datasets(ctx, event, instances)
    except Exception:
        logger.exception("C-MOVE failed")
        yield UNABLE_TO_PROCESS, None


def handle_get(event: evt.Event, ctx: ServerContext) -> Iterator[Any]:
    try:
        if not _allowed(event, ctx, "get"):
            yield 0
            yield NOT_AUTHORIZED, None
            return
        try:
            instances = _instances_for(ctx, event.identifier)
        except QueryError as e:
            logger.error("C-GET: %s", e)
            yield 0
            return
        yield len(instances)
        yield from _datasets(ctx, event, instances)
    except Exception:
        logger.exception("C-GET failed")
        yield UNABLE_TO_PROCESS, None
