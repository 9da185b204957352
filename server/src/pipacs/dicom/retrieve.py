"""What C-MOVE, C-GET and the SCU send: the instances a retrieve identifier names, read back
as stored (their bytes unchanged when the rawsend fast path is installed)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from .. import dicomfile, fastpaths, transcode
from ..context import ServerContext
from ..matching import QueryError
from .find import LEVELS, query_of
from .rawsend import RawDataset
from .statuses import CANCEL, PENDING, UNABLE_TO_PROCESS

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


class PeerSyntaxes:
    """The transfer syntaxes a C-STORE peer accepted per SOP class, and whether pipacs may
    transcode for it (TranscodeDicomProtocol, the modality's AllowTranscoding)."""

    def __init__(self, ctx: ServerContext, assoc: Any = None, allow: bool = True):
        s = ctx.settings
        self.assoc = assoc
        self.allow = allow and s.transcode_dicom_protocol
        self.preferred = s.dicom_scu_preferred_transfer_syntax
        self.quality = s.dicom_lossy_transcoding_quality

    def established(self, event: evt.Event) -> None:
        """EVT_ESTABLISHED of a C-MOVE's sub-association: the contexts are known now."""
        self.assoc = event.assoc

    def target(self, sop_class: str, stored: str) -> str:
        """The syntax to send an instance in; TranscodeError when the peer accepts none that
        pipacs can send it in."""
        if self.assoc is None:
            return stored
        accepted = [str(cx.transfer_syntax[0]) for cx in self.assoc.accepted_contexts
                    if str(cx.abstract_syntax) == sop_class]
        found = transcode.choose(stored, accepted, self.preferred, self.allow)
        if found is None:
            raise transcode.TranscodeError(
                f"the peer accepts {', '.join(accepted) or 'no transfer syntax'} for "
                f"{sop_class}, not the stored {stored}"
                + ("" if self.allow else ", and transcoding is off for it"))
        return found


def outgoing_dataset(ctx: ServerContext, public_id: str, sop_class: str, ts: str,
                     peer: PeerSyntaxes | None = None) -> Dataset:
    """A stored instance ready for C-STORE: its stored bytes when possible, decoded if not;
    transcoded when the peer does not accept its syntax."""
    raw = ctx.read_instance(public_id)
    target = peer.target(sop_class, ts) if peer is not None and ts else ts
    if target != ts:
        assert peer is not None
        raw = transcode.transcode(raw, target, allow_lossy=target == peer.preferred,
                                  quality=peer.quality)
        logger.info("instance %s sent as %s (stored as %s)", public_id, target, ts)
        ts = target
    meta, _ = dicomfile.split_meta(raw)
    sop_uid = str(meta.get("MediaStorageSOPInstanceUID", "")) if meta else ""
    if meta and sop_uid and sop_class and ts and fastpaths.installed("rawsend"):
        return RawDataset(raw, sop_class, sop_uid, ts)
    return dicomfile.read_full(raw)


def datasets(
    ctx: ServerContext, event: evt.Event, instances: list[Instance], peer: PeerSyntaxes
) -> Iterator[tuple[int, Any]]:
    """The (PENDING, dataset) sub-operations of a C-MOVE/C-GET handler, until cancelled; an
    instance the peer cannot take in any syntax pipacs can send ends it (Orthanc: 0xC000
    family, UnableToProcess)."""
    for public_id, _, sop_class, ts, _ in instances:
        if event.is_cancelled:
            yield CANCEL, None
            return
        try:
            ds = outgoing_dataset(ctx, public_id, sop_class, ts, peer)
        except transcode.TranscodeError as e:
            logger.error("cannot send instance %s: %s", public_id, e)
            yield UNABLE_TO_PROCESS, None
            return
        except Exception as e:
            logger.error("cannot read instance %s to send it: %s", public_id, e)
            yield PENDING, Unreadable()
            continue
        yield PENDING, ds
