"""waitress' HTTP channel for pipacs: Connection: close when KeepAlive is false, limits
against hostile clients (connections per address, a deadline for the request headers, a
413 in Orthanc's shape), and the "waitress-send" fast path (see `pipacs.fastpaths`): fewer
copies, packets and reads."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from .. import fastpaths
from ..limits import AddressWarnings
from .errors import error_body

logger = logging.getLogger(__name__)


def patch(p: Any) -> None:
    """Fast path "waitress-send": nothing to patch globally; `channel_class` reads whether it
    is installed (its targets checked) and builds its channel with it or without it."""


# A response header is sent in the same packet as a body up to this size; a larger body
# goes on its own (copying it to join them would cost more than the extra packet).
COALESCE_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """What one HTTP client may hold: `per_address` connections at once (0: any), and
    `header_timeout` seconds to send a request's headers once it has begun (0: no deadline)."""

    per_address: int = 0
    header_timeout: float = 0.0
    # With AuthenticationEnabled: whether an Authorization value opens the API; a body over
    # EARLY_AUTH_BODY bytes without one is refused (401) before it is read.
    authorised: Callable[[str], bool] | None = None
    realm: str = ""


# waitress reads a whole body before the application sees the request: a 1 GiB upload
# without credentials was buffered before its 401. Bodies larger than this are checked
# from the headers.
EARLY_AUTH_BODY = 64 * 1024


def _guarded(base: Any, limits: Limits) -> Any:
    """`base` (a waitress channel class) with `limits` enforced, and waitress' own errors
    (a body over max_request_body_size, a malformed request) answered in Orthanc's JSON.

    waitress gives a connection a slot until HttpRequestTimeout seconds pass without a byte:
    205 half-sent requests, one byte every 29 s each, starved the server. Here a request's
    headers must be whole `header_timeout` seconds after its first byte (checked on every
    turn of waitress' loop, at least once a second), and one address holds at most
    `per_address` connections: the next ones are closed at once.
    """
    from waitress.parser import HTTPRequestParser
    from waitress.task import ErrorTask
    from waitress.utilities import Error

    class Unauthorized(Error):
        code = 401
        reason = "Unauthorized"

    class Parser(HTTPRequestParser):
        auth_checked = False

        def received(self, data: bytes) -> int:
            n = int(super().received(data))
            parser: Any = self  # waitress' attributes, untyped
            if limits.authorised is not None and not self.auth_checked \
                    and parser.headers_finished and not parser.completed \
                    and parser.error is None:
                self.auth_checked = True
                if (parser.chunked or parser.content_length > EARLY_AUTH_BODY) \
                        and not limits.authorised(parser.headers.get("AUTHORIZATION", "")):
                    parser.error = Unauthorized("authentication required")
                    parser.completed = True
            return n

    warnings = AddressWarnings(logger)

    def warn(address: str, what: str) -> None:
        warnings.warning(address, "HTTP connection from %s closed: %s", address, what)

    class OrthancErrorTask(ErrorTask):
        def execute(self) -> None:
            e = self.request.error
            if isinstance(e, Unauthorized):  # as the application answers it (http/auth.py)
                data = b"authentication required\n"
                headers = [("Content-Type", "text/plain"),
                           ("WWW-Authenticate", f'Basic realm="{limits.realm}"')]
            else:
                request = SimpleNamespace(method=self.request.command or "",
                                          path=self.request.path or "")
                data = json.dumps(error_body(e.code, e.reason, request, e.body),
                                  indent=3).encode()
                headers = [("Content-Type", "application/json")]
            self.status = f"{e.code} {e.reason}"
            self.response_headers.extend(headers)
            self.set_close_on_finish()
            self.content_length = len(data)
            self.write(data)

    class Guarded(base):
        error_task_class = OrthancErrorTask
        parser_class = Parser
        request_began = 0.0

        def __init__(self, server: Any, sock: Any, addr: Any, adj: Any,
                     map: Any = None) -> None:
            super().__init__(server, sock, addr, adj, map)
            if limits.per_address and isinstance(addr, tuple):
                address = addr[0]
                held = sum(1 for c in list(server.active_channels.values())
                           if isinstance(getattr(c, "addr", None), tuple)
                           and c.addr[0] == address)
                if held > limits.per_address:
                    warn(address, f"it already holds {limits.per_address} "
                                  "(HttpConnectionsPerAddress)")
                    self.handle_close()

        def received(self, data: bytes) -> bool:
            before = self.request
            try:
                return bool(super().received(data))
            finally:
                if self.request is not None and self.request is not before:
                    self.request_began = time.monotonic()

        def readable(self) -> bool:
            request = self.request
            if limits.header_timeout and request is not None \
                    and not request.headers_finished and not getattr(self, "will_close", False) \
                    and time.monotonic() - self.request_began > limits.header_timeout:
                address = self.addr[0] if isinstance(self.addr, tuple) else str(self.addr)
                warn(address, f"no whole request headers in {limits.header_timeout:g} s "
                              "(HttpHeaderTimeout)")
                self.will_close = True
                return False
            return bool(super().readable())

    return Guarded


