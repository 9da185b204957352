"""The index and storage area: store, delete, schema versions, compression, crash leftovers."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from pipacs import config
from pipacs.context import Origin, ServerContext, StoreRefused
from pipacs.ids import INSTANCE, PATIENT, SERIES, STUDY
from pipacs.index import SCHEMA_VERSION, Index, IndexError_, SchemaTooOld
from pipacs.matching import FoldedPrefix, exact_value, fold, make_matcher


def make_context(tmp_path: Path, **overrides: object) -> ServerContext:
    data = {
        "StorageDirectory": str(tmp_path / "storage"),
        "IndexDirectory": str(tmp_path / "idx"),
        **overrides,
    }
    settings, _ = config.build_settings(data, tmp_path)
    return ServerContext(settings)


def test_store_builds_the_hierarchy_and_change_log(tmp_path: Path, small_data: list[Path]) -> None:
    ctx = make_context(tmp_path)
    for f in small_data[:20]:
        assert ctx.store(f.read_bytes(), Origin("Test")).status == "Success"
    assert ctx.index.counts() == [1, 1, 2, 20]
    changes, done, last = ctx.index.changes(0, 1000)
    kinds = [c["ChangeType"] for c in changes]
    assert kinds.count("NewPatient") == 1 and kinds.count("NewStudy") == 1
    assert kinds.count("NewSeries") == 2 and kinds.count("NewInstance") == 20
    assert done and last == changes[-1]["Seq"]
    again = ctx.store(small_data[0].read_bytes())
    assert again.status == "AlreadyStored"
    assert ctx.index.counts()[INSTANCE] == 20
    ctx.stop()


def test_read_back_is_byte_identical_with_and_without_compression(
    tmp_path: Path, small_data: list[Path]
) -> None:
    for compress in (False, True):
        ctx = make_context(tmp_path / str(compress), StorageCompression=compress)
        raw = small_data[3].read_bytes()
        result = ctx.store(raw)
        assert ctx.read_instance(result.ids[INSTANCE]) == raw
        att = ctx.index.attachment(ctx.index.get(result.ids[INSTANCE]).id)
        stored = ctx.storage.current_path(att.uuid).stat().st_size
        assert (stored < len(raw)) == compress
        assert att.md5 and att.size == len(raw)
        ctx.stop()


def test_delete_removes_files_and_empty_parents(tmp_path: Path, small_data: list[Path]) -> None:
    ctx = make_context(tmp_path)
    results = [ctx.store(f.read_bytes()) for f in small_data[:10]]  # one series
    series = results[0].ids[SERIES]
    deleted = ctx.delete(series)
    assert {lv for lv, _ in deleted} == {PATIENT, STUDY, SERIES, INSTANCE}
    assert ctx.index.counts() == [0, 0, 0, 0]
    assert not [p for p in (tmp_path / "storage").rglob("*") if p.is_file()]
    assert ctx.index.total_sizes() == (0, 0)
    assert ctx.index.last_change()["ChangeType"] == "Deleted"
    ctx.stop()


def test_overwrite_instances_replaces_the_file(tmp_path: Path, small_data: list[Path]) -> None:
    ctx = make_context(tmp_path, OverwriteInstances=True)
    raw = small_data[0].read_bytes()
    first = ctx.store(raw)
    uuid1 = ctx.index.attachment(ctx.index.get(first.ids[INSTANCE]).id).uuid
    assert ctx.store(raw).status == "Success"
    uuid2 = ctx.index.attachment(ctx.index.get(first.ids[INSTANCE]).id).uuid
    assert uuid1 != uuid2
    ctx.settle()
    assert not ctx.storage.path(uuid1).exists() and ctx.storage.path(uuid2).exists()
    assert ctx.index.counts()[INSTANCE] == 1
    ctx.stop()


def test_bad_files_are_refused_and_leave_nothing(tmp_path: Path, small_data: list[Path]) -> None:
    ctx = make_context(tmp_path)
    raw = small_data[0].read_bytes()
    for bad in (b"", b"not dicom at all", raw[:200], raw[:132] + b"\xff" * 64):
        with pytest.raises(StoreRefused) as e:
            ctx.store(bad)
        assert e.value.reason == "BadFile" and e.value.message
    assert ctx.index.counts() == [0, 0, 0, 0]
    assert not [p for p in (tmp_path / "storage").rglob("*") if p.is_file()]
    ctx.stop()


def test_maximum_patient_count_recycles_the_oldest(tmp_path: Path, small_data: list[Path]) -> None:
    ctx = make_context(tmp_path, MaximumPatientCount=1)
    first = ctx.store(small_data[0].read_bytes())
    second = ctx.store(small_data[-1].read_bytes())  # another patient
    assert ctx.index.get(first.ids[PATIENT]) is None
    assert ctx.index.get(second.ids[PATIENT]) is not None
    ctx.stop()


def test_maximum_patient_count_reject_mode(tmp_path: Path, small_data: list[Path]) -> None:
    ctx = make_context(tmp_path, MaximumPatientCount=1, MaximumStorageMode="Reject")
    ctx.store(small_data[0].read_bytes())
    with pytest.raises(StoreRefused) as e:
        ctx.store(small_data[-1].read_bytes())
    assert e.value.reason == "Full"
    ctx.stop()


def test_protected_patients_are_not_recycled(tmp_path: Path, small_data: list[Path]) -> None:
    ctx = make_context(tmp_path, MaximumPatientCount=1)
    first = ctx.store(small_data[0].read_bytes())
    ctx.index.set_protected(ctx.index.get(first.ids[PATIENT]).id, True)
    with pytest.raises(StoreRefused, match="protected"):
        ctx.store(small_data[-1].read_bytes())
    ctx.stop()


def test_stability_is_reported_after_stable_age(tmp_path: Path, small_data: list[Path]) -> None:
    ctx = make_context(tmp_path, StableAge=5)
    r = ctx.store(small_data[0].read_bytes())
    assert ctx.check_stability() == 0
    assert ctx.check_stability(now=ctx.index.get(r.ids[SERIES]).updated + 6) == 3
    kinds = [c["ChangeType"] for c in ctx.index.changes(0, 100)[0]]
    assert kinds[-3:] == ["StableSeries", "StableStudy", "StablePatient"]
    ctx.stop()


def test_connections_of_ended_threads_are_reused(tmp_path: Path) -> None:
    # Every DICOM association is a new thread: connections must not pile up.
    import threading

    idx = Index(tmp_path)
    for _ in range(50):
        t = threading.Thread(target=idx.counts)
        t.start()
        t.join()
    assert len(idx._connections) <= 3  # this thread's, one pooled and the writer's
    idx.close()


def test_selective_queries_use_an_index(tmp_path: Path, small_data: list[Path]) -> None:
    # Without statistics SQLite took the level index as selective and walked every study
    # (or instance) for a PatientID or a StudyInstanceUID: query cost grew with the archive.
    ctx = make_context(tmp_path)
    for f in small_data[:40]:
        ctx.store(f.read_bytes(), Origin("Test"))
    idx = ctx.index
    statements: list[str] = []
    idx._conn.set_trace_callback(statements.append)
    patient = idx.get_by_id(1)
    assert patient is not None and patient.level == PATIENT
    study = idx.children(patient.id)[0]
    accession = study.tags["AccessionNumber"]
    cases = [
        (STUDY, {PATIENT: [patient.uid]}, None, "resources_level_uid"),
        (INSTANCE, {STUDY: [study.uid]}, None, "resources_level_uid"),
        (STUDY, None, {STUDY: {"AccessionNumber": accession}}, "resources_accession"),
        # a PatientName with a literal prefix (DOE*): the folded names, at any level
        (STUDY, None, {PATIENT: {"PatientName": FoldedPrefix("B")}}, "resources_folded_name"),
        (INSTANCE, None, {PATIENT: {"PatientName": FoldedPrefix("B")}},
         "resources_folded_name"),
        # ... unless an identifier narrows more
        (STUDY, {PATIENT: [patient.uid]}, {PATIENT: {"PatientName": FoldedPrefix("B")}},
         "resources_level_uid"),
        (STUDY, None, {PATIENT: {"PatientName": FoldedPrefix("B")},
                       STUDY: {"AccessionNumber": accession}}, "resources_accession"),
    ]
    for level, uid_in, equal, index in cases:
        statements.clear()
        assert list(idx.rows_with_ancestors(level, uid_in, equal))
        plan = idx._conn.execute("EXPLAIN QUERY PLAN " + statements[-1]).fetchall()
        assert index in plan[0][3], plan  # the narrowing table drives the query
    idx._conn.set_trace_callback(None)
    # the stability check, every second, reads only what is not stable yet
    plan = idx._conn.execute("EXPLAIN QUERY PLAN SELECT id FROM resources "
                            "WHERE level < 3 AND stable = 0").fetchall()
    assert "resources_unstable" in plan[0][3], plan
    plan = idx._conn.execute("EXPLAIN QUERY PLAN SELECT public_id FROM resources WHERE level=0 "
                            "AND protected=0 AND public_id != '' ORDER BY updated").fetchall()
    assert "resources_recycling" in plan[0][3], plan  # recycling: the oldest patient first
    # only patients are in the recycling order, only what is not stable in that index
    entries = {name: idx._conn.execute(f"SELECT count(*) FROM resources INDEXED BY {name} "
                                      f"WHERE {cond}").fetchone()[0]
               for name, cond in (("resources_recycling", "level = 0"),
                                  ("resources_unstable", "stable = 0 AND level < 3"))}
    assert entries["resources_recycling"] == 1  # one patient
    assert entries["resources_unstable"] == sum(idx.counts()[:3])  # no instance
    ctx.stop()


# Names that fold in unusual ways: case, accents (precomposed and combining), ß, full-width
# letters and wildcards, ^ components, wildcard characters in the name itself, padding,
# empty and absent names, the last code point (the end of a prefix range).
TRICKY_NAMES = [
    "Doe^John", "DOE^JANE", "doe", "Döe^Jürgen", "DOE  ", "  DOE", "D\u0301OE^Accent", "Do^e",
    "DOEX^Y", "DOE^JOHN^^^", "Doe*Star", "Doe?Q", "\uff24\uff2f\uff25^Wide", "A\uff0aB",
    "Müller^Hans", "MULLER", "Straße^Anna", "STRASSE", "ÆRØ", "d", "", None, "日本^太郎",
    "zz\U0010ffff", "zz\U0010ffff\U0010ffffA", "Z",
]
PN_PATTERNS = [
    "DOE*", "doe*", "DOE^J*", "do?e*", "D?E*", "döe*", "D\u0301OE*", "MÜLL*", "muller",
    "STRA*", "straß*", "doe", "doe^john", "DOE^JOHN^^^", "Doe*Star", "Doe?Q",
    "\uff24\uff2f\uff25*", "A\uff0aB", "A*", "D*", "日本*", "zz\U0010ffff*", "Z*", "nobody*",
    "*DOE", "?OE*", "*", "", "DOE*\\MÜLLER*",  # no prefix, universal, a list: no narrowing
]


def store_names(ctx: ServerContext, names: list[str | None]) -> None:
    """One instance per patient, in 2 studies (to test study-level queries)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    for i, name in enumerate(names):
        for _study in range(2):
            ds = Dataset()
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
            ds.SOPInstanceUID = generate_uid()
            ds.StudyInstanceUID = generate_uid()
            ds.SeriesInstanceUID = generate_uid()
            ds.PatientID = f"PN{i:03d}"
            if name is not None:
                ds.PatientName = name
            ds.Modality = "OT"
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
            ctx.store(buf.getvalue(), Origin("Test"))


