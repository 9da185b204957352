"""C-MOVE SCP: the named instances go to a modality of DicomModalities."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pynetdicom import evt
from pynetdicom.presentation import build_context

from ..context import ServerContext
from .contexts import VERIFICATION, retrieve_contexts
from .peers import aet_equal, allowed, nodelay
from .retrieve import PeerSyntaxes, datasets, requested_instances
from .statuses import UNABLE_TO_PROCESS

logger = logging.getLogger(__name__)


def handle_move(event: evt.Event, ctx: ServerContext) -> Iterator[Any]:
    try:
        if not allowed(event, ctx, "move"):
            yield None, None
            return
        dest = event.move_destination
        if isinstance(dest, bytes):
            dest = dest.decode("ascii", "replace")
        dest = str(dest).strip()
        modality = None
        for m in ctx.settings.modalities.values():
            if aet_equal(m.aet, dest, ctx.settings.strict_aet_comparison):
                modality = m
                break
        if modality is None:
            logger.error("C-MOVE to unknown destination %r refused", dest)
            yield None, None
            return
        instances = requested_instances(ctx, event, "C-MOVE")
        if instances is None:
            yield modality.host, modality.port, {"ae_title": modality.aet}
            yield UNABLE_TO_PROCESS, None
            return
        peer = PeerSyntaxes(ctx, allow=modality.allow_transcoding)
        contexts = retrieve_contexts(instances, peer.preferred if peer.allow else None)
        yield (
            modality.host,
            modality.port,
            {
                "ae_title": modality.aet,
                "contexts": contexts or [build_context(VERIFICATION)],
                "evt_handlers": [(evt.EVT_CONN_OPEN, nodelay),
                                 (evt.EVT_ESTABLISHED, peer.established)],
            },
        )
        yield len(instances)
        yield from datasets(ctx, event, instances, peer)
    except Exception:
        logger.exception("C-MOVE failed")
        yield UNABLE_TO_PROCESS, None
