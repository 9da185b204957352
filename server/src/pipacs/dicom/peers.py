"""Who may associate and do what (DicomModalities, DicomAlwaysAllow*, the called AET), and
TCP_NODELAY on every DICOM connection."""

from __future__ import annotations

import logging
import socket
import threading
import weakref
from typing import Any

from pynetdicom import evt
from pynetdicom.events import EventHandlerType

from ..context import ServerContext

logger = logging.getLogger(__name__)


class Closed:
    """Associations whose connection has closed (the server's own and those pipacs requested:
    exports, queries, retrieves), held weakly until they are freed.

    The DICOM server collects garbage while some of them have finished their thread but are not
    freed yet (scp.Acceptor). Counting them at the close was too early: the association's
    thread was still running, a collection then could not free it, and none came after it
    (seen in CI: one Association of 20 exports left). Even a finished one may be held a moment
    longer by whoever requested it (an export's frame, until it returns): each is counted at up
    to TRIES checks, so a collection that missed it is followed by another, and one that
    something keeps for good costs a bounded number of collections.
    """

    TRIES = 3
    _entries: list[list[Any]] = []  # [weak reference, checks it was counted at]
    _lock = threading.Lock()

    PRUNE_AT = 256  # entries; without a DICOM server (DicomServerEnabled false) none counts

    @classmethod
    def add(cls, assoc: Any) -> None:
        with cls._lock:
            if len(cls._entries) >= cls.PRUNE_AT:  # keep those not freed yet
                cls._entries = [e for e in cls._entries if e[0]() is not None]
            cls._entries.append([weakref.ref(assoc), 0])

    @classmethod
    def finished(cls) -> int:
        """How many have finished their thread and are not freed yet (each counted at up to
        TRIES calls; those still running are kept, not counted)."""
        with cls._lock:
            entries, cls._entries = cls._entries, []
        kept = []
        count = 0
        for entry in entries:
            assoc = entry[0]()
            if assoc is None:
                continue  # freed
            if not assoc.is_alive():
                count += 1
                entry[1] += 1
            if entry[1] < cls.TRIES:
                kept.append(entry)
            assoc = None  # no strong reference outlives the count
        if kept:
            with cls._lock:
                cls._entries.extend(kept)
        return count


def ended(event: evt.Event) -> None:
    """EVT_CONN_CLOSE handler of every association, accepted or requested."""
    Closed.add(event.assoc)


def nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN handler: small PDUs (responses) leave at once."""
    try:
        wrapper = event.assoc.dul.socket
        sock = wrapper.socket if wrapper is not None else None
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass


def requested_handlers() -> list[EventHandlerType]:
    """The connection handlers of an association pipacs requests (exports, queries, retrieves):
    TCP_NODELAY, and counted for the DICOM server's collection once it has ended."""
    return [(evt.EVT_CONN_OPEN, nodelay), (evt.EVT_CONN_CLOSE, ended)]


def aet_equal(a: str, b: str, strict: bool) -> bool:
    a, b = a.strip(), b.strip()
    return a == b if strict else a.upper() == b.upper()


def peer_of(event: evt.Event) -> tuple[str, str]:
    """The calling AET and the address of the event's association."""
    req = event.assoc.requestor
    aet = req.ae_title
    if isinstance(aet, bytes):
        aet = aet.decode("ascii", "replace")
    return str(aet).strip(), str(req.address)


def on_requested(event: evt.Event, ctx: ServerContext) -> None:
    """Refuse associations the configuration does not allow, before negotiation."""
    try:
        s = ctx.settings
        prim = event.assoc.requestor.primitive
        if prim is None:
            return
        called = str(prim.called_ae_title).strip()
        calling = str(prim.calling_ae_title).strip()
        address = str(event.assoc.requestor.address)
        if s.dicom_check_called_aet and not aet_equal(
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


def allowed(event: evt.Event, ctx: ServerContext, operation: str) -> bool:
    """Whether the peer may run `operation` ("echo", "store", "find", "get", "move")."""
    s = ctx.settings
    if getattr(s, f"dicom_always_allow_{operation}"):
        return True
    aet, address = peer_of(event)
    modality = ctx.modality_for(aet, address)
    if modality is not None and getattr(modality, f"allow_{operation}"):
        return True
    logger.warning(
        "%s from %r (%s) refused: not allowed by the configuration", operation.upper(), aet, address
    )
    return False
