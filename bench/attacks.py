"""Hostile single requests against pipacs (issue 13): time to answer, and whether the server
still answers C-ECHO and ``GET /system`` within 1 s while each one runs.

Each attack gets a fresh pipacs on loopback (``bench/ingest.py``'s server and
configuration, with DICOMweb and worklists on), started from ``.venv/bin/pipacs`` or
``PIPACS_BIN``:

* **wildcards**: one instance stored whose PatientName is 64 ``A``; then one query with
  ``PatientName=*A*A*A*A*A*A*A*A*A*B`` (a backtracking regex tries every way of placing
  the nine stars: about ten times longer for each one more) through ``POST /tools/find``,
  QIDO-RS (``GET /dicom-web/studies``) and C-FIND (dcmtk's findscu, patient root), each
  on its own server;
* **nested worklist**: ``POST /worklists/create`` with 260 nested sequences (9 KB of
  JSON; the kernel killed pipacs at 22.9 GB), with pipacs' RSS sampled every 0.1 s;
* **pdu**: an A-ASSOCIATE-RQ announcing 4 GiB, and a P-DATA-TF announcing 1 GiB on an
  established association, each followed by zeros as fast as pipacs takes them;
* **slots**: 33 idle DICOM connections, and one A-ASSOCIATE-RQ sent a byte a second;
* **http**: 205 half-sent HTTP requests, one request's headers a byte a second, and a
  ``POST /instances`` announcing 4 GiB;
* **images**: WADO-URI with ``rows=30000&columns=30000`` and a DICOMweb viewport of
  16000 x 16000 (``netattacks.py`` has these connection-level attacks; the held
  connections come from 127.0.0.9, so that the probes stand for other clients).

Each attack is sent again and again, one request at a time, for ``--window`` seconds
(default 3), while a thread alternates a C-ECHO (dcmtk's echoscu, 1 s timeouts) and a
``GET /system`` (1 s timeout), one every 0.25 s; the table gives the requests made, their
median answer time, and how many probes answered within 1 s. Everything is bounded: a
request that has no answer after ``--timeout`` seconds (default 30) is reported as such and
its server killed; pipacs gets an address-space limit
(``--memory-limit``, default 4 GB, with ``MALLOC_ARENA_MAX=2`` so that an idle server's
thread arenas stay far below it), so a memory bomb ends in a MemoryError or a kill rather
than in the machine's swap.

Usage: ``.venv/bin/python bench/attacks.py [--only FAMILY] [--timeout 30]
[--window 3] [--memory-limit 4] [--keep] [--tmp DIR]``; against another build of pipacs:
``PIPACS_BIN=/path/to/script bench/attacks.py`` (a script that runs ``python -m pipacs "$@"``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
import datagen
import ingest
import netattacks as net

ATTACK = "*A" * 9 + "*B"
NAME = "A" * 64
NESTING = 260
PROBE_EVERY = 0.25  # seconds between two probes
PROBE_LIMIT = 1.0  # a probe counts as answered within this many seconds


class Server(ingest.Server):
    """ingest's server with DICOMweb and the worklists plugin on."""

    def config(self) -> dict[str, object]:
        cfg = super().config()
        cfg["DicomWeb"] = {"Enable": True}
        cfg["Worklists"] = {"Enable": True, "Database": str(self.workdir / "worklists")}
        return cfg


# --- probes --------------------------------------------------------------------------