def check_name_queries(ctx: ServerContext) -> None:
    """Every pattern at every level, case-insensitive or not, finds what matching every
    name finds; a pattern with a literal prefix reads the index of folded names."""
    idx = ctx.index
    statements: list[str] = []
    idx._conn.set_trace_callback(statements.append)
    try:
        for level in (PATIENT, STUDY, SERIES, INSTANCE):
            every = list(idx.rows_with_ancestors(level))
            for pattern in PN_PATTERNS:
                for cs in (False, True):
                    statements.clear()
                    found, complete = ctx.find(level, {"PatientName": pattern},
                                               case_sensitive_pn=cs)
                    sql = next(s for s in reversed(statements) if "FROM resources r" in s)
                    m = make_matcher("PatientName", pattern, case_sensitive_pn=cs)
                    scan = [pids[level] for tags, pids, _ in every
                            if m is None or m(tags[PATIENT].get("PatientName", ""))]
                    assert complete and [f.public_id for f in found] == scan, (
                        level, pattern, cs, sql)
                    plan = idx._conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
                    if exact_value("PatientName", pattern, case_sensitive_pn=cs) is not None:
                        # the patients' folded names drive, whatever the level
                        assert "resources_folded_name" in plan[0][3], (level, pattern, plan)
                    else:  # a pattern that starts with a wildcard: every name is read
                        assert "resources_folded_name" not in str(plan), (level, pattern, plan)
    finally:
        idx._conn.set_trace_callback(None)


