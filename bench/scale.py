"""Index scaling: what queries, start-up and memory cost at 1,000, 10,000 and 100,000 instances.

pipacs and Debian's Orthanc 1.10.1 (with its DICOMweb plugin) are started side by side on
loopback (``bench/ingest.py``'s servers, ``StableAge`` 2) and filled in steps with the same
tiny instances (``datagen.make_tiny``: about 1.2 KB CT files, 20 per patient in 2 studies of
2 series; 100,000 instances are 5,000 patients, 10,000 studies, 20,000 series). Both are
populated the same way, over DICOM: 4 concurrent ``storescu +sd`` associations per step,
each with a quarter of the new patients. After each step, in the same run:

* the same selective queries (they match the same few resources of the first step at every
  size, so a flat index answers them in the same time whatever N is) and two that grow with
  N by nature (every study; the first page of 100): C-FIND with dcmtk's ``/usr/bin/findscu``,
  QIDO-RS and ``POST /tools/find``; median of ``--runs`` calls, servers alternated call by
  call; C-FIND times include findscu's own start (see the echoscu row);
* the index database's size on disk (the files in IndexDirectory, -wal included; pipacs'
  DICOMweb metadata cache, also there, is listed apart, as is the storage area) and RSS;
* start-up with N instances indexed: stop (SIGTERM), start again, time to the first C-ECHO
  answered and to the first ``GET /system`` answered with 200 (both polled from the
  ``Popen``); median of ``--restarts``; RSS 1 s after the start.

Orthanc is measured up to ``--orthanc-max`` instances (default 10,000: ingesting 100,000
over DICOM takes it several minutes more), then stopped.

Usage: ``.venv/bin/python bench/scale.py [--steps 1000,10000,100000] [--orthanc-max N]
[--runs 5] [--restarts 3] [--only pipacs|orthanc] [--keep] [--tmp DIR]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
import datagen
import dicomweb
import ingest

KINDS = ("orthanc", "pipacs")
PARALLEL = 4  # storescu associations per step
BYTES_PER_INSTANCE = 6000  # on disk, with the index, for both servers: a generous estimate


class Server(dicomweb.Server):
    """ingest's server with the DICOMweb plugin, StableAge 2 and no C-FIND limits."""

    def config(self) -> dict[str, object]:
        cfg = super().config()
        cfg["StableAge"] = 2
        cfg["LimitFindResults"] = 0
        cfg["LimitFindInstances"] = 0
        return cfg


@dataclass
class Target:
    """The resources of the first step that every selective query looks for."""

    patient_id: str
    patient_name_prefix: str
    accession: str
    study_uid: str
    series_uid: str


Conns = dict[str, http.client.HTTPConnection]
Runner = Callable[[Server, Conns], tuple[float, int]]


@dataclass
class Query:
    label: str
    run: Runner


def target_of(first_file: Path) -> Target:
    import pydicom

    ds = pydicom.dcmread(first_file, stop_before_pixels=True)
    return Target(
        patient_id=str(ds.PatientID),
        patient_name_prefix=str(ds.PatientName) + "*",
        accession=str(ds.AccessionNumber),
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
    )


