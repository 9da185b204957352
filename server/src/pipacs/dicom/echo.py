"""C-ECHO SCP: the verification service."""

from __future__ import annotations

import logging

from pynetdicom import evt

from ..context import ServerContext
from .peers import allowed
from .statuses import NOT_AUTHORIZED, PROCESSING_FAILURE, SUCCESS

logger = logging.getLogger(__name__)


def handle_echo(event: evt.Event, ctx: ServerContext) -> int:
    try:
        return SUCCESS if allowed(event, ctx, "echo") else NOT_AUTHORIZED
    except Exception:
        logger.exception("C-ECHO failed")
        return PROCESSING_FAILURE