def test_patient_name_prefixes_use_the_folded_name_index(tmp_path: Path) -> None:
    # PatientName=DOE* compared every patient's folded name in Python: 25 ms per 1,000
    # studies. Folded names now have an indexed column: a literal prefix reads a range of it.
    ctx = make_context(tmp_path)
    store_names(ctx, TRICKY_NAMES)
    idx = ctx.index
    counts = {p: len(ctx.find(STUDY, {"PatientName": p})[0])
              for p in ("doe*", "doe", "muller", "straß*")}
    assert counts == {"doe*": 2 * 12, "doe": 2 * 3, "muller": 2, "straß*": 2 * 2}, counts
    assert len(ctx.find(STUDY, {"PatientName": "doe"}, case_sensitive_pn=True)[0]) == 2
    check_name_queries(ctx)
    # the column holds what the matcher compares, for patients only
    rows = idx._conn.execute("SELECT level, tags, folded_name FROM resources").fetchall()
    for level, tags, folded in rows:
        name = json.loads(tags).get("PatientName", "")
        assert folded == (fold(name) if level == PATIENT else None), (level, name, folded)
    settings = ctx.settings
    ctx.stop()

    # pipacs --reindex fills it too
    from pipacs.reindex import reindex

    assert reindex(settings).indexed == 2 * len(TRICKY_NAMES)
    ctx = ServerContext(settings)
    assert ctx.index._conn.execute(
        "SELECT count(*) FROM resources WHERE level = 0 AND folded_name IS NOT NULL"
    ).fetchone()[0] == len(TRICKY_NAMES)
    check_name_queries(ctx)
    ctx.stop()


