"""Writing to the index: storing instances (grouped commits), deleting, metadata,
stability, protection and the exports log."""

from __future__ import annotations

import json
import sqlite3
import time

from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from ..matching import fold
from ..storage import Attachment
from .database import Database
from .records import StoreOutcome, now_iso
from .schema import METADATA_NUMBERS, NEW_CHANGE, STABLE_CHANGE


class Writes(Database):
    """The index's changes; every one is a write transaction (see Database)."""

    # ------------------------------------------------------------ storing

    def _lookup_id(self, c: sqlite3.Connection, public_id: str) -> int | None:
        rid = self._id_cache.get(public_id)
        if rid is not None:
            return rid
        row = c.execute("SELECT id FROM resources WHERE public_id=?", (public_id,)).fetchone()
        if row is None:
            return None
        if len(self._id_cache) > 4096:
            self._id_cache.clear()
        self._id_cache[public_id] = row[0]
        return int(row[0])

    def store_instance(
        self,
        public_ids: tuple[str, str, str, str],
        uids: tuple[str, ...],
        tags: list[dict[str, str]],
        attachment: Attachment | None,
        metadata: dict[int, str],
        *,
        overwrite: bool = False,
    ) -> StoreOutcome:
        now = time.time()
        date = now_iso()
        # written with a new patient row, as its tags are (they are not updated afterwards)
        folded_name = fold(tags[PATIENT].get("PatientName", ""))

        def work(c: sqlite3.Connection) -> StoreOutcome:
            created: list[int] = []
            removed: list[str] = []
            existing = self._lookup_id(c, public_ids[INSTANCE])
            if existing is not None:
                if not overwrite:
                    return StoreOutcome("AlreadyStored", public_ids, [], [])
                removed = [
                    r[0]
                    for r in c.execute("SELECT uuid FROM attachments WHERE resource=?", (existing,))
                ]
                self._drop_size(c, existing)
                c.execute("DELETE FROM resources WHERE id=?", (existing,))
                self._id_cache.pop(public_ids[INSTANCE], None)
            parent: int | None = None
            ancestors = []
            for level in (PATIENT, STUDY, SERIES, INSTANCE):
                rid = None if level == INSTANCE else self._lookup_id(c, public_ids[level])
                if rid is None:
                    cur = c.execute(
                        "INSERT INTO resources(level, public_id, parent, uid, tags, created, "
                        "updated, folded_name) VALUES(?,?,?,?,?,?,?,?)",
                        (
                            level,
                            public_ids[level],
                            parent,
                            uids[level],
                            json.dumps(tags[level], ensure_ascii=False),
                            now,
                            now,
                            folded_name if level == PATIENT else None,
                        ),
                    )
                    rid = int(cur.lastrowid or 0)
                    created.append(level)
                else:
                    ancestors.append(rid)
                parent = rid
            instance_id = parent
            if ancestors:
                c.execute(
                    f"UPDATE resources SET updated=?, stable=0 WHERE id IN "
                    f"({','.join('?' * len(ancestors))})",
                    (now, *ancestors),
                )
            if attachment is not None:
                c.execute(
                    "INSERT INTO attachments VALUES(?,?,?,?,?,?,?,?)",
                    (
                        instance_id,
                        attachment.content_type,
                        attachment.uuid,
                        attachment.size,
                        attachment.compressed_size,
                        attachment.compression,
                        attachment.md5,
                        attachment.compressed_md5,
                    ),
                )
                c.execute(
                    "UPDATE properties SET value = value + ? WHERE key='total_compressed'",
                    (attachment.compressed_size,),
                )
                c.execute(
                    "UPDATE properties SET value = value + ? WHERE key='total_size'",
                    (attachment.size,),
                )
            series_id = self._lookup_id(c, public_ids[SERIES])
            count = c.execute(
                "SELECT count(*) FROM resources WHERE parent=?", (series_id,)
            ).fetchone()[0]
            meta = dict(metadata)
            meta[METADATA_NUMBERS["IndexInSeries"]] = str(count)
            c.executemany(
                "INSERT OR REPLACE INTO metadata VALUES(?,?,?)",
                [(instance_id, k, v) for k, v in meta.items()],
            )
            c.executemany(
                "INSERT INTO changes(type, level, public_id, date) VALUES(?,?,?,?)",
                [(NEW_CHANGE[lv], lv, public_ids[lv], date) for lv in sorted(created)],
            )
            return StoreOutcome("Success", public_ids, created, removed)

        outcome = self._grouped(work)
        if outcome.removed_files:
            # before the replaced files (OverwriteInstances) go, as in `delete`: else a cut
            # could keep their removal and the old row, and `recover` would find the new,
            # staged file already stored and drop it
            self.make_durable()
        return outcome

    def _drop_size(self, c: sqlite3.Connection, instance_id: int) -> None:
        c.execute(
            "UPDATE properties SET value = value - (SELECT COALESCE(SUM(compressed_size),0) "
            "FROM attachments WHERE resource=?) WHERE key='total_compressed'",
            (instance_id,),
        )
        c.execute(
            "UPDATE properties SET value = value - (SELECT COALESCE(SUM(size),0) "
            "FROM attachments WHERE resource=?) WHERE key='total_size'",
            (instance_id,),
        )

    # ------------------------------------------------------------ deleting

    def delete(self, public_id: str) -> tuple[list[str], list[tuple[int, str]]]:
        """Delete a resource, its descendants and any parent left empty.

        Returns the attachment uuids to remove from the storage area (after the commit, made
        durable here: a power cut that kept the files' removal but not the commit would
        leave rows naming missing files) and the (level, public_id) of every resource
        deleted.
        """
        date = now_iso()
        with self._write() as c:
            row = c.execute(
                "SELECT id, level, parent FROM resources WHERE public_id=?", (public_id,)
            ).fetchone()
            if row is None:
                return [], []
            rid, _level, parent = row
            subtree = [
                r[0]
                for r in c.execute(
                    "WITH RECURSIVE t(id) AS (SELECT ? UNION ALL SELECT r.id FROM resources r "
                    "JOIN t ON r.parent = t.id) SELECT id FROM t",
                    (rid,),
                )
            ]
            marks = ",".join("?" * len(subtree))
            uuids = [
                r[0]
                for r in c.execute(
                    f"SELECT uuid FROM attachments WHERE resource IN ({marks})", subtree
                )
            ]
            for inst in subtree:
                self._drop_size(c, inst)
            deleted = [
                (lv, pid)
                for lv, pid in c.execute(
                    f"SELECT level, public_id FROM resources WHERE id IN ({marks})", subtree
                )
            ]
            c.execute("DELETE FROM resources WHERE id=?", (rid,))
            # Parents left without children go too, as in Orthanc.
            while parent is not None:
                left = c.execute(
                    "SELECT 1 FROM resources WHERE parent=? LIMIT 1", (parent,)
                ).fetchone()
                if left:
                    break
                prow = c.execute(
                    "SELECT level, public_id, parent FROM resources WHERE id=?", (parent,)
                ).fetchone()
                c.execute("DELETE FROM resources WHERE id=?", (parent,))
                deleted.append((prow[0], prow[1]))
                parent = prow[2]
            c.executemany(
                "INSERT INTO changes(type, level, public_id, date) VALUES(2,?,?,?)",
                [(lv, pid, date) for lv, pid in deleted],
            )
            self._id_cache.clear()
        if uuids:
            self.make_durable()
        return uuids, deleted

    # ------------------------------------------------------------ metadata

    def set_metadata(self, rid: int, level: int, public_id: str, mtype: int, value: str) -> None:
        with self._write() as c:
            c.execute("INSERT OR REPLACE INTO metadata VALUES(?,?,?)", (rid, mtype, value))
            c.execute(
                "INSERT INTO changes(type, level, public_id, date) VALUES(12,?,?,?)",
                (level, public_id, now_iso()),
            )

    def delete_metadata(self, rid: int, level: int, public_id: str, mtype: int) -> bool:
        """Remove one metadata of a resource (recording the change); False when it had none."""
        with self._write() as c:
            cur = c.execute("DELETE FROM metadata WHERE resource=? AND type=?", (rid, mtype))
            if cur.rowcount:
                c.execute("INSERT INTO changes(type, level, public_id, date) VALUES(12,?,?,?)",
                          (level, public_id, now_iso()))
            return bool(cur.rowcount)

    # ------------------------------------------------------------ stability and recycling

    def mark_stable(self, items: list[tuple[int, int, str]]) -> None:
        date = now_iso()
        with self._write() as c:
            c.executemany("UPDATE resources SET stable=1 WHERE id=?", [(i,) for i, _, _ in items])
            c.executemany(
                "INSERT INTO changes(type, level, public_id, date) VALUES(?,?,?,?)",
                [(STABLE_CHANGE[lv], lv, pid, date) for _, lv, pid in items],
            )

    def set_protected(self, rid: int, value: bool) -> None:
        with self._write() as c:
            c.execute("UPDATE resources SET protected=? WHERE id=?", (int(value), rid))

    # ------------------------------------------------------------ exports

    def log_export(self, level: int, public_id: str, target: str, uids: list[str]) -> None:
        padded = ([*uids, "", "", "", ""])[:4]
        with self._write() as c:
            c.execute(
                "INSERT INTO exports(level, public_id, target, patient_id, study_uid, "
                "series_uid, sop_uid, date) VALUES(?,?,?,?,?,?,?,?)",
                (level, public_id, target, *padded, now_iso()),
            )

    def clear_log(self, table: str) -> None:
        """DELETE /changes or /exports: empty the log (AUTOINCREMENT: numbers go on)."""
        if table not in ("changes", "exports"):
            raise ValueError(f"not a log table: {table}")
        with self._write() as c:
            c.execute(f"DELETE FROM {table}")
