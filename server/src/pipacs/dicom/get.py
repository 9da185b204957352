"""C-GET SCP: the named instances go back on the same association."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pynetdicom import evt

from ..context import ServerContext
from .peers import allowed, peer_of
from .retrieve import PeerSyntaxes, datasets, requested_instances
from .statuses import NOT_AUTHORIZED, UNABLE_TO_PROCESS

logger = logging.getLogger(__name__)


def handle_get(event: evt.Event, ctx: ServerContext) -> Iterator[Any]:
    try:
        if not allowed(event, ctx, "get"):
            yield 0
            yield NOT_AUTHORIZED, None
            return
        instances = requested_instances(ctx, event, "C-GET")
        if instances is None:
            yield 0
            return
        modality = ctx.modality_for(*peer_of(event))
        allow = modality.allow_transcoding if modality is not None else True
        yield len(instances)
        yield from datasets(ctx, event, instances, PeerSyntaxes(ctx, event.assoc, allow))
    except Exception:
        logger.exception("C-GET failed")
        yield UNABLE_TO_PROCESS, None
