"""The DICOM SCP: pynetdicom's server with pipacs' handlers bound (one module per service:
echo, store, find, move, get), started and stopped by the server entry point."""

from __future__ import annotations

import logging
import threading
from typing import Any

from pynetdicom import AE, _config, evt

from .. import fastpaths
from ..context import ServerContext
from .contexts import SharedContexts, build_contexts
from .echo import handle_echo
from .find import handle_find
from .get import handle_get
from .move import handle_move
from .peers import nodelay, on_requested
from .slots import AddressCap, request_arrived, request_deadline
from .store import handle_store

logger = logging.getLogger(__name__)

LISTEN_BACKLOG = 128


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
            (self.host, port), evt_handlers=self.handlers(), contexts=self.contexts
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
