"""Event-driven waits for pynetdicom's reactor threads.

pynetdicom's DUL and association threads poll: each sleeps about a millisecond between
looks at its socket and queues. On one association every C-STORE pays those sleeps several
times, and idle associations keep waking up. This module replaces the two idle sleeps with
waits that end as soon as there is something to do:

- the DUL thread waits on its socket and on a pipe written whenever a primitive is queued
  for it to send (so a C-STORE response leaves at once), up to `IDLE_WAIT`;
- the association thread waits on an event set whenever its DIMSE queue receives a message,
  so a decoded request is served as soon as it is complete. (Not on the queue's own
  condition: a thread blocked in `get()` on the same queue, as in `send_c_store`, must keep
  its wake-up.)

Only the sleeps are swapped (through the `time` name each pynetdicom module uses); the
reactor loops themselves are pynetdicom's own.

It also replaces `AssociationSocket.recv`, which reads a PDU 4096 bytes per `recv()` call
and appends each piece to a bytearray: for a 0.5 MB CT image that was some 130 system calls
and copies on the DUL thread, which alone decodes every PDU while the sender waits. The
replacement reads straight into one buffer of the PDU's size (`recv_into`), usually in one
call per socket-buffer's worth.

`send_now` lets the association thread write a P-DATA-TF it encoded itself straight to the
socket, instead of queueing it for the DUL thread (a pipe write, a wake-up, a trip through
the state machine and pynetdicom's PDU encoder for every C-STORE response). It does so only
while the association is established, nothing is queued before it and no state machine
action runs (a lock taken around each action), so PDUs keep their order.

Each of these is a fast path that `pipacs.fastpaths.install()` applies after checking
pynetdicom's version and the names patched; `patch_pause` is a fix of pynetdicom's own.
"""

from __future__ import annotations

import os
import queue
import select
import struct
import threading
import time as _time
from typing import Any

from pynetdicom import association, dimse, dul, evt, fsm, transport
from pynetdicom.pdu_primitives import P_DATA

IDLE_WAIT = 0.02  # longest idle wait of a DUL thread: its timers have coarser resolution
RECV_BLOCK = 1 << 20  # most a PDU read allocates ahead of the bytes received


class _WakeQueue(queue.Queue):  # type: ignore[type-arg, unused-ignore]
    """A queue whose every put also writes a byte to a pipe a select() can watch."""

    def __init__(self) -> None:
        super().__init__()
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)

    def _put(self, item: Any) -> None:
        super()._put(item)
        if self.write_fd < 0:
            return
        try:
            os.write(self.write_fd, b"\0")
        except OSError:
            pass  # pipe full: the reader is awake anyway

    def drain(self) -> None:
        try:
            while os.read(self.read_fd, 512):
                pass
        except (BlockingIOError, OSError):
            pass

    def close(self) -> None:
        # _put runs under self.mutex too, so no put can write to a closed (reused) fd.
        with self.mutex:
            for fd in (self.read_fd, self.write_fd):
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.read_fd = self.write_fd = -1