def test_upgrade_folds_the_names_of_existing_patients(tmp_path: Path) -> None:
    old = Index(tmp_path, schema_version=3)  # an index made by the previous pipacs
    with old._write() as c:
        for i, name in enumerate(TRICKY_NAMES):
            tags = json.dumps({} if name is None else {"PatientName": name})
            c.execute("INSERT INTO resources(level, public_id, parent, uid, tags, created, "
                      "updated) VALUES(0, ?, NULL, ?, ?, 0, 0)", (f"p{i}", f"P{i}", tags))
            c.execute("INSERT INTO resources(level, public_id, parent, uid, tags, created, "
                      "updated) VALUES(1, ?, last_insert_rowid(), ?, '{}', 0, 0)",
                      (f"s{i}", f"S{i}"))
    old.close()
    with pytest.raises(SchemaTooOld):
        Index(tmp_path)
    idx = Index(tmp_path, upgrade=True)
    assert idx.schema_version() == SCHEMA_VERSION == 4
    for level, tags, folded in idx._conn.execute("SELECT level, tags, folded_name FROM resources"):
        name = json.loads(tags).get("PatientName", "")
        assert folded == (fold(name) if level == PATIENT else None), (level, name, folded)
    for pattern in PN_PATTERNS:
        narrowed = exact_value("PatientName", pattern)
        m = make_matcher("PatientName", pattern)
        got = [pids[STUDY] for tags, pids, _ in idx.rows_with_ancestors(
            STUDY, None, {PATIENT: {"PatientName": narrowed}} if narrowed is not None else None)
            if m is None or m(tags[PATIENT].get("PatientName", ""))]
        scan = [pids[STUDY] for tags, pids, _ in idx.rows_with_ancestors(STUDY)
                if m is None or m(tags[PATIENT].get("PatientName", ""))]
        assert got == scan, pattern
    idx.close()


