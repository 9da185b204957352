"""Reading the index by DICOM UIDs: lookups by identifier, instances with the UIDs of their
study and series (DICOMweb), and the attributes QIDO-RS computes for studies and series."""

from __future__ import annotations

import json

from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from .database import Database
from .queries import chunks
from .records import InstanceRow

_INSTANCE_SQL = (
    "SELECT r3.id, r3.public_id, r1.uid, r2.uid, r3.uid, COALESCE(a.uuid, ''), "
    "COALESCE((SELECT value FROM metadata WHERE resource = r3.id AND type = 9), ''), "
    "COALESCE((SELECT value FROM metadata WHERE resource = r3.id AND type = 10), ''), "
    "r2.public_id "
    "FROM resources r1 JOIN resources r2 ON r2.parent = r1.id "
    "JOIN resources r3 ON r3.parent = r2.id "
    "LEFT JOIN attachments a ON a.resource = r3.id AND a.type = 1 "
)


class UidReads(Database):
    """Questions asked by UID (the index keeps each resource's own UID in `uid`)."""

    def public_ids_by_uid(self, level: int, uid: str) -> list[str]:
        """The resources at `level` whose identifier (PatientID or UID) is `uid`."""
        return [pid for (pid,) in self._conn.execute(
            "SELECT public_id FROM resources WHERE level=? AND uid=?", (level, uid))]

    def instance_rows(
        self, study: str, series: str | None = None, sop: str | None = None
    ) -> list[InstanceRow]:
        """The instances under a study, series or instance named by UIDs, in storage order."""
        where = ["r1.level = 1", "r1.uid = ?"]
        args = [study]
        if series is not None:
            where.append("r2.uid = ?")
            args.append(series)
        if sop is not None:
            where.append("r3.uid = ?")
            args.append(sop)
        sql = _INSTANCE_SQL + f"WHERE {' AND '.join(where)} ORDER BY r3.id"
        return [InstanceRow(*row) for row in self._conn.execute(sql, args)]

    def instance_row(self, rid: int) -> InstanceRow | None:
        """The instance with this row id."""
        row = self._conn.execute(_INSTANCE_SQL + "WHERE r3.id = ?", (rid,)).fetchone()
        return InstanceRow(*row) if row else None

    def series_instance_rows(self, series_id: str) -> list[InstanceRow]:
        """The instances of the series with this public ID, in storage order."""
        return [InstanceRow(*row) for row in self._conn.execute(
            _INSTANCE_SQL + "WHERE r2.public_id = ? ORDER BY r3.id", (series_id,))]

    def series_instance_ids(self, series_id: str) -> list[str]:
        """The public IDs of the instances of a series (by its public ID), in storage order."""
        return [pid for (pid,) in self._conn.execute(
            "SELECT r3.public_id FROM resources r2 JOIN resources r3 ON r3.parent = r2.id "
            "WHERE r2.public_id = ? AND r2.level = 2 ORDER BY r3.id", (series_id,))]

    def instance_parent_uids(
        self, sop: str, study: str | None = None, series: str | None = None
    ) -> tuple[str, str] | None:
        """(StudyInstanceUID, SeriesInstanceUID) of the instance with this SOPInstanceUID,
        when it lies in `study` and `series` (those given); None when there is none."""
        row = self._conn.execute(
            "SELECT r1.uid, r2.uid FROM resources r3 JOIN resources r2 ON r2.id = r3.parent "
            "JOIN resources r1 ON r1.id = r2.parent WHERE r3.level = 3 AND r3.uid = ? "
            + ("AND r1.uid = ? " if study else "") + ("AND r2.uid = ?" if series else ""),
            [sop, *(u for u in (study, series) if u)]).fetchone()
        return (row[0], row[1]) if row else None

    def tags_with_ancestors(self, rid: int) -> list[dict[str, str]] | None:
        """The main tags of an instance and of its series, study and patient, indexed by
        level (0 = patient); None for an unknown instance."""
        row = self._conn.execute(
            "SELECT r3.tags, r2.tags, r1.tags, r0.tags FROM resources r3 "
            "JOIN resources r2 ON r2.id = r3.parent JOIN resources r1 ON r1.id = r2.parent "
            "JOIN resources r0 ON r0.id = r1.parent WHERE r3.id = ?",
            (rid,),
        ).fetchone()
        if row is None:
            return None
        out: list[dict[str, str]] = [{}, {}, {}, {}]
        for lv, text in zip((INSTANCE, SERIES, STUDY, PATIENT), row, strict=True):
            out[lv] = json.loads(text)
        return out

    def study_summaries(self, rids: list[int]) -> dict[int, tuple[int, int, list[str]]]:
        """For each study that has series: (number of series, number of instances, sorted
        modalities of its series)."""
        out: dict[int, tuple[int, int, list[str]]] = {}
        for chunk in chunks(rids):
            marks = ",".join("?" * len(chunk))
            sql = (
                "SELECT st.id, count(DISTINCT se.id), count(i.id), "
                "group_concat(DISTINCT json_extract(se.tags, '$.Modality')) "
                "FROM resources st JOIN resources se ON se.parent = st.id "
                "LEFT JOIN resources i ON i.parent = se.id "
                f"WHERE st.id IN ({marks}) GROUP BY st.id"
            )
            for rid, nseries, ninst, modalities in self._conn.execute(sql, chunk):
                mods = sorted({m for m in (modalities or "").split(",") if m})
                out[rid] = (nseries, ninst, mods)
        return out

    def child_counts(self, rids: list[int]) -> dict[int, int]:
        """How many children each resource has (those without any are left out)."""
        out: dict[int, int] = {}
        for chunk in chunks(rids):
            marks = ",".join("?" * len(chunk))
            sql = (
                f"SELECT parent, count(*) FROM resources WHERE parent IN ({marks}) "
                "GROUP BY parent"
            )
            out.update(self._conn.execute(sql, chunk))
        return out

    def sop_classes(self, rids: list[int]) -> dict[int, str]:
        """The SOPClassUID of each instance (from its metadata)."""
        out: dict[int, str] = {}
        for chunk in chunks(rids):
            marks = ",".join("?" * len(chunk))
            out.update(self._conn.execute(
                f"SELECT resource, value FROM metadata WHERE type = 10 AND resource IN ({marks})",
                chunk,
            ))
        return out
