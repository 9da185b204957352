"""Running pipacs: the context, the DICOM server and the HTTP server, until a signal stops them."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from .config import Settings
from .context import ServerContext

logger = logging.getLogger(__name__)


class Server:
    """Everything one pipacs process runs; `start` returns once both ports listen."""

    def __init__(self, settings: Settings, *, upgrade: bool = False):
        self.settings = settings
        self.context = ServerContext(settings, upgrade=upgrade)
        self.dicom: Any = None
        self.http: Any = None
        self.tls: Any = None
        self._http_thread: threading.Thread | None = None
        self.stopped = threading.Event()
        self._done = threading.Event()
        self.restart = False
        self.context.shutdown_hook = self.request_stop

    def start(self) -> None:
        s = self.settings
        self.context.start()
        from .dicom.scp import DicomServer
        from .dicom.scu import Scu

        self.context.scu = Scu(self.context)  # the REST API's C-ECHO and C-STORE
        if s.dicom_server_enabled:

            self.dicom = DicomServer(self.context)
            self.dicom.start()
        if s.http_server_enabled:
            self._start_http()  # create_app installs the plugins with their routes
        else:
            from . import plugins

            self.context.plugins.enabled = plugins.install_all(None, self.context)

    def _start_http(self) -> None:
        from waitress.server import create_server

        from .http.app import create_app

        s = self.settings
        host = "0.0.0.0" if s.remote_access_allowed else "127.0.0.1"
        app = create_app(self.context)
        self.http = create_server(
            app,
            host="127.0.0.1" if s.ssl_enabled else host,  # behind the TLS front (tls.py)
            port=0 if s.ssl_enabled else s.http_port,
            threads=s.http_threads_count,
            channel_timeout=s.http_request_timeout,
            ident="pipacs",
            clear_untrusted_proxy_headers=True,
            expose_tracebacks=False,
            connection_limit=200,
            asyncore_use_poll=True,
        )
        if s.tcp_no_delay:
            import socket

            self.http.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.http.channel_class = _channel_class(keep_alive=s.keep_alive)
        if s.ssl_enabled:
            from .tls import TlsFront

            self.tls = TlsFront(
                host,
                s.http_port,
                self.http.effective_port,
                s.ssl_certificate,
                remote_allowed=s.remote_access_allowed,
                timeout=s.http_request_timeout,
            )
            self.context.tls_front = self.tls
            self.tls.start()
        self._http_thread = threading.Thread(target=self._serve_http, name="http", daemon=True)
        self._http_thread.start()
        logger.info("HTTP server listening on %s:%d", host, s.http_port)

    def _serve_http(self) -> None:
        try:
            self.http.run()
        except Exception:
            if not self.stopped.is_set():
                logger.exception("HTTP server stopped")

    def stop(self) -> None:
        if self.stopped.is_set():
            return
        self.stopped.set()
        t0 = time.monotonic()
        if self.dicom is not None:
            assocs = list(self.dicom.ae.active_associations)
            self.dicom.stop()  # aborts them; a store being indexed finishes first
            deadline = time.monotonic() + 0.8
            for a in assocs:
                a.join(timeout=max(0.0, deadline - time.monotonic()))
        if self.tls is not None:
            self.tls.stop()
        if self.http is not None:
            try:
                self.http.close()
            except Exception:
                pass
            if self.http.task_dispatcher is not None:
                self.http.task_dispatcher.shutdown(timeout=1)
        self.context.stop()
        logger.info("stopped in %.2f s", time.monotonic() - t0)

    def request_stop(self, restart: bool = False) -> None:
        """Stop serving (POST /tools/shutdown); with restart, run again (POST /tools/reset)."""
        self.restart = self.restart or restart
        self._done.set()

    def wait(self) -> None:
        """Serve until SIGTERM, SIGINT or request_stop; a restart re-executes the process."""
        done = self._done

        def on_signal(signum: int, frame: Any) -> None:
            logger.warning("signal %s received: stopping", signal.Signals(signum).name)
            done.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not done.wait(1.0):
            pass
        self.stop()
        if self.restart:
            import os
            import sys

            logger.warning("restarting")
            os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


# A response header is sent in the same packet as a body up to this size; a larger body
# goes on its own (copying it to join them would cost more than the extra packet).
COALESCE_LIMIT = 64 * 1024


def _channel_class(*, keep_alive: bool) -> Any:
    """waitress' HTTP channel, sending answers with fewer copies, packets and reads.

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

    class Task(WSGITask):
        def build_response_header(self) -> Any:
            if not keep_alive:
                self.request.headers["CONNECTION"] = "close"
            return super().build_response_header()

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