def test_old_schema_needs_upgrade(tmp_path: Path) -> None:
    Index(tmp_path, schema_version=1).close()  # an index made by an older pipacs
    with pytest.raises(SchemaTooOld, match="--upgrade"):
        Index(tmp_path)
    upgraded = Index(tmp_path, upgrade=True)
    assert upgraded.schema_version() == SCHEMA_VERSION
    upgraded.close()
    Index(tmp_path).close()  # starts normally afterwards


def test_newer_or_foreign_or_corrupt_index_is_refused(tmp_path: Path) -> None:
    idx = Index(tmp_path / "a")
    idx.set_property("schema_version", str(SCHEMA_VERSION + 1))
    idx.close()
    with pytest.raises(IndexError_, match="newer"):
        Index(tmp_path / "a")
    (tmp_path / "b").mkdir()
    sqlite3.connect(tmp_path / "b" / "pipacs-index.db").execute(
        "CREATE TABLE x(y)"
    ).connection.commit()
    with pytest.raises(IndexError_, match="not a pipacs index"):
        Index(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "pipacs-index.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(IndexError_, match="--reindex"):
        Index(tmp_path / "c")


def test_interrupted_writes_are_finished_or_undone(tmp_path: Path, small_data: list[Path]) -> None:
    from pipacs.dicomfile import parse

    ctx = make_context(tmp_path)
    # 1. the index commit happened, the file was not yet moved into place
    raw = small_data[0].read_bytes()
    att = ctx.storage.write(raw)
    parsed = parse(raw)
    ctx.index.store_instance(parsed.ids, parsed.uids, parsed.tags, att, {})
    # 2. a whole, fsynced file whose index commit was lost in a power cut
    raw2 = small_data[1].read_bytes()
    lost = ctx.storage.write(raw2)
    # 3. a write cut short (never acknowledged)
    partial = ctx.storage.write(small_data[2].read_bytes())
    staged = ctx.storage.current_path(partial.uuid)
    staged.write_bytes(staged.read_bytes()[:1000])
    ctx.index.close()
    ctx._lock.release()  # a crash: no stop(), nothing settled

    ctx = make_context(tmp_path)
    assert ctx.read_instance(parsed.ids[INSTANCE]) == raw
    assert ctx.read_instance(parse(raw2).ids[INSTANCE]) == raw2
    assert ctx.index.counts()[INSTANCE] == 2
    assert list(ctx.storage.incoming.iterdir()) == []
    assert sorted(p.name for p in ctx.storage.files()) == sorted([att.uuid, lost.uuid])
    ctx.stop()


def test_files_are_settled_in_batches(tmp_path: Path, small_data: list[Path]) -> None:
    ctx = make_context(tmp_path)
    ctx.start()
    results = [ctx.store(f.read_bytes()) for f in small_data[:5]]
    for r in results:  # readable at once, staged or not
        assert ctx.read_instance(r.ids[INSTANCE])
    deadline = __import__("time").monotonic() + 5
    while list(ctx.storage.incoming.iterdir()) and __import__("time").monotonic() < deadline:
        __import__("time").sleep(0.05)
    assert list(ctx.storage.incoming.iterdir()) == []
    assert len(list(ctx.storage.files())) == 5
    ctx.stop()


def _wait_for(predicate, seconds: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_writes_queued_meanwhile_share_one_commit(tmp_path: Path) -> None:
    """Group commit: work queued while a transaction runs is run together, in one
    transaction, by the next thread to take the writer; a piece that fails is undone alone
    and its error reaches its own thread."""
    import threading

    idx = Index(tmp_path)
    release = threading.Event()
    ran_by: dict[str, int] = {}
    errors: dict[str, BaseException] = {}

    def work(name: str, fail: bool = False):
        def run(c: sqlite3.Connection) -> str:
            ran_by[name] = threading.get_ident()
            c.execute("INSERT INTO properties(key, value) VALUES(?, 'x')", (name,))
            if name == "first":
                release.wait(10)
            if fail:
                raise ValueError(f"{name} fails")
            return name

        return run

    def submit(name: str, fail: bool = False) -> None:
        try:
            assert idx._grouped(work(name, fail)) == name
        except BaseException as e:
            errors[name] = e

    first = threading.Thread(target=submit, args=("first",))
    first.start()
    _wait_for(lambda: "first" in ran_by)  # the writer is busy with it
    others = [threading.Thread(target=submit, args=(f"w{i}", i == 2)) for i in range(5)]
    for t in others:
        t.start()
    _wait_for(lambda: len(idx._pending) == 5)
    release.set()
    for t in (first, *others):
        t.join(10)
    runners = {ran_by[f"w{i}"] for i in range(5)}
    assert len(runners) == 1, "the five queued pieces ran in one transaction"
    assert set(errors) == {"w2"} and "w2 fails" in str(errors["w2"])
    keys = {k for (k,) in idx._conn.execute("SELECT key FROM properties")}
    assert {"first", "w0", "w1", "w3", "w4"} <= keys and "w2" not in keys
    idx.close()


def test_a_failed_commit_fails_every_piece_of_the_group(tmp_path: Path) -> None:
    idx = Index(tmp_path)

    def breaks_the_transaction(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO properties(key, value) VALUES('lost', 'x')")
        c.execute("ROLLBACK")  # as SQLite does by itself on a full disk
        raise sqlite3.OperationalError("database or disk is full")

    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        idx._grouped(breaks_the_transaction)
    assert idx._conn.execute("SELECT 1 FROM properties WHERE key='lost'").fetchone() is None
    assert idx._grouped(lambda c: c.execute("SELECT 1").fetchone()[0]) == 1  # usable again
    idx.close()


def test_commits_leave_checkpoints_to_the_settle_thread(
    tmp_path: Path, small_data: list[Path]
) -> None:
    """A C-STORE's commit never runs a checkpoint (two fsyncs while every other association
    waits); `checkpoint`, called after each settle, copies the WAL back once
    CHECKPOINT_COMMITS commits have gathered (fewer writes on an SD card), and the next
    commit starts the WAL over."""
    ctx = make_context(tmp_path)
    wal = ctx.index.path.with_name(ctx.index.path.name + "-wal")
    ctx.index.CHECKPOINT_COMMITS = 40
    ctx.index.checkpoint(force=True)  # the schema's migrations were commits too
    for f in small_data[:39]:
        assert ctx.store(f.read_bytes()).status == "Success"
    ctx.settle()
    assert ctx.index._uncheckpointed == 39, "not due yet: the settle left the WAL alone"
    assert wal.stat().st_size > 256 << 10, "39 commits, no checkpoint"
    assert ctx.store(small_data[39].read_bytes()).status == "Success"
    ctx.settle()  # make_durable, move the files into place, checkpoint (due now)
    assert ctx.index._uncheckpointed == 0
    ctx.store(small_data[40].read_bytes())  # starts the WAL over if the checkpoint was whole
    _busy, frames, _done = ctx.index._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert frames < 39, f"only the last commit's frames are in the WAL ({frames})"
    assert ctx.index.counts()[INSTANCE] == 41
    ctx.stop()


def test_a_long_reader_does_not_hold_up_writers_at_checkpoint(
    tmp_path: Path, small_data: list[Path]
) -> None:
    """With a reader on an old snapshot, a passive checkpoint cannot finish and a WAL past
    WAL_RESTART_BYTES is checkpointed with writers held: only for RESTART_WAIT_MS, then it is
    left for the next settle; once the reader is gone the WAL starts over."""
    ctx = make_context(tmp_path)
    idx = ctx.index
    idx.WAL_RESTART_BYTES = 64 << 10
    idx.CHECKPOINT_COMMITS = 1
    ctx.store(small_data[0].read_bytes())
    reader = sqlite3.connect(idx.path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM resources").fetchone()  # holds its snapshot
    for f in small_data[1:20]:
        ctx.store(f.read_bytes())
    ctx.settle()  # passive cannot pass the reader's snapshot; RESTART gives up after 200 ms
    _busy, frames, done = idx._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert done < frames
    assert idx._writer_conn().execute("PRAGMA busy_timeout").fetchone()[0] == idx.BUSY_TIMEOUT_MS
    assert ctx.store(small_data[20].read_bytes()).status == "Success"  # writers go on
    reader.execute("COMMIT")
    reader.close()
    ctx.settle()
    ctx.store(small_data[21].read_bytes())
    _busy, after, _done = idx._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert after < frames / 5
    assert idx.counts()[INSTANCE] == 22
    ctx.stop()
