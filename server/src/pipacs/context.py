"""The server context: the one object the DICOM and HTTP layers call; it owns index and storage."""

from __future__ import annotations

import errno
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import dicomfile, peers, queries, transcode
from .config import Modality, Settings
from .dicomfile import DicomParseError, ParsedInstance
from .ids import INSTANCE, PATIENT
from .index import (
    METADATA_NUMBERS,
    DatabaseError,
    Index,
    IndexError_,
    IndexLock,
    now_iso,
    says_full,
)
from .jobs import JobEngine, disk_full
from .queries import Match
from .reindex import index_stored_file
from .services import PluginServices, ScuPool
from .storage import Attachment, SpaceReserve, StorageArea, StorageFullError, free_bytes
from .tls import TlsFront

logger = logging.getLogger(__name__)

# Less free space than this on the index's disk makes an SQLite I/O error a full disk.
FULL_BELOW = 256 * 1024


class StoreRefused(Exception):
    """An instance was not stored; `reason` is one of the names below, `message` says why."""

    def __init__(self, reason: str, message: str, *, status: int = 0):
        self.reason = reason  # "BadFile", "Full", "Filtered", "Failure"
        self.message = message
        self.status = status  # a C-STORE status chosen by a filter (0: the reason's own)
        super().__init__(message)


@dataclass
class StoreResult:
    status: str  # "Success" | "AlreadyStored"
    ids: tuple[str, str, str, str]
    parsed: ParsedInstance


@dataclass
class Origin:
    """Where an instance came from (metadata Orthanc records with it)."""

    kind: str = "Unknown"  # DicomProtocol, RestApi, Plugins, Lua
    remote_aet: str = ""
    remote_ip: str = ""
    called_aet: str = ""
    http_user: str = ""


Listener = Callable[[str, dict[str, Any]], None]
# Called before an instance is stored; raises StoreRefused("Filtered", ...) to refuse it.
StoreFilter = Callable[[ParsedInstance, Origin, bytes], None]