def channel_class(*, keep_alive: bool, limits: Limits | None = None) -> Any:
    """The channel class for waitress: `_channel_class`'s, with `limits` enforced."""
    return _guarded(_channel_class(keep_alive=keep_alive), limits or Limits())


def _channel_class(*, keep_alive: bool) -> Any:
    """waitress' HTTP channel; with the "waitress-send" fast path installed, sending answers
    with fewer copies, packets and reads.

    waitress writes the header and the body separately, and with TCP_NODELAY each is a
    packet: the client waits for both, and small answers (GET /changes?last, a 39 KB file)
    paid ~10 % of their latency for it; here a small body goes out with its header in one
    send(). Bytes go straight to the socket when nothing is queued, files by sendfile()
    (see _send_or_queue). With KeepAlive false each task sees the request as if it asked for
    "Connection: close" (WSGI applications may not send hop-by-hop headers such as
    Connection, so the server decides).
    """
    from waitress.buffers import ReadOnlyFileBasedBuffer
    from waitress.channel import HTTPChannel
    from waitress.task import WSGITask

    class KeepAliveTask(WSGITask):
        def build_response_header(self) -> Any:
            if not keep_alive:
                self.request.headers["CONNECTION"] = "close"
            return super().build_response_header()

    if not fastpaths.installed("waitress-send"):

        class StockChannel(HTTPChannel):
            task_class = KeepAliveTask

        return StockChannel

    class Task(KeepAliveTask):
        def write(self, data: bytes) -> None:
            if self.wrote_header:
                return super().write(data)
            channel: Channel = self.channel
            channel.held = b""
            try:
                super().write(data)  # the header is held, the body joins it
            finally:
                held, channel.held = channel.held, None
            if held:
                channel.write_soon(held)  # no body (HEAD, 204, file wrapper) or a large one

    class Channel(HTTPChannel):
        task_class = Task
        held: bytes | None = None  # b"" while a task writes its header

        def write_soon(self, data: Any) -> int:
            held = self.held
            if held is None or not isinstance(data, bytes):
                return self._send_or_queue(data)
            if not held:
                self.held = data  # the header
                return len(data)
            self.held = None
            if len(data) > COALESCE_LIMIT:
                self._send_or_queue(held)
                return self._send_or_queue(data)
            self._send_or_queue(held + data)
            return len(data)

        def _send_or_queue(self, data: Any) -> int:
            """Send bytes straight away when nothing is queued before them.

            waitress copies every answer into its output buffer, reads it back and sends it
            from there; when the buffer is empty the bytes can go to the socket directly (the
            lock keeps the main loop from flushing meanwhile). What the socket does not take
            now is queued as usual. A file (wsgi.file_wrapper) goes by sendfile(): waitress
            would read each piece twice (once to send it, once to skip it).
            """
            if isinstance(data, ReadOnlyFileBasedBuffer):
                return self._send_file(data)
            if isinstance(data, bytes) and data and self.connected \
                    and not self.total_outbufs_len:
                with self.outbuf_lock:
                    if not self.total_outbufs_len:
                        try:
                            sent = self.send(data, do_close=False)
                        except OSError:
                            sent = 0  # queued below: waitress reports the error
                        if sent == len(data):
                            self.last_activity = time.time()
                            return sent
                        data = data[sent:]
            return super().write_soon(data)

        def _send_file(self, data: Any) -> int:
            size = data.remain
            try:
                source = data.file.fileno()
            except (AttributeError, OSError, ValueError):
                return super().write_soon(data)  # not a real file: waitress reads it
            if self.connected and not self.total_outbufs_len:
                with self.outbuf_lock:
                    if not self.total_outbufs_len:
                        offset = data.file.tell()
                        try:
                            while data.remain > 0:
                                n = os.sendfile(self.socket.fileno(), source, offset,
                                                data.remain)
                                if n <= 0:
                                    break
                                offset += n
                                data.remain -= n
                        except OSError:
                            pass  # full socket (or an error waitress reports when it sends)
                        data.file.seek(offset)  # waitress sends the rest from there
                        if not data.remain:
                            self.last_activity = time.time()
                            data.close()
                            return int(size)
            return super().write_soon(data)

    return Channel


# An answer whose bytes the client has not taken for this long is given up (a tablet gone
# out of range); HttpRequestTimeout still closes idle connections.
SEND_STALL = 300


def keep_slow_answers(server: Any) -> None:
    """waitress closes a connection when nothing moved on it for `channel_timeout`
    (HttpRequestTimeout) and no request is running, even while the end of an answer is still
    queued for a client that reads slowly: on a saturated classroom channel a tablet's
    connection waits behind its own others for more than 30 s, and its image was cut short.
    Idle connections still close after HttpRequestTimeout; one with unsent bytes after
    SEND_STALL seconds without progress."""

    def maintenance(now: float) -> None:
        idle = now - server.adj.channel_timeout
        stalled = now - max(SEND_STALL, server.adj.channel_timeout)
        for channel in list(server.active_channels.values()):
            if channel.requests:
                continue
            cutoff = stalled if channel.total_outbufs_len else idle
            if channel.last_activity < cutoff:
                channel.will_close = True

    server.maintenance = maintenance
