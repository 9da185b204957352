"""The DICOM SCU: C-ECHO and C-STORE to configured modalities, reusing idle associations."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE
from pynetdicom.presentation import PresentationContext

from .. import fastpaths
from ..config import Modality
from ..context import ServerContext
from .contexts import retrieve_contexts, verification_contexts
from .peers import requested_handlers
from .retrieve import PeerSyntaxes, outgoing_dataset
from .statuses import SUCCESS, SUCCESS_OR_WARNING

logger = logging.getLogger(__name__)


class ScuError(Exception):
    """A DICOM operation towards a modality failed; the message says how."""


@dataclass
class StoreReport:
    sent: int
    failed: list[str]


class Scu:
    """Outgoing DICOM operations; associations stay open DicomAssociationCloseDelay seconds."""

    def __init__(self, context: ServerContext):
        self.context = context
        s = context.settings
        fastpaths.install(s.fast_paths)  # done by the server already; idempotent
        self.ae = AE(ae_title=s.dicom_aet)
        self.ae.acse_timeout = s.dicom_scu_timeout
        self.ae.dimse_timeout = s.dicom_scu_timeout
        self.ae.network_timeout = s.dicom_scu_timeout
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str, int, tuple[Any, ...]], tuple[Any, float]] = {}
        self._reaper: threading.Timer | None = None

    def _associate(self, m: Modality, contexts: list[PresentationContext]) -> Any:
        key = (
            m.aet,
            m.host,
            m.port,
            tuple((c.abstract_syntax, tuple(c.transfer_syntax)) for c in contexts),
        )
        with self._lock:
            cached = self._idle.pop(key, None)
        if cached and cached[0].is_established:
            return key, cached[0]
        assoc = self.ae.associate(
            m.host,
            m.port,
            contexts=contexts,
            ae_title=m.aet,
            evt_handlers=requested_handlers(),
        )
        if not assoc.is_established:
            why = (
                "rejected"
                if assoc.is_rejected
                else "aborted"
                if assoc.is_aborted
                else "unreachable"
            )
            raise ScuError(
                f"cannot open an association with {m.name} ({m.aet}@{m.host}:{m.port}): {why}"
            )
        return key, assoc

    def _release(self, key: Any, assoc: Any) -> None:
        delay = self.context.settings.dicom_association_close_delay
        if delay <= 0 or not assoc.is_established:
            if assoc.is_established:
                assoc.release()
            return
        with self._lock:
            old = self._idle.pop(key, None)
            self._idle[key] = (assoc, time.monotonic() + delay)
            if self._reaper is None:
                self._reaper = threading.Timer(delay, self._reap)
                self._reaper.daemon = True
                self._reaper.start()
        if old and old[0] is not assoc and old[0].is_established:
            old[0].release()

    def _reap(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [k for k, (_, t) in self._idle.items() if t <= now]
            expired = [self._idle.pop(k)[0] for k in due]
            self._reaper = None
            if self._idle:
                wait = max(0.1, min(t for _, t in self._idle.values()) - now)
                self._reaper = threading.Timer(wait, self._reap)
                self._reaper.daemon = True
                self._reaper.start()
        for assoc in expired:
            if assoc.is_established:
                assoc.release()

    def close(self) -> None:
        with self._lock:
            idle = [a for a, _ in self._idle.values()]
            self._idle.clear()
            if self._reaper:
                self._reaper.cancel()
                self._reaper = None
        for assoc in idle:
            if assoc.is_established:
                assoc.release()

    def echo(self, m: Modality) -> None:
        key, assoc = self._associate(m, verification_contexts())
        try:
            status = assoc.send_c_echo()
        except Exception as e:
            assoc.abort()
            raise ScuError(f"C-ECHO to {m.name} failed: {e}") from e
        if not status or status.Status != SUCCESS:
            assoc.abort()
            raise ScuError(
                f"C-ECHO to {m.name} failed (status {getattr(status, 'Status', 'none')})"
            )
        self._release(key, assoc)

    def store(self, m: Modality, instance_ids: list[str]) -> StoreReport:
        """Send instances as stored; the report lists the ones that failed."""
        idx = self.context.index
        rows = []
        for pid in instance_ids:
            res = idx.get(pid)
            if res is None:
                raise ScuError(f"unknown instance {pid}")
            rows.extend(idx.instances_under(res.id, res.level))
        peer = PeerSyntaxes(self.context, allow=m.allow_transcoding)
        contexts = retrieve_contexts(rows, peer.preferred if peer.allow else None)
        if not contexts:
            return StoreReport(0, [])
        key, assoc = self._associate(m, contexts)
        peer.assoc = assoc
        failed = []
        sent = 0
        try:
            for public_id, _, sop_class, ts, _ in rows:
                try:
                    ds = outgoing_dataset(self.context, public_id, sop_class, ts, peer)
                    status = assoc.send_c_store(ds)
                except (OSError, ValueError, AttributeError) as e:  # TranscodeError too
                    logger.error("cannot send instance %s: %s", public_id, e)
                    status = None
                if status and status.Status in SUCCESS_OR_WARNING:
                    sent += 1
                    continue
                failed.append(public_id)
                if status:
                    logger.error("%s refused instance %s with status 0x%04X", m.name,
                                 public_id, status.Status)
                elif not assoc.is_established:
                    logger.error("the association with %s ended while sending %s: %s",
                                 m.name, public_id,
                                 "aborted" if assoc.is_aborted else "no answer in time")
                    break
        finally:
            self._release(key, assoc)
        return StoreReport(sent, failed)