def _http(conns: Conns, srv: Server, method: str, path: str,
          body: bytes | None = None, accept: str = "application/json") -> tuple[float, bytes]:
    headers = {"Accept": accept, "Accept-Encoding": "identity"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    for attempt in (0, 1):
        conn = conns.get(srv.kind)
        if conn is None:
            conn = conns[srv.kind] = http.client.HTTPConnection(
                ingest.LOOPBACK, srv.http_port, timeout=600)
        t0 = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (ConnectionError, http.client.HTTPException):
            # a keep-alive connection the server closed while long C-FINDs ran: once more
            conn.close()
            del conns[srv.kind]
            if attempt:
                raise
            continue
        elapsed = time.perf_counter() - t0
        break
    if resp.status != 200:
        raise RuntimeError(f"{srv.kind} {method} {path}: {resp.status} {data[:200]!r}")
    return elapsed, data


def qido(path: str) -> Runner:
    def run(srv: Server, conns: Conns) -> tuple[float, int]:
        t, body = _http(conns, srv, "GET", "/dicom-web" + path, accept="application/dicom+json")
        return t, len(json.loads(body)) if body.strip() else 0
    return run


def tools_find(query: dict[str, object]) -> Runner:
    body = json.dumps(query).encode()

    def run(srv: Server, conns: Conns) -> tuple[float, int]:
        t, data = _http(conns, srv, "POST", "/tools/find", body)
        return t, len(json.loads(data))
    return run


def cfind(level: str, keys: list[str]) -> Runner:
    all_keys = [f"QueryRetrieveLevel={level}", *keys]

    def run(srv: Server, _conns: Conns) -> tuple[float, int]:
        return ingest.findscu(srv.dicom_port, all_keys)
    return run


def queries(t: Target) -> list[Query]:
    study_keys = ["StudyInstanceUID", "PatientName", "StudyDate", "AccessionNumber",
                  "StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedInstances"]
    q = urllib.parse.quote
    return [
        Query("C-FIND study, PatientID (2 studies)", cfind(
            "STUDY", [f"PatientID={t.patient_id}", *study_keys])),
        Query("C-FIND study, AccessionNumber (1)", cfind(
            "STUDY", [f"AccessionNumber={t.accession}", "PatientID",
                      *[k for k in study_keys if k != "AccessionNumber"]])),
        Query("C-FIND study, PatientName prefix* (2)", cfind(
            "STUDY", [f"PatientName={t.patient_name_prefix}", "PatientID",
                      *[k for k in study_keys if k != "PatientName"]])),
        Query("C-FIND series, StudyInstanceUID (2)", cfind(
            "SERIES", [f"StudyInstanceUID={t.study_uid}", "SeriesInstanceUID", "Modality",
                       "SeriesNumber", "NumberOfSeriesRelatedInstances"])),
        Query("C-FIND image, SeriesInstanceUID (5)", cfind(
            "IMAGE", [f"StudyInstanceUID={t.study_uid}", f"SeriesInstanceUID={t.series_uid}",
                      "SOPInstanceUID", "InstanceNumber"])),
        Query("C-FIND study, every study (grows)", cfind(
            "STUDY", ["PatientID", *study_keys])),
        Query("QIDO /studies?PatientID (2)", qido(f"/studies?PatientID={q(t.patient_id)}")),
        Query("QIDO /studies?AccessionNumber (1)",
              qido(f"/studies?AccessionNumber={q(t.accession)}")),
        Query("QIDO /studies?PatientName prefix* (2)",
              qido(f"/studies?PatientName={q(t.patient_name_prefix)}")),
        Query("QIDO /studies/{uid}/series (2)", qido(f"/studies/{t.study_uid}/series")),
        Query("QIDO /studies/{uid}/series/{uid}/instances (5)",
              qido(f"/studies/{t.study_uid}/series/{t.series_uid}/instances")),
        Query("QIDO /studies?limit=100 (100 of all, grows)", qido("/studies?limit=100")),
        Query("/tools/find Study, PatientID (2)", tools_find(
            {"Level": "Study", "Query": {"PatientID": t.patient_id}})),
        Query("/tools/find Study, AccessionNumber (1)", tools_find(
            {"Level": "Study", "Query": {"AccessionNumber": t.accession}})),
        Query("/tools/find Study, PatientName prefix* (2)", tools_find(
            {"Level": "Study", "Query": {"PatientName": t.patient_name_prefix}})),
        Query("/tools/find Instance, StudyInstanceUID (10)", tools_find(
            {"Level": "Instance", "Query": {"StudyInstanceUID": t.study_uid}})),
        Query("/tools/find Study, StudyDate in 2010, expand (grows)", tools_find(
            {"Level": "Study", "Query": {"StudyDate": "20100101-20101231"}, "Expand": True})),
    ]


def measure_queries(servers: dict[str, Server], qs: list[Query], runs: int
                    ) -> dict[str, dict[str, float]]:
    """Median ms of each query per server, alternating servers call by call (one warm-up)."""
    out: dict[str, dict[str, float]] = {}
    conns: Conns = {}
    try:
        for query in qs:
            times: dict[str, list[float]] = {k: [] for k in servers}
            counts: dict[str, set[int]] = {k: set() for k in servers}
            for i in range(runs + 1):
                order = list(servers.values()) if i % 2 else list(reversed(servers.values()))
                for srv in order:
                    t, n = query.run(srv, conns)
                    counts[srv.kind].add(n)
                    if i:  # the first round warms caches up
                        times[srv.kind].append(t * 1000)
            for kind in servers:
                out.setdefault(query.label, {})[kind] = benchlib.median(times[kind])
                out[query.label][f"{kind}_n"] = float(min(counts[kind]))
            found = {k: sorted(v) for k, v in counts.items()}
            if len({tuple(v) for v in found.values()}) > 1 or any(len(v) > 1
                                                                  for v in found.values()):
                print(f"  ! {query.label}: matches differ {found}")
            row = "  ".join(f"{k} {out[query.label][k]:.1f} ms ({found[k][0]})" for k in servers)
            print(f"  {query.label}: {row}")
        echoes: dict[str, list[float]] = {k: [] for k in servers}
        for _ in range(runs):
            for srv in servers.values():
                t0 = time.perf_counter()
                ingest.echo(srv.dicom_port)
                echoes[srv.kind].append((time.perf_counter() - t0) * 1000)
        out["echoscu round trip (client's fixed cost)"] = {
            k: benchlib.median(v) for k, v in echoes.items()}
    finally:
        for c in conns.values():
            c.close()
    return out


def restart(srv: Server, restarts: int) -> dict[str, float]:
    echo_s, http_s = [], []
    for _ in range(restarts):
        srv.stop()
        echo_s.append(srv.start(timeout=600))
        http_s.append(srv.http_ready_s or float("nan"))
    time.sleep(1.0)
    return {"start to first C-ECHO (s)": benchlib.median(echo_s),
            "start to first HTTP 200 (s)": benchlib.median(http_s),
            "RSS 1 s after start (MB)": srv.rss()}


def index_sizes(folder: Path) -> tuple[int, int]:
    """(the database: files at the top of IndexDirectory, with -wal and -shm; the rest, such
    as pipacs' DICOMweb metadata cache) in bytes allocated on disk."""
    db = sum(p.stat().st_blocks * 512 for p in folder.iterdir() if p.is_file())
    return db, benchlib.dir_size(folder) - db


def populate(srv: Server, folders: list[Path], expected: int) -> tuple[float, int]:
    seconds, errors = ingest.send(srv.dicom_port, [[f] for f in folders])
    for e in errors[:3]:
        print(f"  ! {srv.kind}: {e}")
    n, _ = srv.wait_count(expected, timeout=60)
    return seconds, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="1000,10000,100000",
                    help="instance counts, comma-separated (default 1000,10000,100000)")
    ap.add_argument("--orthanc-max", type=int, default=10000, metavar="N",
                    help="measure Orthanc up to N instances (default 10000)")
    ap.add_argument("--runs", type=int, default=5, help="calls per query (median)")
    ap.add_argument("--restarts", type=int, default=3, help="restarts per step (median)")
    ap.add_argument("--only", choices=KINDS, help="one server only")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--tmp", type=Path, default=None, help="where to make the temporary folder")
    args = ap.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    kinds = [args.only] if args.only else list(KINDS)
    free = shutil.disk_usage(args.tmp or tempfile.gettempdir()).free
    need = steps[-1] * BYTES_PER_INSTANCE * (1 + len(kinds))
    if free < need:
        print(f"needs about {need / 1e9:.1f} GB free, {free / 1e9:.1f} GB left: use --tmp")
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.tmp))
    servers: dict[str, Server] = {}
    results: dict[int, dict[str, dict[str, float]]] = {}
    try:
        print(f"host: {ingest._orthanc_version()}, {ingest._dcmtk_version()}, "
              f"load average {benchlib.loadavg()}, {free / 1e9:.0f} GB free under {root}")
        for kind in kinds:
            srv = Server(kind, root / kind)
            t = srv.start()
            servers[kind] = srv
            print(f"  {kind}: empty, first C-ECHO after {t:.3f} s, "
                  f"first HTTP 200 after {srv.http_ready_s or 0:.3f} s")
        target: Target | None = None
        have = 0
        for step_no, n in enumerate(steps):
            folder = root / "data" / f"step{step_no}"
            paths = datagen.make_tiny(folder, count=n - have, seed=10 + step_no,
                                      folders=PARALLEL)
            folders = sorted(p for p in folder.iterdir() if p.is_dir())
            if target is None:
                target = target_of(paths[0])
            print(f"\n# {n} instances (+{len(paths)}, {benchlib.dir_size(folder) / 1e6:.0f} MB "
                  f"of files), load average {benchlib.loadavg()}")
            res: dict[str, dict[str, float]] = {}
            for kind in list(servers):
                srv = servers[kind]
                if kind == "orthanc" and n > args.orthanc_max:
                    srv.stop()
                    del servers[kind]
                    print(f"  orthanc: stopped (over --orthanc-max {args.orthanc_max})")
                    continue
                seconds, count = populate(srv, folders, n)
                ok = "ok" if count == n else f"MISMATCH: {count} stored"
                print(f"  {kind}: +{len(paths)} over {PARALLEL} associations in {seconds:.1f} s "
                      f"({len(paths) / seconds:.0f} files/s), {ok}")
                res.setdefault("populate, 4 associations (files/s)", {})[kind] = (
                    len(paths) / seconds)
            shutil.rmtree(folder)  # sent: the servers hold them now
            have = n
            time.sleep(4)  # StableAge 2: let the stability work end before measuring
            res.update(measure_queries(servers, queries(target), args.runs))
            for kind, srv in servers.items():
                res.setdefault("RSS after the queries (MB)", {})[kind] = srv.rss()
                db, other = index_sizes(srv.workdir / "index")
                res.setdefault("index database on disk (MB)", {})[kind] = db / 1e6
                res.setdefault("other files in IndexDirectory (MB)", {})[kind] = other / 1e6
                res.setdefault("storage area on disk (MB)", {})[kind] = (
                    benchlib.dir_size(srv.storage) / 1e6)
                for key, value in restart(srv, args.restarts).items():
                    res.setdefault(key, {})[kind] = value
            print(f"  load average {benchlib.loadavg()}")
            results[n] = res
            report_step(n, res, kinds)
        report_growth(results, kinds, steps)
        print(f"\nload average after: {benchlib.loadavg()}")
    finally:
        benchlib.stop_and_clean(servers.values(), root, args.keep)
    return 0