class _SignalQueue(queue.Queue):  # type: ignore[type-arg, unused-ignore]
    """A queue that also sets an event on every put, for waiters that do not consume."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = threading.Event()

    def _put(self, item: Any) -> None:
        super()._put(item)
        self.arrived.set()


class _TimeFacade:
    """Stands in for the `time` module inside one pynetdicom module; only `sleep` differs."""

    def __init__(self, sleep: Any):
        self.sleep = sleep

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)


def _dul_sleep(seconds: float) -> None:
    t = threading.current_thread()
    if isinstance(t, dul.DULServiceProvider) and seconds == getattr(t, "_run_loop_delay", None):
        q = t.to_provider_queue
        sock = getattr(t.socket, "socket", None) if t.socket is not None else None
        if isinstance(q, _WakeQueue) and sock is not None and q.read_fd >= 0:
            if q.qsize():
                return
            try:
                select.select([sock, q.read_fd], [], [], IDLE_WAIT)
            except (OSError, ValueError):
                _time.sleep(seconds)
                return
            q.drain()
            return
    _time.sleep(seconds)


def _association_sleep(seconds: float) -> None:
    t = threading.current_thread()
    if seconds == 0.001 and isinstance(t, association.Association):
        q = getattr(getattr(t, "dimse", None), "msg_queue", None)
        if isinstance(q, _SignalQueue):
            if not q.qsize():
                q.arrived.wait(seconds)
            q.arrived.clear()
            return
    _time.sleep(seconds)


def _recv(self: Any, nr_bytes: int) -> bytearray:
    """`AssociationSocket.recv`: read exactly `nr_bytes` (fewer if the peer closes).

    The buffer grows by at most `RECV_BLOCK` ahead of what has arrived, so a peer declaring
    a huge PDU length costs no more memory than the bytes it really sends.
    """
    sock = self.socket
    buf = bytearray(min(nr_bytes, RECV_BLOCK))
    nr_read = 0
    while nr_read < nr_bytes:
        if nr_read == len(buf):
            buf.extend(bytes(min(nr_bytes - nr_read, RECV_BLOCK)))
        # The slice is a temporary: released at once, so that buf can grow again.
        n = sock.recv_into(memoryview(buf)[nr_read:])
        if not n:  # the connection is broken: return what has come
            del buf[nr_read:]
            break
        nr_read += n
    return buf


_PDATA_HEAD = struct.Struct(">BBIIB")  # PDU type, reserved, PDU length, item length, context
_PDU_HEAD = struct.Struct(">BBL")
_ITEM_LENGTH = struct.Struct(">L")


def pdata_values(body: memoryview) -> list[tuple[int, memoryview]] | None:
    """The (context ID, presentation data value) items of a P-DATA-TF PDU's body, as views
    of it; None when the items do not fill the body exactly (pynetdicom decides then)."""
    items = []
    pos, end = 0, len(body)
    while pos < end:
        if pos + 6 > end:
            return None
        length = _ITEM_LENGTH.unpack_from(body, pos)[0]
        if length < 2 or pos + 4 + length > end:
            return None
        items.append((body[pos + 4], body[pos + 5:pos + 4 + length]))
        pos += 4 + length
    return items or None


# Largest A-ASSOCIATE, A-RELEASE or A-ABORT PDU read: the most presentation contexts a
# request can carry (128), with ten transfer syntaxes each, fit in about 40 KB.
ASSOCIATION_PDU_LIMIT = 64 * 1024
# A P-DATA-TF may exceed the maximum length we negotiated by this much (PDV item headers
# counted differently by some senders).
PDATA_SLACK = 1024


def recv_until(sock: Any, nr_bytes: int, deadline: float) -> bytearray:
    """Up to `nr_bytes` read from a socket by `deadline` (time.monotonic()); fewer when the
    peer closes or the deadline passes."""
    buf = bytearray()
    if sock is None:  # closed meanwhile
        return buf
    timeout = sock.gettimeout()
    try:
        while len(buf) < nr_bytes:
            left = deadline - _time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            chunk = sock.recv(min(nr_bytes - len(buf), RECV_BLOCK))
            if not chunk:
                break
            buf += chunk
    except OSError:  # the deadline (TimeoutError) or a broken connection
        pass
    finally:
        try:
            sock.settimeout(timeout)
        except OSError:
            pass
    return buf


def pdu_limit(dul_provider: Any, pdu_type: int) -> int:
    """The largest body length accepted for a PDU of this type on this association (0: any)."""
    if pdu_type != 0x04:
        return ASSOCIATION_PDU_LIMIT
    assoc = dul_provider.assoc
    local = assoc.acceptor if assoc.is_acceptor else assoc.requestor
    maximum = int(getattr(local, "maximum_length", 0) or 0)
    return maximum + PDATA_SLACK if maximum else 0


def _refuse(self: Any, pdu_type: int, length: int, limit: int) -> None:
    """Abort the association for a PDU over its limit, before reading its body: Evt19
    (invalid PDU) makes the state machine send an A-ABORT; the next read closes."""
    assoc = self.assoc
    peer = assoc.requestor if assoc.is_acceptor else assoc.acceptor
    dul.LOGGER.warning(
        "DICOM peer %s announced a PDU of type 0x%02X and %d bytes (at most %d): "
        "association aborted", getattr(peer, "address", "?"), pdu_type, length, limit)
    self._pipacs_refused = True
    self.event_queue.put("Evt19")
    if self.state_machine.current_state == "Sta2":
        # the acceptor's thread waits for the A-ASSOCIATE-RQ: no more (None: "timed out")
        self.to_user_queue.put(None)


def _read_pdu(self: Any, views: bool) -> None:
    """`DULServiceProvider._read_pdu_data`: read one PDU and queue its event and PDU.

    Its length is checked against `pdu_limit` from the 6-byte header, before the body is
    read: a peer announcing 4 GiB made pynetdicom buffer whatever it sent. With `views`
    (the "pdata-views" fast path), a P-DATA-TF's values are views of one buffer.
    """
    sock = self.socket
    if getattr(self, "_pipacs_refused", False):  # aborted: the rest is not read
        self.event_queue.put("Evt17")
        return
    if self.state_machine.current_state == "Sta1":
        # The connection is over (a request that missed its deadline): what the peer still
        # sends is not read, and the association thread closes the socket.
        _time.sleep(IDLE_WAIT)
        return
    # Before the association, the A-ASSOCIATE-RQ must arrive whole by a deadline (set by
    # dicom/slots.py): a byte now and then does not hold the connection.
    deadline = getattr(self, "request_deadline", None)
    if deadline is None or self.state_machine.current_state != "Sta2":
        deadline = None
    try:
        head = sock.recv(6) if deadline is None else recv_until(sock.socket, 6, deadline)
    except (OSError, TimeoutError) as exc:
        dul.LOGGER.error("Connection closed before the entire PDU was received")
        dul.LOGGER.exception(exc)
        self.event_queue.put("Evt17")
        return
    if len(head) != 6:  # closed: as pynetdicom, no message
        self.event_queue.put("Evt17")
        return
    pdu_type, _, pdu_length = _PDU_HEAD.unpack(head)
    if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
        dul.LOGGER.error(f"Unknown PDU type received '0x{pdu_type:02X}'")
        self.event_queue.put("Evt19")
        return
    limit = pdu_limit(self, pdu_type)
    if limit and pdu_length > limit:
        _refuse(self, pdu_type, pdu_length, limit)
        return
    try:
        body = sock.recv(pdu_length) if deadline is None else \
            recv_until(sock.socket, pdu_length, deadline)
    except (OSError, TimeoutError) as exc:
        dul.LOGGER.error("Connection closed before the entire PDU was received")
        dul.LOGGER.exception(exc)
        self.event_queue.put("Evt17")
        return
    if len(body) != pdu_length:
        dul.LOGGER.error(
            f"The received PDU is shorter than expected ({6 + len(body)} of "
            f"{6 + pdu_length} bytes received)"
        )
        self.event_queue.put("Evt17")
        return
    items = None
    assoc = self.assoc
    if views and pdu_type == 0x04 and not (
        assoc.get_handlers(evt.EVT_DATA_RECV) or assoc.get_handlers(evt.EVT_PDU_RECV)
    ):
        items = pdata_values(memoryview(body))
    if items is not None:
        pdu: Any = _ReceivedPData(items)
        event = "Evt10"
    else:
        try:
            pdu, event = self._decode_pdu(bytearray(head) + body)
        except Exception as exc:
            dul.LOGGER.error("Unable to decode the received PDU data")
            dul.LOGGER.exception(exc)
            self.event_queue.put("Evt19")
            return
    self.event_queue.put(event)
    self._recv_pdu.put(pdu)


def _read_pdu_data(self: Any) -> None:
    """`DULServiceProvider._read_pdu_data` with the "pdata-views" fast path.

    pynetdicom copied a P-DATA-TF about five times between the socket and the DIMSE layer
    (appending the body to the header, `bytes()`, slicing the items, slicing each value),
    all holding the GIL: for a 0.5 MB image as much time as decoding its PDUs. Here the
    body is read into one buffer and a P-DATA-TF's values are views of it, handed on in a
    P_DATA primitive as pynetdicom's own would be. Other PDUs, P-DATA-TFs whose items do not
    add up, and associations with PDU or data event handlers bound (``--trace``) go through
    pynetdicom's decoder; errors raise the same events it raises.
    """
    _read_pdu(self, True)


def _read_pdu_checked(self: Any) -> None:
    """`DULServiceProvider._read_pdu_data` with the PDU length limits only (fast paths off)."""
    _read_pdu(self, False)


class _ReceivedPData:
    """A received P-DATA-TF PDU whose values are views of the received bytes."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[int, memoryview]]):
        self.items = items

    def to_primitive(self) -> P_DATA:
        primitive = P_DATA()
        # pynetdicom's setter wants bytes; its DIMSE decoder takes any buffer
        primitive._presentation_data_value_list = self.items  # type: ignore[assignment]
        return primitive


