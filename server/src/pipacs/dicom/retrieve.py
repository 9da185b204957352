"""What C-MOVE, C-GET and the SCU send: the instances a retrieve identifier names, read back
as stored (their bytes unchanged when the rawsend fast path is installed)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from .. import dicomfile, fastpaths
from ..context import ServerContext
from ..matching import QueryError
from .find import LEVELS, query_of
from .rawsend import RawDataset
from .statuses import CANCEL, PENDING

logger = logging.getLogger(__name__)

Instance = tuple[str, str, str, str, int]  # public ID, SOP instance UID, class, syntax, size


def instances_for(ctx: ServerContext, identifier: Dataset) -> list[Instance]:
    """The stored instances under what a C-MOVE/C-GET identifier names (its UIDs)."""
    level_name, query, _ = query_of(identifier)
    if level_name not in LEVELS:
        raise QueryError(f"bad QueryRetrieveLevel {level_name!r}")
    level = LEVELS[level_name]
    keys = {k: v for k, v in query.items() if k in dicomfile.LEVEL_UID[: level + 1] and v}
    if not keys:
        raise QueryError(f"no {dicomfile.LEVEL_UID[level]} in the retrieve identifier")
    matches, _ = ctx.find(level, keys)
    out = []
    for m in matches:
        out.extend(ctx.index.instances_under(m.rows[level], level))
    return out


def requested_instances(ctx: ServerContext, event: evt.Event, what: str) -> list[Instance] | None:
    """`instances_for` the event's identifier; None (logged) when it names none properly."""
    try:
        return instances_for(ctx, event.identifier)
    except QueryError as e:
        logger.error("%s: %s", what, e)
        return None


class Unreadable:
    """Stands for an instance whose file cannot be read; pynetdicom counts it as failed."""

    def __bool__(self) -> bool:
        return True


def outgoing_dataset(ctx: ServerContext, public_id: str, sop_class: str, ts: str) -> Dataset:
    """A stored instance ready for C-STORE: its stored bytes when possible, decoded if not."""
    raw = ctx.read_instance(public_id)
    meta, _ = dicomfile.split_meta(raw)
    sop_uid = str(meta.get("MediaStorageSOPInstanceUID", "")) if meta else ""
    if meta and sop_uid and sop_class and ts and fastpaths.installed("rawsend"):
        return RawDataset(raw, sop_class, sop_uid, ts)
    return dicomfile.read_full(raw)


def datasets(
    ctx: ServerContext, event: evt.Event, instances: list[Instance]
) -> Iterator[tuple[int, Any]]:
    """The (PENDING, dataset) sub-operations of a C-MOVE/C-GET handler, until cancelled."""
    for public_id, _, sop_class, ts, _ in instances:
        if event.is_cancelled:
            yield CANCEL, None
            return
        try:
            ds = outgoing_dataset(ctx, public_id, sop_class, ts)
        except Exception as e:
            logger.error("cannot read instance %s to send it: %s", public_id, e)
            yield PENDING, Unreadable()
            continue
        yield PENDING, ds
