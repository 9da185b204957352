"""Running pipacs: the context, the DICOM server and the HTTP server, until a signal stops them."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from . import fastpaths, pixels
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
        logger.info("%s", fastpaths.install(s.fast_paths))
        logger.info("%s", pixels.summary())
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
        from .http.auth import credentials_check
        from .http.channel import Limits, channel_class, keep_slow_answers

        s = self.settings
        host = "0.0.0.0" if s.remote_access_allowed else "127.0.0.1"
        app = create_app(self.context)
        self.http = create_server(
            app,
            host="127.0.0.1" if s.ssl_enabled else host,  # behind the TLS front (tls.py)
            port=0 if s.ssl_enabled else s.http_port,
            threads=s.http_threads_count,
            channel_timeout=s.http_request_timeout,
            # idle connections looked for this often (waitress: every 30 s)
            cleanup_interval=max(1, min(30, s.http_request_timeout // 2)),
            ident="pipacs",
            clear_untrusted_proxy_headers=True,
            expose_tracebacks=False,
            connection_limit=200,
            asyncore_use_poll=True,
            # waitress refuses a body from its Content-Length, or counts a chunked one as it
            # arrives (413, in Orthanc's shape: http/channel.py); its limit is exclusive
            max_request_body_size=(s.http_maximum_body_size << 20) + 1,
        )
        from .http.fairqueue import install as fair_queue

        fair_queue(self.http.task_dispatcher)  # clients served in turn (http/fairqueue.py)
        keep_slow_answers(self.http)  # an answer still being sent is not "idle"
        if s.tcp_no_delay:
            import socket

            self.http.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.http.channel_class = channel_class(keep_alive=s.keep_alive, limits=Limits(
            # behind the TLS front every connection is the front's: it caps them itself
            per_address=0 if s.ssl_enabled else s.http_connections_per_address,
            header_timeout=s.http_header_timeout,
            authorised=credentials_check(s.registered_users) if s.authentication_enabled
            else None,
            realm=s.name,
        ))
        if s.ssl_enabled:
            from .tls import TlsFront

            self.tls = TlsFront(
                host,
                s.http_port,
                self.http.effective_port,
                s.ssl_certificate,
                remote_allowed=s.remote_access_allowed,
                timeout=s.http_request_timeout,
                per_address=s.http_connections_per_address,
                header_timeout=s.http_header_timeout,
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
