"""waitress' HTTP channel for pipacs: Connection: close when KeepAlive is false, and the
"waitress-send" fast path (see `pipacs.fastpaths`): fewer copies, packets and reads."""

from __future__ import annotations

import os
import time
from typing import Any

from .. import fastpaths


def patch(p: Any) -> None:
    """Fast path "waitress-send": nothing to patch globally; `channel_class` reads whether it
    is installed (its targets checked) and builds its channel with it or without it."""


# A response header is sent in the same packet as a body up to this size; a larger body
# goes on its own (copying it to join them would cost more than the extra packet).
COALESCE_LIMIT = 64 * 1024


def channel_class(*, keep_alive: bool) -> Any:
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
