"""C-STORE SCP: the received bytes, with a Part 10 header, go to the context as they are."""

from __future__ import annotations

import logging
from io import BytesIO
from typing import cast

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE

from .. import dicomfile
from ..context import Origin, ServerContext, StoreRefused
from ..ids import INSTANCE
from .peers import allowed, peer_of
from .statuses import (
    CANNOT_UNDERSTAND,
    NOT_AUTHORIZED,
    OUT_OF_RESOURCES,
    PROCESSING_FAILURE,
    SUCCESS,
)

logger = logging.getLogger(__name__)

# A refusal's reason -> the status answered; a filtered instance is "out of resources", as
# Orthanc answers.
REFUSED = {"BadFile": CANNOT_UNDERSTAND, "Full": OUT_OF_RESOURCES, "Filtered": OUT_OF_RESOURCES}


def handle_store(event: evt.Event, ctx: ServerContext) -> int:
    try:
        if not allowed(event, ctx, "store"):
            return NOT_AUTHORIZED
        aet, address = peer_of(event)
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
        logger.error("C-STORE from %s refused: %s", peer_of(event)[0], e.message)
        if e.status:  # chosen by a filter (received_instance_filter)
            return e.status
        return REFUSED.get(e.reason, PROCESSING_FAILURE)
    except Exception:
        logger.exception("C-STORE failed")
        return PROCESSING_FAILURE