class ServerContext:
    """Owns the index and the storage area; everything else goes through it."""

    def __init__(self, settings: Settings, *, upgrade: bool = False):
        self.settings = settings
        self.started = time.time()
        self.storage = StorageArea(
            settings.storage_directory,
            compress=settings.storage_compression,
            md5=settings.store_md5_for_attachments,
            sync=settings.sync_storage_area,
        )
        self._lock = IndexLock(settings.index_dir)
        self.reserve = SpaceReserve(settings.index_dir)
        try:
            self.index = self._open_index(upgrade)
        except BaseException:
            self._lock.release()
            raise
        placed, reindexed, removed = self.storage.recover(
            self.index.has_attachment, self._reindex_staged
        )
        if placed or reindexed or removed:
            logger.warning(
                "recovered from an interrupted run: %d file(s) put in place, %d re-indexed, "
                "%d partial write(s) (never acknowledged) removed",
                placed,
                reindexed,
                removed,
            )
        # Indexed but not yet settled: files a full disk kept staged at recovery, then
        # every stored one until a batch is made durable.
        self._unsettled: list[str] = self.storage.staged()
        self._unsettled_lock = threading.Lock()
        self._settle_now = threading.Event()
        self._settler: threading.Thread | None = None
        self._listeners: list[Listener] = []
        self.filters: list[StoreFilter] = []
        self._stop = threading.Event()
        self._recycle_lock = threading.Lock()
        self._stability: threading.Thread | None = None
        # Set by the entry point: asks the process to stop (restart=True: start again).
        self.shutdown_hook: Callable[[bool], None] | None = None
        # What the context owns besides index and storage, stopped before them (see stop):
        # the job engine (its workers start with the first job), the DICOM SCU and the TLS
        # front (built by the Server with the DICOM and HTTP layers), the plugins' services.
        self.jobs = JobEngine(settings.concurrent_jobs, settings.limit_jobs,
                              functools.partial(disk_full, self))
        self.scu: ScuPool | None = None
        self.tls_front: TlsFront | None = None
        self.plugins = PluginServices()

    def _open_index(self, upgrade: bool) -> Index:
        """Open the index; on a full disk, with the help of the space reserve."""
        folder = self.settings.index_dir
        for attempt in (1, 2):
            try:
                index = Index(folder, upgrade=upgrade, sync=self.settings.sync_storage_area)
                break
            except IndexError_ as e:
                if not _low_on_space(folder):
                    raise
                if attempt == 1 and self.reserve.release():
                    continue
                raise IndexError_(
                    f"no space left on the disk holding the index {folder}: the index cannot "
                    "be opened. Free some space there and start again; the index is probably "
                    f"intact, so do not rebuild it before trying that ({e})"
                ) from e
        self.reserve.ensure()
        return index

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._stop.clear()
        self._stability = threading.Thread(
            target=self._stability_loop, name="stability", daemon=True
        )
        self._stability.start()
        self._settler = threading.Thread(target=self._settle_loop, name="settle", daemon=True)
        self._settler.start()

    def stop(self) -> None:
        """Stop in the reverse order of start: the Python hooks, the job engine (running jobs
        are cancelled and waited for), the SCU's associations, then the context's own
        threads; the index closes last, once nothing uses it any more."""
        for hooks in filter(None, (self.plugins.python_hooks, self.plugins.lua)):
            hooks.stop()
        self.jobs.stop()
        if self.scu is not None:
            self.scu.close()
        self._stop.set()
        self._settle_now.set()
        for t in (self._stability, self._settler):
            if t:
                t.join(timeout=5)
        self.settle()
        self.index.close()
        self._lock.release()

    # ------------------------------------------------------------ durability

    SETTLE_EVERY = 0.5  # seconds: staged files wait at most about this long
    SETTLE_BATCH = 256  # or this many

    RESERVE_EVERY = 30  # seconds: how often a released space reserve is tried again

    def _settle_loop(self) -> None:
        reserve_at = time.monotonic() + self.RESERVE_EVERY
        while not self._stop.is_set():
            self._settle_now.wait(self.SETTLE_EVERY)
            self._settle_now.clear()
            try:
                self.settle()
            except Exception:
                logger.exception("cannot make stored files durable")
            if time.monotonic() > reserve_at:
                reserve_at = time.monotonic() + self.RESERVE_EVERY
                self.reserve.ensure()

    def settle(self) -> int:
        """Make the index durable for everything stored so far, then move those files into
        place (see storage.StorageArea); returns how many files moved."""
        with self._unsettled_lock:
            batch, self._unsettled = self._unsettled, []
        if not batch:
            return 0
        left = batch
        try:
            self.index.make_durable()
            left = self.storage.settle(batch)
        finally:
            if left:  # not durable yet, or no room to move them: try again later
                with self._unsettled_lock:
                    self._unsettled[:0] = left
        try:
            self.index.checkpoint()
        except DatabaseError as e:  # a full index disk: the WAL keeps the commits meanwhile
            logger.debug("index checkpoint failed: %s", e)
        return len(batch) - len(left)

    def _reindex_staged(self, file_uuid: str, stored: bytes) -> bool | None:
        try:
            status = index_stored_file(self.index, self.settings, file_uuid, stored, time.time())
        except DicomParseError as e:
            logger.warning("staged file %s cannot be indexed: %s", file_uuid, e)
            return False
        except DatabaseError as e:  # a full disk: keep the file, try at the next start
            logger.error("staged file %s cannot be indexed now: %s", file_uuid, e)
            return None
        return status == "Success"

    def request_shutdown(self, restart: bool = False) -> bool:
        """Ask the server to stop (POST /tools/shutdown) or restart (/tools/reset)."""
        if self.shutdown_hook is None:
            return False
        self.shutdown_hook(restart)
        return True

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        for listener in self._listeners:
            try:
                listener(event, payload)
            except Exception:
                logger.exception("event listener failed on %s", event)

    # ------------------------------------------------------------ storing

    def store(
        self, raw: bytes, origin: Origin | None = None, *, transfer_syntax: str | None = None
    ) -> StoreResult:
        """Index and keep one instance exactly as received.

        `raw` is a Part 10 file, or a bare dataset when `transfer_syntax` is given.
        Raises StoreRefused; on any failure nothing is left behind.
        """
        origin, s = origin or Origin(), self.settings
        raw = transcode.ingest(s, raw)  # IngestTranscoding (a Part 10 file only)
        try:
            parsed = dicomfile.parse(raw, s.default_encoding, transfer_syntax)
        except DicomParseError as e:
            raise StoreRefused("BadFile", str(e)) from e
        if transfer_syntax and raw[128:132] != b"DICM":
            raw = dicomfile.ensure_part10(
                raw,
                parsed.sop_class_uid,
                parsed.uids[INSTANCE],
                parsed.transfer_syntax,
                origin.remote_aet,
            )
        self._filter(parsed, origin, raw)
        if not s.overwrite_instances and self.index.get(parsed.ids[INSTANCE]) is not None:
            return StoreResult("AlreadyStored", parsed.ids, parsed)
        try:
            self._make_room(len(raw), parsed.ids[PATIENT])
            att = self._write(raw, parsed.ids[PATIENT]) if s.store_dicom else None
        except StorageFullError as e:
            raise StoreRefused("Full", str(e)) from e
        except OSError as e:
            raise StoreRefused("Failure", f"cannot write to the storage area: {e}") from e
        meta = {
            METADATA_NUMBERS["ReceptionDate"]: now_iso(),
            METADATA_NUMBERS["Origin"]: origin.kind,
            METADATA_NUMBERS["TransferSyntax"]: parsed.transfer_syntax,
            METADATA_NUMBERS["SopClassUid"]: parsed.sop_class_uid,
        }
        for key, value in (
            ("RemoteAET", origin.remote_aet),
            ("RemoteIP", origin.remote_ip),
            ("CalledAET", origin.called_aet),
            ("HttpUsername", origin.http_user),
        ):
            if value:
                meta[METADATA_NUMBERS[key]] = value
        try:
            outcome = self.index.store_instance(
                parsed.ids, parsed.uids, parsed.tags, att, meta, overwrite=s.overwrite_instances
            )
        except Exception as e:
            if att:
                self.storage.discard(att.uuid)
            logger.error("cannot index instance %s: %s", parsed.ids[INSTANCE], e)
            if self.index_is_full(e):
                raise StoreRefused("Full", str(self._index_full(e))) from e
            raise StoreRefused("Failure", f"cannot index the instance: {e}") from e
        if att:
            if outcome.status == "AlreadyStored":
                self.storage.discard(att.uuid)
            else:
                with self._unsettled_lock:
                    self._unsettled.append(att.uuid)
                    if len(self._unsettled) >= self.SETTLE_BATCH:
                        self._settle_now.set()
        for old in outcome.removed_files:
            self.storage.remove(old)
        result = StoreResult(outcome.status, parsed.ids, parsed)
        if outcome.status == "Success":
            self._emit("stored", {"result": result, "origin": origin, "created": outcome.created})
        return result

    def _index_full(self, e: BaseException) -> StorageFullError:
        return StorageFullError(
            errno.ENOSPC, f"no space left for the index in {self.settings.index_dir} ({e})"
        )

    def index_is_full(self, e: BaseException) -> bool:
        """Whether an index error means its disk is full (SQLite names only some cases)."""
        if not isinstance(e, DatabaseError):
            return False
        if says_full(e):
            return True
        return _low_on_space(self.settings.index_dir)

    def _filter(self, parsed: ParsedInstance, origin: Origin, raw: bytes) -> None:
        """Run the store filters; a filter that fails (other than refusing) is logged."""
        for check in self.filters:
            try:
                check(parsed, origin, raw)
            except StoreRefused:
                raise
            except Exception:
                logger.exception("store filter %r failed; the instance is accepted", check)

    def _write(self, raw: bytes, patient: str) -> Attachment:
        """Write to the storage area; when its disk is full and recycling is on, recycle the
        oldest unprotected patients until the file fits (a MaximumStorageSize larger than
        the disk must not turn recycling into refusals)."""
        s = self.settings
        recycling = s.maximum_storage_mode == "Recycle" and bool(
            s.maximum_storage_size or s.maximum_patient_count
        )
        while True:
            try:
                return self.storage.write(raw)
            except StorageFullError:
                if not recycling:
                    raise
                with self._recycle_lock:
                    victim = self.index.oldest_unprotected_patient(exclude=patient)
                    if victim is None:
                        raise
                    logger.warning("the storage disk is full: recycling patient %s", victim)
                    self.delete(victim)

    def _make_room(self, incoming: int, patient: str) -> None:
        s = self.settings
        max_bytes = s.maximum_storage_size * 1024 * 1024
        if not max_bytes and not s.maximum_patient_count:
            return
        with self._recycle_lock:
            while True:
                used = self.index.total_sizes()[0]
                patients = self.index.counts()[PATIENT]
                new_patient = self.index.get(patient, PATIENT) is None
                too_big = bool(max_bytes) and used + incoming > max_bytes
                too_many = (
                    bool(s.maximum_patient_count)
                    and new_patient
                    and patients >= s.maximum_patient_count
                )
                if not (too_big or too_many):
                    return
                if s.maximum_storage_mode == "Reject":
                    raise StoreRefused(
                        "Full",
                        "the storage is full (MaximumStorageSize or MaximumPatientCount reached)",
                    )
                victim = self.index.oldest_unprotected_patient(exclude=patient)
                if victim is None:
                    raise StoreRefused(
                        "Full",
                        "the storage is full and every other patient is protected from recycling",
                    )
                logger.info("recycling patient %s to make room", victim)
                self.delete(victim)

    # ------------------------------------------------------------ reading and deleting

    def read_instance(self, public_id: str) -> bytes:
        res = self.index.get(public_id, INSTANCE)
        if res is None:
            raise KeyError(public_id)
        att = self.index.attachment(res.id)
        if att is None:
            raise FileNotFoundError(
                f"instance {public_id} is indexed without its DICOM file (StoreDicom was false)"
            )
        return self.storage.read(att)

    def delete(self, public_id: str) -> list[tuple[int, str]]:
        """Delete a resource and its files. Deleting is how a full disk gets room back, so
        when the index has no room to record it, the index's space reserve is given up.
        Raises StorageFullError when even that is not enough."""
        try:
            uuids, deleted = self.index.delete(public_id)
        except DatabaseError as e:
            if not self.index_is_full(e):
                raise
            if not self.reserve.release():
                raise self._index_full(e) from e
            try:
                uuids, deleted = self.index.delete(public_id)
            except DatabaseError as e2:
                if not self.index_is_full(e2):
                    raise
                raise self._index_full(e2) from e2
        for u in uuids:
            self.storage.remove(u)
        if deleted:
            self._emit("deleted", {"resources": deleted})
        return deleted

    # ------------------------------------------------------------ finding (see queries)

    def find(
        self,
        level: int,
        query: dict[str, str],
        *,
        case_sensitive_pn: bool | None = None,
        limit: int = 0,
    ) -> tuple[list[Match], bool]:
        """Resources at `level` matching every constraint; returns (matches, complete).

        Raises matching.QueryError for a malformed constraint.
        """
        cs_pn = self.settings.case_sensitive_pn if case_sensitive_pn is None else case_sensitive_pn
        return queries.find(self.index, level, query, case_sensitive_pn=cs_pn, limit=limit,
                            value_of=self.value_of)

    def value_of(self, match: Match, keyword: str) -> str:
        """The value of a tag for a found resource: main tags, computed tags, then the file."""
        return queries.value_of(self.index, match, keyword, aet=self.settings.dicom_aet,
                                read_instance=self.read_instance)

    # ------------------------------------------------------------ peers

    def modality_for(self, aet: str, host: str | None = None) -> Modality | None:
        """The configured modality with this AET (and host when DicomCheckModalityHost)."""
        return peers.modality_for(self.settings, aet, host)

    def modality_named(self, name: str) -> Modality | None:
        return self.settings.modalities.get(name)

    # ------------------------------------------------------------ stability

    def _stability_loop(self) -> None:
        full = False
        while not self._stop.wait(min(1.0, max(0.2, self.settings.stable_age / 4))):
            try:
                self.check_stability()
                full = False
            except DatabaseError as e:
                if not self.index_is_full(e):
                    logger.exception("stability check failed")
                elif not full:  # once, not every second
                    full = True
                    logger.error("%s: resources become stable once there is room",
                                 self._index_full(e))
            except Exception:
                logger.exception("stability check failed")

    def check_stability(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        age = self.settings.stable_age
        ready = [
            (rid, lv, pid)
            for rid, lv, pid, updated in self.index.unstable()
            if updated + age <= now
        ]
        if ready:
            ready.sort(key=lambda r: -r[1])
            self.index.mark_stable(ready)
            for _, lv, pid in ready:
                self._emit("stable", {"level": lv, "id": pid})
        return len(ready)


def _low_on_space(folder: str) -> bool:
    try:
        return free_bytes(folder) < FULL_BELOW
    except OSError:
        return False

