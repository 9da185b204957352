"""REST latencies, pipacs next to Debian's Orthanc 1.10.1, on the same data in the same run.

Both servers are started fresh on loopback (temp folders, free ports, TCP_NODELAY=1 in their
environment, ``bench/ingest.py``'s configuration with ``StableAge`` 2) and get the same files
over DICOM (storescu): ``make_small(patients=50)`` (100 studies, 2000 instances) and
``make_large(count=100, studies=10)`` (10 studies of 10 CT 512x512 instances). After both
have settled, every route below is requested ``--requests`` times per server, alternating
pipacs and Orthanc request by request, each over one keep-alive connection (``http.client``)
with ``Accept-Encoding: identity``; heavy routes get half the requests (at least 10),
sub-millisecond ones ten times as many (their medians move with every busy moment).
Two warm-up requests per route and server are not counted.

The table gives median and 95th percentile in ms, the pipacs/Orthanc ratio of the medians
and PASS/FAIL against the target: no route slower than 2x Orthanc. Answers are checked to
be 200 and, for JSON lists, to hold as many items on both servers.

Usage: ``.venv/bin/python bench/rest.py [--requests 30] [--patients 50] [--large 100]
[--keep]``. Compare ratios taken in the same run (the machine is noisy, see README.md).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
import datagen
import ingest

TARGET = 2.0  # pipacs may take at most this many times Orthanc's median
HEADERS = {"Accept-Encoding": "identity"}


class Server(ingest.Server):
    """ingest's server, with a short StableAge so that stability work ends before measuring."""

    def config(self) -> dict[str, object]:
        cfg = super().config()
        cfg["StableAge"] = 2
        return cfg


@dataclass
class Route:
    label: str
    method: str
    path: str
    body: bytes | None = None
    heavy: bool = False
    light: bool = False  # sub-millisecond: 10x the requests, or one busy moment decides


class Client:
    """One keep-alive HTTP connection to one server."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection(ingest.LOOPBACK, port, timeout=300)

    def call(self, route: Route) -> tuple[float, bytes]:
        headers = dict(HEADERS)
        if route.body is not None:
            headers["Content-Type"] = "application/json"
        t0 = time.perf_counter()
        self.conn.request(route.method, route.path, body=route.body, headers=headers)
        resp = self.conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"{route.method} {route.path}: {resp.status} {body[:200]!r}")
        if resp.getheader("Content-Encoding"):
            raise RuntimeError(f"{route.path}: answered {resp.getheader('Content-Encoding')}")
        return elapsed, body

    def close(self) -> None:
        self.conn.close()


def routes(client: Client, small: list[Path], large: list[Path]) -> list[Route]:
    """The measured routes, with IDs and values taken from the data (same on both servers)."""
    import pydicom

    from_small = pydicom.dcmread(small[0], stop_before_pixels=True)
    from_large = pydicom.dcmread(large[len(large) // 2], stop_before_pixels=True)
    patient = str(from_small.PatientID)
    name = str(from_small.PatientName)
    wildcard = name[:-1] + "*"  # the small set's patients P0001-P0009: 18 studies
    studies = len({p.parent.parent for p in small}) + len(
        {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in large})

    def lookup(uid: str, level: str) -> str:
        answer = client.call(Route("", "POST", "/tools/lookup", uid.encode()))[1]
        return next(r["ID"] for r in json.loads(answer) if r["Type"] == level)

    small_instance = lookup(str(from_small.SOPInstanceUID), "Instance")
    large_instance = lookup(str(from_large.SOPInstanceUID), "Instance")
    patient_id = lookup(patient, "Patient")

    def find(body: dict[str, object]) -> bytes:
        return json.dumps(body).encode()

    return [
        Route(f"GET /studies?expand ({studies} studies)", "GET", "/studies?expand"),
        Route("POST /tools/find Study, all", "POST", "/tools/find",
              find({"Level": "Study", "Query": {}})),
        Route("POST /tools/find Study, PatientName wildcard, expand", "POST", "/tools/find",
              find({"Level": "Study", "Query": {"PatientName": wildcard}, "Expand": True})),
        Route("POST /tools/find Instance, PatientID", "POST", "/tools/find",
              find({"Level": "Instance", "Query": {"PatientID": patient}})),
        Route("GET /instances/{id}/file (small, 39 KB)", "GET",
              f"/instances/{small_instance}/file", light=True),
        Route("GET /instances/{id}/file (large, 525 KB)", "GET",
              f"/instances/{large_instance}/file", light=True),
        Route("GET /instances/{id}/preview (small CT 128x128)", "GET",
              f"/instances/{small_instance}/preview"),
        Route("GET /instances/{id}/preview (large CT 512x512)", "GET",
              f"/instances/{large_instance}/preview"),
        Route(f"GET /instances?expand ({len(small) + len(large)} instances)", "GET",
              "/instances?expand",
              heavy=True),
        Route("GET /changes?last", "GET", "/changes?last", light=True),
        Route("GET /patients/{id}/archive (40 small instances)", "GET",
              f"/patients/{patient_id}/archive", heavy=True),
    ]


def count(body: bytes) -> int | None:
    """Items in a JSON list answer, None for anything else."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return len(value) if isinstance(value, list) else None