def _fmt(v: float | None) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def report_step(n: int, res: dict[str, dict[str, float]], kinds: list[str]) -> None:
    headers = ["measure (ms unless said)", *kinds]
    both = all(k in next(iter(res.values())) for k in KINDS)
    if both:
        headers.append("pipacs/Orthanc")
    rows = []
    for label, per in res.items():
        cells = [label, *(_fmt(per.get(k)) for k in kinds)]
        if both:
            o, p = per.get("orthanc"), per.get("pipacs")
            cells.append(f"{p / o:.2f}x" if o and p is not None else "-")
        rows.append(cells)
    benchlib.print_table(headers, rows, f"{n} instances")


def report_growth(results: dict[int, dict[str, dict[str, float]]], kinds: list[str],
                  steps: list[int]) -> None:
    """Each measure at every size, and how much it grew from the first size to the last."""
    labels = list(results[steps[0]])
    headers = ["measure (ms unless said)"]
    for kind in kinds:
        headers += [f"{kind} {n // 1000}k" if n >= 1000 else f"{kind} {n}" for n in steps]
        headers.append(f"{kind} growth")
    rows = []
    for label in labels:
        cells = [label]
        for kind in kinds:
            values = [results[n].get(label, {}).get(kind) for n in steps]
            cells += [_fmt(v) for v in values]
            known = [v for v in values if v is not None]
            grow = known[-1] / known[0] if len(known) > 1 and known[0] else None
            cells.append(f"{grow:.1f}x" if grow is not None else "-")
        rows.append(cells)
    benchlib.print_table(headers, rows,
                         f"Growth from {steps[0]} to {steps[-1]} instances "
                         f"(growth: last size / first size it was measured at)")


if __name__ == "__main__":
    sys.exit(main())