@dataclass
class Probes:
    """C-ECHO and GET /system in turn, in a thread, until stopped: (ok, seconds) of each."""

    srv: Server
    echo: list[tuple[bool, float]] = field(default_factory=list)
    http: list[tuple[bool, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            ok = ingest.echo(self.srv.dicom_port, timeout=1)
            self.echo.append((ok, time.perf_counter() - t0))
            if self._stop.wait(PROBE_EVERY):
                return
            t0 = time.perf_counter()
            try:
                self.srv.get("/system", timeout=PROBE_LIMIT)
                ok = True
            except (OSError, ValueError):
                ok = False
            self.http.append((ok, time.perf_counter() - t0))
            self._stop.wait(PROBE_EVERY)

    def __enter__(self) -> Probes:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    @staticmethod
    def summary(results: list[tuple[bool, float]]) -> str:
        if not results:
            return "not probed"
        within = sum(1 for ok, s in results if ok and s <= PROBE_LIMIT)
        worst = max(s for _, s in results)
        return f"{within}/{len(results)} (worst {worst:.2f} s)"


# --- attacks -------------------------------------------------------------------------


def http_call(srv: Server, method: str, route: str, body: Any, timeout: float) -> str:
    """An HTTP request; its status and the start of its answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{ingest.LOOPBACK}:{srv.http_port}{route}",
                                 data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return f"{r.status} {r.read(60).decode(errors='replace')}"
    except urllib.error.HTTPError as e:
        return f"{e.code} {e.read(60).decode(errors='replace')}"


def cfind(srv: Server, timeout: float) -> str:
    dimse = str(int(timeout) + 10)  # the subprocess' timeout comes first
    cmd = [ingest.dcmtk("findscu"), "-v", "-P", "-to", "5", "-ta", "5", "-td", dimse,
           "-aec", ingest.SERVER_AET, "-k", "QueryRetrieveLevel=PATIENT",
           "-k", f"PatientName={ATTACK}", "-k", "PatientID", ingest.LOOPBACK, str(srv.dicom_port)]
    r = subprocess.run(cmd, check=False, env=ingest.CLIENT_ENV, capture_output=True, text=True,
                       timeout=timeout)
    out = r.stdout + r.stderr
    answers = sum(1 for line in out.splitlines() if "Find Response:" in line and "Pending" in line)
    final = [line[3:] for line in out.splitlines() if "Final Find Response" in line]
    return f"rc={r.returncode} {answers} answers {final[-1] if final else '(no final response)'}"


def nested_worklist() -> dict[str, Any]:
    tags: dict[str, Any] = {"PatientName": "DEEP"}
    for _ in range(NESTING):
        tags = {"ScheduledProcedureStepSequence": [tags]}
    return {"Tags": tags}


@dataclass
class Attack:
    label: str
    run: Callable[[Server, float], str]
    needs_patient: bool = True


ATTACKS = {
    "wildcards": [
        Attack("wildcards: POST /tools/find", lambda s, t: http_call(
            s, "POST", "/tools/find", {"Level": "Patient", "Query": {"PatientName": ATTACK}}, t)),
        Attack("wildcards: QIDO-RS", lambda s, t: http_call(
            s, "GET", "/dicom-web/studies?" + urllib.parse.urlencode({"PatientName": ATTACK}),
            None, t)),
        Attack("wildcards: C-FIND (findscu)", cfind),
    ],
    "nested": [
        Attack(f"worklist nesting {NESTING} sequences", lambda s, t: http_call(
            s, "POST", "/worklists/create", nested_worklist(), t), needs_patient=False),
    ],
    "pdu": [
        Attack("A-ASSOCIATE-RQ of 4 GiB", lambda s, t: net.big_association_request(
            s.dicom_port, t), needs_patient=False),
        Attack("P-DATA-TF of 1 GiB", lambda s, t: net.big_pdata(
            s.dicom_port, ingest.SERVER_AET, t), needs_patient=False),
    ],
    "slots": [
        Attack("33 idle DICOM connections", lambda s, t: net.held_connections(
            s.dicom_port, 33, b"", t), needs_patient=False),
        Attack("A-ASSOCIATE-RQ a byte a second", lambda s, t: net.held_connections(
            s.dicom_port, 1, struct.pack(">BBL", 1, 0, 1000), t, trickle=True),
            needs_patient=False),
    ],
    "http": [
        Attack("205 half-sent HTTP requests", lambda s, t: net.held_connections(
            s.http_port, 205, b"GET /system HTTP/1.1\r\n", t), needs_patient=False),
        Attack("HTTP headers a byte a second", lambda s, t: net.held_connections(
            s.http_port, 1, b"GET /system HTTP/1.1\r\n", t, trickle=True),
            needs_patient=False),
        Attack("POST /instances of 4 GiB", lambda s, t: net.big_body(s.http_port, t),
               needs_patient=False),
    ],
    "images": [
        Attack("WADO-URI 30000 x 30000", lambda s, t: net.http_get(
            f"http://{ingest.LOOPBACK}:{s.http_port}/wado?requestType=WADO&" + urllib.parse.
            urlencode(dict(zip(("studyUID", "seriesUID", "objectUID"), net.stored_uids(s),
                               strict=True))) + "&rows=30000&columns=30000", t)),
        Attack("DICOMweb viewport 16000 x 16000", lambda s, t: net.http_get(
            f"http://{ingest.LOOPBACK}:{s.http_port}/dicom-web/studies/%s/series/%s/"
            "instances/%s/rendered?viewport=16000,16000" % net.stored_uids(s), t)),
    ],
}


def one_instance(folder: Path) -> Path:
    """A small CT instance whose PatientName is NAME."""
    import pydicom

    path = datagen.make_small(folder, patients=1, seed=13)[0]
    ds = pydicom.dcmread(path)
    ds.PatientName = NAME
    ds.save_as(path)
    return path


def measure(attack: Attack, workdir: Path, instance: Path, timeout: float, window: float,
            memory_limit: int) -> list[str]:
    srv = Server("pipacs", workdir)
    srv.start()
    try:
        assert srv.proc is not None
        resource.prlimit(srv.proc.pid, resource.RLIMIT_AS, (memory_limit, memory_limit))
        if attack.needs_patient:
            _, errors = ingest.send(srv.dicom_port, [[instance]])
            if errors:
                raise RuntimeError(f"storing the instance failed: {errors}")
        rss_before = srv.rss()
        calls: list[tuple[float, str | None]] = []
        worker = threading.Thread(target=_repeat, args=(attack, srv, timeout, window, calls),
                                  daemon=True)
        with benchlib.RssSampler(srv.proc.pid, interval=0.1) as rss, Probes(srv) as probes:
            worker.start()
            worker.join(window + timeout)
        answered = [s for s, a in calls if a is not None]
        took = f"{benchlib.median(answered):.3f} s" if answered else ""
        if worker.is_alive() or len(answered) < len(calls):
            took += (", then " if took else "") + f"none in {timeout:.0f} s"
        last = calls[-1][1] if calls else None
        answer = " ".join(last.split()) if last is not None else "(no answer)"
        alive = "yes" if srv.proc.poll() is None else f"no (rc {srv.proc.returncode})"
        return [attack.label, str(len(calls)), took, answer.replace("|", "/")[:60],
                Probes.summary(probes.echo), Probes.summary(probes.http), f"{rss_before:.0f}",
                f"{rss.peak:.0f}", alive]
    finally:
        srv.stop(timeout=5)


def _repeat(attack: Attack, srv: Server, timeout: float, window: float,
            calls: list[tuple[float, str | None]]) -> None:
    """The attack again and again for `window` seconds (at least once, and not after a
    request had no answer): (seconds, answer or None when it had none in time)."""
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        answer: str | None
        try:
            answer = attack.run(srv, timeout)
        except (TimeoutError, subprocess.TimeoutExpired):
            answer = None
        except urllib.error.URLError as e:
            answer = None if isinstance(e.reason, TimeoutError) else f"error: {e}"
        except OSError as e:
            answer = f"error: {e}"
        calls.append((time.perf_counter() - t0, answer))
        if answer is None or time.perf_counter() - start >= window:
            return


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Hostile single requests against pipacs.")
    ap.add_argument("--only", choices=sorted(ATTACKS), help="one family of attacks")
    ap.add_argument("--timeout", type=float, default=30, help="seconds one request may take")
    ap.add_argument("--window", type=float, default=3,
                    help="seconds during which each attack is repeated (default 3)")
    ap.add_argument("--memory-limit", type=float, default=4, metavar="GB",
                    help="address space allowed to pipacs (default 4)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--tmp", type=Path, default=None, help="where to make the temp dir")
    args = ap.parse_args(argv)
    if not ingest.PIPACS_BIN.exists():
        print(f"{ingest.PIPACS_BIN} not found (pip install -e server, or set PIPACS_BIN)")
        return 2
    os.environ["MALLOC_ARENA_MAX"] = "2"  # inherited by the servers
    limit = int(args.memory_limit * (1 << 30))
    families = [args.only] if args.only else list(ATTACKS)
    root = Path(tempfile.mkdtemp(prefix="pipacs-attacks-", dir=args.tmp))
    print(f"pipacs: {ingest.PIPACS_BIN}; load average {benchlib.loadavg()}; "
          f"timeout {args.timeout:.0f} s; address space limit {args.memory_limit:g} GB")
    rows = []
    try:
        instance = one_instance(root / "data")
        for family in families:
            for n, attack in enumerate(ATTACKS[family]):
                print(f"  {attack.label} ...", flush=True)
                rows.append(measure(attack, root / f"{family}{n}", instance, args.timeout,
                                    args.window, limit))
    finally:
        benchlib.stop_and_clean([], root, args.keep)
    benchlib.print_table(
        ["attack", "requests", "answered after (median)", "last answer", "C-ECHO <= 1 s",
         "GET /system <= 1 s", "RSS before (MB)", "peak RSS (MB)", "alive after"],
        rows, f"Attacks (one fresh pipacs each, repeated for {args.window:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
