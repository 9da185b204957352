"""The DICOM SCP: pynetdicom's server with pipacs' handlers bound (one module per service:
echo, store, find, move, get), started and stopped by the server entry point."""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.transport import AssociationServer

from .. import fastpaths
from ..context import ServerContext
from .contexts import SharedContexts, build_contexts
from .echo import handle_echo
from .find import handle_find
from .get import handle_get
from .move import handle_move
from .peers import Closed, ended, nodelay, on_requested
from .slots import AddressCap, request_arrived, request_deadline
from .store import handle_store

logger = logging.getLogger(__name__)

LISTEN_BACKLOG = 128


class Acceptor(AssociationServer):
    """pynetdicom's server, collecting garbage only after associations have ended.

    An ended association's objects are held in reference cycles; pynetdicom's loop frees them
    with a full `gc.collect()` every 60 turns, whatever happened: every 6 s on an idle server
    polled every 0.1 s. A full collection of pipacs' heap takes 12 ms on the test machine (a
    Pi 3 is about ten times slower) with every other thread held. Here it runs only while an
    association (this server's, or one pipacs requested) has ended and is not freed yet
    (peers.Closed), at most once per GC_SECONDS: an idle server never collects, a busy one as
    often as before.
    """

    GC_SECONDS = 6.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accepted = 0  # associations started (each in its own thread)
        self.collections = 0
        self._ended_at_last_gc = 0
        self._checked_at = time.monotonic()  # when ended associations were last counted

    def process_request(self, request: Any, client_address: Any) -> None:
        # the association's thread is started before this returns, in this thread
        self.accepted += 1
        super().process_request(request, client_address)

    def service_actions(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.GC_SECONDS:
            return
        # an association counts from its thread's end until it is freed (Closed); the counter
        # of accepted ones gone from the running threads covers one whose connection-close
        # event never came
        finished = Closed.finished()
        ended = self.accepted - len(self.active_associations)
        if finished or ended > self._ended_at_last_gc:
            gc.collect()
            self.collections += 1
            self._ended_at_last_gc = ended
        self._checked_at = now


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
        self.ae.require_called_aet = False  # checked in on_requested, honouring case rules
        self.contexts = SharedContexts(build_contexts(s))
        self.server: Any = None
        context.add_listener(self._on_event)

    def _on_event(self, event: str, payload: dict[str, Any]) -> None:
        """PUT /tools/accepted-transfer-syntaxes: new associations negotiate the new list."""
        if event == "SettingsChanged" and "Contexts" in payload:
            self.contexts[:] = payload["Contexts"]

    def handlers(self) -> list[tuple[Any, Any, list[Any]] | tuple[Any, Any]]:
        ctx = self.context
        return [
            (evt.EVT_CONN_OPEN, nodelay),
            (evt.EVT_CONN_CLOSE, ended),
            (evt.EVT_CONN_OPEN, request_deadline,
             [ctx.settings.dicom_association_request_timeout]),
            (evt.EVT_REQUESTED, request_arrived),
            (evt.EVT_REQUESTED, on_requested, [ctx]),
            (evt.EVT_C_ECHO, handle_echo, [ctx]),
            (evt.EVT_C_STORE, handle_store, [ctx]),
            (evt.EVT_C_FIND, handle_find, [ctx]),
            (evt.EVT_C_MOVE, handle_move, [ctx]),
            (evt.EVT_C_GET, handle_get, [ctx]),
        ]

    def start(self) -> None:
        port = self.context.settings.dicom_port
        self.server = self.ae.make_server(
            (self.host, port), evt_handlers=self.handlers(), contexts=self.contexts,
            server_class=Acceptor,
        )
        self.server.contexts = self.contexts
        AddressCap(self.server, self.context.settings.dicom_associations_per_address)
        # socketserver listens with a backlog of 5: a burst of connections had its SYNs
        # dropped and retried after 1 s, 3 s, ... (modalities included)
        self.server.socket.listen(LISTEN_BACKLOG)
        # pynetdicom's own start_server polls for shutdown every 0.5 s; 0.1 s keeps SIGTERM
        # handling well under a second. The server's shutdown() takes itself out of the AE's
        # (private) list of servers, so it goes in there as start_server would put it.
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