def measure(servers: dict[str, Server], route_list: list[Route], requests: int
            ) -> dict[str, dict[str, list[float]]]:
    clients = {k: Client(s.http_port) for k, s in servers.items()}
    times: dict[str, dict[str, list[float]]] = {r.label: {k: [] for k in servers}
                                                 for r in route_list}
    try:
        for route in route_list:
            n = max(10, requests // 2) if route.heavy else requests * 10 if route.light \
                else requests
            sizes = {}
            for kind, c in clients.items():
                for _ in range(2):
                    _, body = c.call(route)
                sizes[kind] = (count(body), len(body))
            counts = {kind: s[0] for kind, s in sizes.items()}
            if len(set(counts.values())) > 1:
                print(f"  ! {route.label}: list lengths differ {counts}")
            for _ in range(n):
                for kind, c in clients.items():
                    times[route.label][kind].append(c.call(route)[0] * 1000)
            bytes_info = ", ".join(f"{k} {s[1] / 1e3:.0f} KB" for k, s in sizes.items())
            print(f"  {route.label}: {n} requests each ({bytes_info})")
    finally:
        for c in clients.values():
            c.close()
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def ms(value: float) -> str:
    """Milliseconds with two significant decimals below 10 ms (0.24, not 0.2)."""
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def report(times: dict[str, dict[str, list[float]]]) -> bool:
    headers = ["route", "Orthanc median", "Orthanc p95", "pipacs median", "pipacs p95",
               "pipacs/Orthanc", "result"]
    rows, ok = [], True
    for label, per in times.items():
        o, p = statistics.median(per["orthanc"]), statistics.median(per["pipacs"])
        ratio = p / o if o else float("inf")
        passed = ratio <= TARGET
        ok &= passed
        rows.append([label, ms(o), ms(p95(per["orthanc"])), ms(p), ms(p95(per["pipacs"])),
                     f"{ratio:.2f}x", "PASS" if passed else "FAIL"])
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    print(f"\n## REST latencies (ms), target pipacs <= {TARGET:g}x Orthanc\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=30, metavar="N",
                    help="requests per route and server (heavy routes: N/2, at least 10; "
                         "sub-millisecond ones: 10 N)")
    ap.add_argument("--patients", type=int, default=50, help="small-set patients (default 50)")
    ap.add_argument("--large", type=int, default=100, help="large files, 10 studies (default 100)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    if not ingest.ORTHANC_BIN.exists() or not ingest.PIPACS_BIN.exists():
        print(f"needs {ingest.ORTHANC_BIN} and {ingest.PIPACS_BIN}")
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-rest-"))
    servers: dict[str, Server] = {}
    try:
        small = datagen.make_small(root / "data" / "small", patients=args.patients, seed=1)
        large = datagen.make_large(root / "data" / "large", count=args.large, seed=2,
                                   studies=min(10, args.large))
        files = [*small, *large]
        print(f"data: {len(small)} small + {len(large)} large files under {root}")
        print(f"host: {ingest._orthanc_version()}, load average {ingest._loadavg()}")
        for kind in ("orthanc", "pipacs"):
            ingest.start_and_fill(servers, kind, Server(kind, root / kind), files)
        time.sleep(4)  # StableAge 2: let both finish their stability work
        probe = Client(servers["orthanc"].http_port)
        try:
            route_list = routes(probe, small, large)
        finally:
            probe.close()
        times = measure({"orthanc": servers["orthanc"], "pipacs": servers["pipacs"]},
                        route_list, args.requests)
        ok = report(times)
        print(f"\nload average after: {ingest._loadavg()}")
        return 0 if ok else 1
    finally:
        benchlib.stop_and_clean(servers.values(), root, args.keep)


if __name__ == "__main__":
    sys.exit(main())
