"""Association slots: a deadline for the A-ASSOCIATE-RQ and a cap per IP address.

pynetdicom gives every TCP connection an association thread at once, and counts it against
`maximum_associations` while it waits for the A-ASSOCIATE-RQ (up to the ACSE timeout): 33
idle sockets from one student's laptop refused every modality for 30 s. Here a connection
has `DicomAssociationRequestTimeout` seconds to send its request, whole (a byte now and then
does not count: see `reactor.recv_until`), and one address holds at most
`DicomAssociationsPerAddress` connections at once; the next is closed unread, so other
addresses still find free slots.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pynetdicom import evt

from ..limits import AddressWarnings

logger = logging.getLogger(__name__)


def request_deadline(event: evt.Event, seconds: float) -> None:
    """EVT_CONN_OPEN handler: the A-ASSOCIATE-RQ must arrive within `seconds`."""
    assoc = event.assoc
    assoc.acse_timeout = seconds  # the acceptor's wait, and the DUL's ARTIM timer
    assoc.dul.request_deadline = time.monotonic() + seconds  # type: ignore[attr-defined]


def request_arrived(event: evt.Event) -> None:
    """EVT_REQUESTED handler: the association proper gets the AE's ACSE timeout back."""
    assoc = event.assoc
    assoc.dul.request_deadline = None  # type: ignore[attr-defined]
    assoc.acse_timeout = assoc.ae.acse_timeout


class AddressCap:
    """Wraps a pynetdicom server's request processing: at most `per_address` association
    threads alive at once for one IP address (0: no cap). pynetdicom's server handles each
    connection in its accepting thread (an association thread is started there), so the
    count is up to date at every accept."""

    def __init__(self, server: Any, per_address: int):
        self.server = server
        self.per_address = per_address
        self.warnings = AddressWarnings(logger)
        self._process = server.process_request
        server.process_request = self.process_request

    def busy(self, address: str) -> int:
        return sum(1 for a in self.server.active_associations
                   if a.is_acceptor and str(a.requestor.address) == address)

    def process_request(self, request: Any, client_address: Any) -> None:
        address = str(client_address[0])
        if self.per_address and self.busy(address) >= self.per_address:
            self.warnings.warning(address, "DICOM connection from %s closed: it already "
                                  "holds %d (DicomAssociationsPerAddress)", address,
                                  self.per_address)
            self.server.shutdown_request(request)
            return
        self._process(request, client_address)