def encode_pdata(context_id: int, pdv: bytes) -> bytes:
    """One P-DATA-TF PDU carrying one presentation data value (control header + data)."""
    return _PDATA_HEAD.pack(0x04, 0, 5 + len(pdv), 1 + len(pdv), context_id) + pdv


def send_now(provider: Any, data: bytes) -> bool:
    """Write encoded P-DATA-TF PDUs to the peer from the calling thread, when that keeps the
    PDUs' order and the association's state; False: queue them for the DUL thread."""
    lock = getattr(provider, "_action_lock", None)
    if lock is None:
        return False
    assoc = provider.assoc
    if assoc.get_handlers(evt.EVT_PDU_SENT) or assoc.get_handlers(evt.EVT_DATA_SENT):
        return False
    with lock:
        sock = provider.socket
        if (
            provider.to_provider_queue.qsize()
            or provider.state_machine.current_state != "Sta6"
            or sock is None
            or sock.socket is None
        ):
            return False
        sock.send(data)  # on failure it queues Evt17 (connection closed) as the DUL would
    return True


def patch_waits(p: Any) -> None:
    """Fast path "reactor-waits": the idle sleeps of the DUL and association threads become
    waits on their queues, and state machine actions take the lock `send_now` needs."""
    original_init = dul.DULServiceProvider.__init__
    original_run = dul.DULServiceProvider.run_reactor
    original_action = fsm.StateMachine.do_action
    original_dimse_init = dimse.DIMSEServiceProvider.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.to_provider_queue = _WakeQueue()
        self._action_lock = threading.Lock()

    def do_action(self: Any, event: str) -> None:
        lock = getattr(self.dul, "_action_lock", None)
        if lock is None:
            original_action(self, event)
            return
        with lock:
            original_action(self, event)

    def run_reactor(self: Any) -> None:
        try:
            original_run(self)
        finally:
            q = self.to_provider_queue
            if isinstance(q, _WakeQueue):
                q.close()

    def dimse_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_dimse_init(self, *args, **kwargs)
        self.msg_queue = _SignalQueue()

    p.set(dimse.DIMSEServiceProvider, "__init__", dimse_init)
    p.set(dul.DULServiceProvider, "__init__", init)
    p.set(fsm.StateMachine, "do_action", do_action)
    p.set(dul.DULServiceProvider, "run_reactor", run_reactor)
    p.set(dul, "time", _TimeFacade(_dul_sleep))
    p.set(association, "time", _TimeFacade(_association_sleep))


