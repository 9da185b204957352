"""Reading the index: resources and their ancestors, children and descendants, files,
metadata, changes, counts, stability and recycling order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, TypeVar, cast

from ..ids import INSTANCE, PATIENT
from ..matching import FoldedPrefix, fold
from ..storage import Attachment
from .database import Database
from .records import Export, Resource, change_json, iso_of
from .schema import METADATA_NUMBERS

T = TypeVar("T")


_FILE_SQL = ("SELECT a.uuid, a.compression, a.size FROM resources r JOIN attachments a "
             "ON a.resource = r.id AND a.type = 1 WHERE r.public_id = ?")


def chunks(items: list[T], size: int = 500) -> Iterator[list[T]]:
    """`items` in slices of `size`: SQLite takes at most 999 bound parameters (before 3.32)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Reads(Database):
    """Questions asked of the index; each one a read on this thread's connection."""

    # ------------------------------------------------------------ reading

    def _resource(self, row: tuple[Any, ...]) -> Resource:
        return Resource(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            json.loads(row[5]),
            row[6],
            bool(row[7]),
            bool(row[8]),
        )

    _COLS = "id, level, public_id, parent, uid, tags, updated, stable, protected"

    def get(self, public_id: str, level: int | None = None) -> Resource | None:
        row = self._conn.execute(
            f"SELECT {self._COLS} FROM resources WHERE public_id=?", (public_id,)
        ).fetchone()
        if row is None or (level is not None and row[1] != level):
            return None
        return self._resource(row)

    def get_by_id(self, rid: int) -> Resource | None:
        row = self._conn.execute(
            f"SELECT {self._COLS} FROM resources WHERE id=?", (rid,)
        ).fetchone()
        return self._resource(row) if row else None

    def children(self, rid: int) -> list[Resource]:
        return [
            self._resource(r)
            for r in self._conn.execute(
                f"SELECT {self._COLS} FROM resources WHERE parent=? ORDER BY id", (rid,)
            )
        ]

    def child_ids(self, rid: int) -> list[str]:
        """The public IDs of a resource's children, in storage order."""
        return [r[0] for r in self._conn.execute(
            "SELECT public_id FROM resources WHERE parent=? ORDER BY id", (rid,))]

    def descendants(self, res: Resource, level: int) -> list[Resource]:
        """Resources at `level` under `res` (or `res` itself when it is at that level), in
        storage order."""
        if level == res.level:
            return [res]
        sql = f"SELECT r{level}.id FROM resources r{level}"
        for lv in range(level - 1, res.level - 1, -1):
            sql += f" JOIN resources r{lv} ON r{lv}.id = r{lv + 1}.parent"
        sql += f" WHERE r{res.level}.id = ? ORDER BY r{level}.id"
        out = []
        for (rid,) in self._conn.execute(sql, (res.id,)):
            r = self.get_by_id(rid)
            if r is not None:
                out.append(r)
        return out

    def get_many(self, public_ids: list[str], level: int) -> list[Resource]:
        """The resources with these IDs at this level, in the given order (unknown ones left
        out), read with one query per 500."""
        found: dict[str, Resource] = {}
        for chunk in chunks(public_ids):
            marks = ",".join("?" * len(chunk))
            for row in self._conn.execute(f"SELECT {self._COLS} FROM resources WHERE level=? AND "
                                          f"public_id IN ({marks})", [level, *chunk]):
                res = self._resource(row)
                found[res.public_id] = res
        return [found[p] for p in public_ids if p in found]

    def list_public_ids(self, level: int, since: int = 0, limit: int = 0) -> list[str]:
        sql = "SELECT public_id FROM resources WHERE level=? ORDER BY id"
        args: list[Any] = [level]
        if limit or since:
            sql += " LIMIT ? OFFSET ?"
            args += [limit if limit else -1, since]
        return [r[0] for r in self._conn.execute(sql, args)]

    def rows_with_ancestors(
        self,
        level: int,
        uid_in: dict[int, list[str]] | None = None,
        equal: dict[int, dict[str, str]] | None = None,
    ) -> Iterator[tuple[list[dict[str, str]], list[str], list[int]]]:
        """For each resource at `level`: the tags, public IDs and row ids of it and its parents.

        Lists are indexed by level (0 = patient). `uid_in` narrows on identifiers, by level
        ({0: PatientIDs, 1: StudyInstanceUIDs, ...}), using the (level, uid) index; `equal`
        on main tags that must equal a value exactly ({1: {"AccessionNumber": "A12"}}), with
        an index for the accession number, or, for the PatientName, on the start of its
        folded form ({0: {"PatientName": FoldedPrefix("DOE")}}, see matching.exact_value),
        with the index of folded names. Both only narrow: callers still match each row.
        """
        cols = []
        for lv in range(level, -1, -1):
            cols += [f"r{lv}.tags", f"r{lv}.public_id", f"r{lv}.id"]
        equal = equal or {}
        if not uid_in and list(equal) == [PATIENT] and "PatientName" in equal[PATIENT]:
            # Patients by their folded name drive. Without statistics SQLite rates that range
            # worse than walking every series or instance in order (no sort for the ORDER
            # BY): CROSS JOIN keeps the patients in the outer loop.
            joins = ["resources r0"] + [
                f"CROSS JOIN resources r{lv} ON r{lv}.parent = r{lv - 1}.id"
                for lv in range(1, level + 1)
            ]
        else:
            joins = [f"resources r{level}"] + [
                f"JOIN resources r{lv} ON r{lv}.id = r{lv + 1}.parent"
                for lv in range(level - 1, -1, -1)
            ]
        # With a narrowing term, "+" keeps SQLite from walking every resource of the level
        # through the level index: without statistics it guesses that path selective, and
        # each query grew with the archive (a PatientID at 100,000 instances: 17 ms, not 0.1).
        narrowed = bool(uid_in or equal)
        sql = (f"SELECT {', '.join(cols)} FROM {' '.join(joins)} "
               f"WHERE {'+' if narrowed else ''}r{level}.level = ?")
        args: list[Any] = [level]
        for lv, uids in sorted((uid_in or {}).items()):
            sql += f" AND r{lv}.level = {lv} AND r{lv}.uid IN ({','.join('?' * len(uids))})"
            args += uids
        for lv, values in sorted(equal.items()):
            # a range on folded names is rated less selective than the level's index: "+"
            # again, or SQLite walks every patient
            plus = "+" if lv == PATIENT and "PatientName" in values else ""
            sql += f" AND {plus}r{lv}.level = {lv}"
            for keyword, value in sorted(values.items()):
                if not keyword.isalnum():
                    raise ValueError(f"not a DICOM keyword: {keyword!r}")
                if keyword == "PatientName" and lv == PATIENT:
                    # patients' folded names are indexed (schema 4)
                    if isinstance(value, FoldedPrefix):
                        sql += f" AND r{lv}.folded_name >= ?"
                        args.append(str(value))
                        after = _after_prefix(value)
                        if after is not None:
                            sql += f" AND r{lv}.folded_name < ?"
                            args.append(after)
                        continue
                    sql += f" AND r{lv}.folded_name = ?"
                    args.append(fold(value))
                elif isinstance(value, FoldedPrefix):
                    raise ValueError(f"{keyword}: no folded values in the index")
                # the path is written out, not bound, so that the expression index applies
                sql += f" AND json_extract(r{lv}.tags, '$.{keyword}') = ?"
                args.append(value)
        sql += f" ORDER BY r{level}.id"
        parsed: dict[int, dict[str, str]] = {}  # parents recur: decode each one once
        for row in self._conn.execute(sql, args):
            n = level + 1
            tags: list[dict[str, str]] = [{}] * n
            pids: list[str] = [""] * n
            rids: list[int] = [0] * n
            for i, lv in enumerate(range(level, -1, -1)):
                rid = row[3 * i + 2]
                if lv == level:
                    tags[lv] = json.loads(row[3 * i])
                else:
                    cached = parsed.get(rid)
                    if cached is None:
                        cached = parsed[rid] = json.loads(row[3 * i])
                    tags[lv] = cached
                pids[lv] = row[3 * i + 1]
                rids[lv] = rid
            yield tags, pids, rids

    def count_descendants(self, rid: int, level: int, target: int) -> int:
        """How many resources of level `target` lie under resource `rid` at `level`."""
        sql = f"SELECT count(*) FROM resources r{target}"
        for lv in range(target - 1, level - 1, -1):
            sql += f" JOIN resources r{lv} ON r{lv}.id = r{lv + 1}.parent"
        sql += f" WHERE r{level}.id = ?"
        return int(self._conn.execute(sql, (rid,)).fetchone()[0])

    def descendant_tag_values(self, rid: int, level: int, target: int, key: str) -> list[str]:
        sql = f"SELECT DISTINCT json_extract(r{target}.tags, ?) FROM resources r{target}"
        for lv in range(target - 1, level - 1, -1):
            sql += f" JOIN resources r{lv} ON r{lv}.id = r{lv + 1}.parent"
        sql += f" WHERE r{level}.id = ?"
        return sorted(v for (v,) in self._conn.execute(sql, ("$." + key, rid)) if v)

    def instances_under(self, rid: int, level: int) -> list[tuple[str, str, str, str, int]]:
        """(public_id, uuid, sop_class, transfer_syntax, compression) of the instances below."""
        sql = (
            "SELECT r3.public_id, a.uuid, "
            "(SELECT value FROM metadata WHERE resource=r3.id AND type=10), "
            "(SELECT value FROM metadata WHERE resource=r3.id AND type=9), a.compression "
            "FROM resources r3 LEFT JOIN attachments a ON a.resource = r3.id AND a.type = 1"
        )
        for lv in range(2, level - 1, -1):
            sql += f" JOIN resources r{lv} ON r{lv}.id = r{lv + 1}.parent"
        sql += f" WHERE r{level}.id = ? ORDER BY r3.id"
        return [tuple(r) for r in self._conn.execute(sql, (rid,))]

    def attachment(self, rid: int, content_type: int = 1) -> Attachment | None:
        row = self._conn.execute(
            "SELECT uuid, type, size, compressed_size, compression, md5, compressed_md5 "
            "FROM attachments WHERE resource=? AND type=?",
            (rid, content_type),
        ).fetchone()
        return Attachment(*row) if row else None

    def metadata(self, rid: int) -> dict[int, str]:
        """A resource's metadata; LastUpdate of patients, studies and series comes from the
        resource row (kept there so storing an instance writes fewer rows)."""
        c = self._conn
        meta = dict(c.execute("SELECT type, value FROM metadata WHERE resource=?", (rid,)))
        row = c.execute("SELECT level, updated FROM resources WHERE id=?", (rid,)).fetchone()
        if row and row[0] < INSTANCE:
            meta.setdefault(METADATA_NUMBERS["LastUpdate"], iso_of(row[1]))
        return meta

    # Many resources at once, one query per 500 of them (/instances?expand, /tools/find with
    # Expand): the batched forms of child_ids, metadata (without LastUpdate) and attachment.

    def child_ids_of(self, rids: list[int]) -> dict[int, list[str]]:
        """The public IDs of the children of each resource, in storage order."""
        out: dict[int, list[str]] = {rid: [] for rid in rids}
        for chunk in chunks(rids):
            marks = ",".join("?" * len(chunk))
            for rid, pid in self._conn.execute(f"SELECT parent, public_id FROM resources WHERE "
                                               f"parent IN ({marks}) ORDER BY id", chunk):
                out[rid].append(pid)
        return out

    def metadata_of(self, rids: list[int]) -> dict[int, dict[int, str]]:
        """The metadata rows of each resource (LastUpdate of patients, studies and series is
        in their Resource.updated: see `metadata`)."""
        out: dict[int, dict[int, str]] = {rid: {} for rid in rids}
        for chunk in chunks(rids):
            marks = ",".join("?" * len(chunk))
            for rid, kind, value in self._conn.execute(
                    f"SELECT resource, type, value FROM metadata WHERE resource IN ({marks})",
                    chunk):
                out[rid][kind] = value
        return out

    def attachments_of(self, rids: list[int]) -> dict[int, Attachment]:
        """The DICOM file of each instance that has one."""
        out: dict[int, Attachment] = {}
        for chunk in chunks(rids):
            marks = ",".join("?" * len(chunk))
            for rid, *row in self._conn.execute(
                    "SELECT resource, uuid, type, size, compressed_size, compression, md5, "
                    f"compressed_md5 FROM attachments WHERE type=1 AND resource IN ({marks})",
                    chunk):
                out[rid] = Attachment(*row)
        return out

    def sizes_under(self, res: Resource) -> tuple[int, int]:
        """(uncompressed, stored) bytes of the DICOM files of the instances under `res`."""
        sql = ("SELECT COALESCE(SUM(a.size),0), COALESCE(SUM(a.compressed_size),0) "
               "FROM attachments a")
        sql += " JOIN resources r3 ON a.resource = r3.id"
        for lv in range(2, res.level - 1, -1):
            sql += f" JOIN resources r{lv} ON r{lv}.id = r{lv + 1}.parent"
        sql += f" WHERE r{res.level}.id = ?"
        size, disk = self._conn.execute(sql, (res.id,)).fetchone()
        return int(size), int(disk)

    def instance_file(self, public_id: str) -> tuple[str, int, int] | None:
        """(uuid, compression, size) of an instance's DICOM file; None for an unknown
        instance or one without a file. The hot path of GET /instances/{id}/file: only
        instances have a DICOM attachment, so the level needs no test and the query stays in
        the public_id index (reading the resource row, with its tags, took 30-70 us)."""
        row = self._conn.execute(_FILE_SQL, (public_id,)).fetchone()
        return cast("tuple[str, int, int] | None", row)

    # ------------------------------------------------------------ changes and statistics

    def changes(self, since: int = 0, limit: int = 100) -> tuple[list[dict[str, Any]], bool, int]:
        rows = self._conn.execute(
            "SELECT seq, type, level, public_id, date FROM changes WHERE seq > ? "
            "ORDER BY seq LIMIT ?",
            (since, limit + 1),
        ).fetchall()
        done = len(rows) <= limit
        rows = rows[:limit]
        last = rows[-1][0] if rows else self.last_change_seq() if done else since
        return [change_json(r) for r in rows], done, last

    def last_change(self) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT seq, type, level, public_id, date FROM changes ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        return change_json(row) if row else None

    def last_change_seq(self) -> int:
        """The last change's number, kept after DELETE /changes (AUTOINCREMENT's record)."""
        row = self._conn.execute("SELECT max(seq) FROM changes").fetchone()
        if row[0] is None:
            row = self._conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name='changes'").fetchone()
        return int(row[0] or 0) if row else 0

    def counts(self) -> list[int]:
        out = [0, 0, 0, 0]
        for level, n in self._conn.execute("SELECT level, count(*) FROM resources GROUP BY level"):
            out[level] = n
        return out

    def total_sizes(self) -> tuple[int, int]:
        return (
            int(self.get_property("total_compressed", "0")),
            int(self.get_property("total_size", "0")),
        )

    def exports(self, since: int = 0, limit: int = 100) -> tuple[list[Export], bool]:
        """Up to `limit` entries of the exports log after `since`, and whether they are the
        last ones."""
        rows = self._conn.execute(
            "SELECT seq, level, public_id, target, patient_id, study_uid, series_uid, sop_uid, "
            "date FROM exports WHERE seq > ? ORDER BY seq LIMIT ?", (since, limit + 1)).fetchall()
        return [Export(*r) for r in rows[:limit]], len(rows) <= limit

    # ------------------------------------------------------------ stability and recycling

    def unstable(self) -> list[tuple[int, int, str, float]]:
        return [
            tuple(r)
            for r in self._conn.execute(
                "SELECT id, level, public_id, updated FROM resources WHERE level < 3 AND stable = 0"
            )
        ]

    def oldest_unprotected_patient(self, exclude: str = "") -> str | None:
        row = self._conn.execute(
            "SELECT public_id FROM resources WHERE level=0 AND protected=0 AND public_id != ? "
            "ORDER BY updated LIMIT 1",
            (exclude,),
        ).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------ files

    def has_attachment(self, file_uuid: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM attachments WHERE uuid=?", (file_uuid,))
        return row.fetchone() is not None


def _after_prefix(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (in code point order,
    which is SQLite's for UTF-8 text), or None when there is none."""
    while prefix:
        code = ord(prefix[-1]) + 1
        if code <= 0x10FFFF:
            if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored as text
                code = 0xE000
            return prefix[:-1] + chr(code)
        prefix = prefix[:-1]
    return None