def patch_recv(p: Any) -> None:
    """Fast path "recv-into": `AssociationSocket.recv` reads a PDU into one buffer."""
    p.set(transport.AssociationSocket, "recv", _recv)


def patch_pdu_limits(p: Any) -> None:
    """Fix "pdu-limits": a PDU longer than `pdu_limit` aborts the association unread."""
    p.set(dul.DULServiceProvider, "_read_pdu_data", _read_pdu_checked)


def patch_read_pdu(p: Any) -> None:
    """Fast path "pdata-views": P-DATA-TF values handed on as views of the received PDU."""
    p.set(dul.DULServiceProvider, "_read_pdu_data", _read_pdu_data)


def patch_pause(p: Any) -> None:
    """Fix "reactor-pause": the association thread leaves DIMSE messages alone while a
    send_*() call has paused it.

    pynetdicom's send_c_store (and the other send_* methods) clear the association's
    `_reactor_checkpoint`, wait until its thread says `_is_paused`, send a request and take
    the response from the DIMSE queue. The flag can be stale: the thread sets it before its
    `checkpoint.wait()`, and that wait, once woken by the previous send, returns even though
    the next send has cleared the checkpoint again. The thread then takes the next response
    off the queue itself ("Received unexpected C-STORE service message") and the sender
    waits for it until the DIMSE timeout: under load, a C-MOVE's sub-operations failed after
    30 s. Here the thread's own (non-blocking) look at the queue finds nothing while the
    checkpoint is cleared; blocking gets, the senders', are unchanged.
    """
    original_get = dimse.DIMSEServiceProvider.get_msg

    def get_msg(self: Any, block: bool = False) -> Any:
        if not block:
            checkpoint = getattr(self.assoc, "_reactor_checkpoint", None)
            if checkpoint is not None and not checkpoint.is_set():
                return None, None
        return original_get(self, block)

    p.set(dimse.DIMSEServiceProvider, "get_msg", get_msg)
