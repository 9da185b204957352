"""30 simulated iPads browsing the web viewer at once, pipacs next to Debian's Orthanc 1.10.1.

Both servers are started on loopback (``bench/ingest.py``'s servers, ``StableAge`` 2) and get
the same studies over DICOM: ``make_small(patients=10)`` (20 studies of 2 series x 10, CT
128x128 or MR 64x64) and ``make_large(count=100, studies=4)`` (4 CT studies of 25 512x512
slices). Then each server in turn is loaded for ``--duration`` seconds by a second process
(this script with ``--client``: asyncio, raw HTTP/1.1 keep-alive, at most 6 connections per
iPad as Safari opens) while the other one idles, and its RSS is sampled every 0.5 s.

Each iPad repeats what the viewer page (``plugins/viewer_assets``) makes Safari request when a
student opens it and looks at a study; requests of one step go out together, a step starts
when the previous one is answered (plus ``--think`` seconds), as the page's promises chain:

1. ``GET /viewer/`` then ``viewer.css`` and ``viewer.js`` (with ``If-None-Match`` from the
   second visit on: ``Cache-Control: no-cache`` makes Safari revalidate, 304 expected);
2. ``GET /system`` and ``GET /studies?expand`` (the study list);
3. a study picked at random: ``GET /studies/{id}`` and ``/studies/{id}/series?expand``;
4. one thumbnail per series, ``/instances/{middle}/rendered?width=92&height=92``, with
   ``GET /series/{first}/instances``;
5. ``GET /instances/{middle}/simplified-tags``, then ``/instances/{middle}/rendered?quality=90``
   (an iPad's stage is wider than 512 pixels, so no size is asked), then the 6 neighbours
   the page prefetches (+-1, +-2, +-3) together;
6. scrolling the series to its end and back to its start: every slice not yet fetched, one
   at a time (each scroll step asks for one new image once the prefetch is ahead);
7. the second series: its instance list, tags, middle image and prefetch;
8. back to the list: ``GET /studies?expand`` again; then the next visit.

Orthanc gets exactly the same requests: every REST route the viewer calls exists in Orthanc
with the same answers (pipacs computes Orthanc's IDs, so even the URLs are the same), and the
three static files are served to Orthanc by its ServeFolders plugin (Debian's
``libServeFolders.so``) from the viewer's assets folder, at ``/viewer/index.html`` because
ServeFolders has no folder index. An Orthanc user's viewer would make these requests too:
Orthanc Explorer lists with ``/studies`` and ``/series/{id}/instances`` and shows
``/instances/{id}/preview``; ``/rendered`` is the same renderer with a size and a quality.

The table gives, per server: requests/s, p50/p99 latency over every request and by kind
(page and assets, lists, thumbnails, full images, tags), errors (status >= 400 other than
the expected, or a failed connection), completed visits, peak and final RSS. The load
average is printed with each server's figures; the client's own CPU time is printed too
(it runs on the same 2 cores).

Usage: ``.venv/bin/python bench/ipads.py [--ipads 30] [--duration 30] [--think 0]
[--rounds 1] [--only pipacs|orthanc] [--keep]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parent.parent
ASSETS = REPO / "server" / "src" / "pipacs" / "plugins" / "viewer_assets"
SERVE_FOLDERS = "/usr/share/orthanc/plugins/libServeFolders.so"
CONNECTIONS_PER_IPAD = 6  # Safari's limit per host
HEADERS = {
    "User-Agent": "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
    "Accept-Encoding": "gzip, deflate",
    "Accept-Language": "en-GB,en;q=0.9",
}
KINDS = ("page", "list", "thumbnail", "image", "tags")


# --- the plan: what each visit requests (built in the main process) --------------------


def build_studies(port: int) -> list[dict[str, object]]:
    """For every study: its ID and, per series, the instance IDs in viewer order."""

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
            return json.load(r)

    def number(tags: dict[str, str], key: str) -> float:
        try:
            return float(str(tags.get(key, "")).split("\\")[0])
        except ValueError:
            return 0.0

    studies = []
    for study_id in get("/studies"):
        series = get(f"/studies/{study_id}/series?expand")
        series.sort(key=lambda s: number(s["MainDicomTags"], "SeriesNumber"))
        plan = []
        for se in series:
            inst = get(f"/series/{se['ID']}/instances")
            inst.sort(key=lambda i: (number(i["MainDicomTags"], "InstanceNumber"),
                                     i.get("IndexInSeries") or 0))
            plan.append({"id": se["ID"], "instances": [i["ID"] for i in inst]})
        studies.append({"id": study_id, "series": plan})
    return studies


def visit_steps(study: dict[str, object], page: str) -> list[list[tuple[str, str]]]:
    """The steps of one visit: lists of (kind, path) requested together."""
    series: list[dict[str, object]] = study["series"]  # type: ignore[assignment]
    sid = study["id"]
    steps: list[list[tuple[str, str]]] = [
        [("page", page)],
        [("page", "/viewer/viewer.css"), ("page", "/viewer/viewer.js")],
        [("list", "/system"), ("list", "/studies?expand")],
        [("list", f"/studies/{sid}"), ("list", f"/studies/{sid}/series?expand")],
    ]
    thumbs: list[tuple[str, str]] = []
    for se in series:
        ids: list[str] = se["instances"]  # type: ignore[assignment]
        if ids:
            thumbs.append(("thumbnail",
                           f"/instances/{ids[len(ids) // 2]}/rendered?width=92&height=92"))
    for n, se in enumerate(series[:2]):
        ids = se["instances"]  # type: ignore[assignment]
        listing = [("list", f"/series/{se['id']}/instances")]
        steps.append(thumbs + listing if n == 0 else listing)
        if not ids:
            continue
        middle = len(ids) // 2

        def image(i: int, ids: list[str] = ids) -> tuple[str, str]:
            return ("image", f"/instances/{ids[i]}/rendered?quality=90")

        steps.append([("tags", f"/instances/{ids[middle]}/simplified-tags")])
        steps.append([image(middle)])
        near = [middle + d for d in (1, -1, 2, -2, 3, -3) if 0 <= middle + d < len(ids)]
        steps.append([image(i) for i in near])
        if n == 0:  # scroll to the end and back to the start, one new slice at a time
            seen = {middle, *near}
            for i in [*range(middle, len(ids)), *range(len(ids) - 1, -1, -1)]:
                if i not in seen:
                    seen.add(i)
                    steps.append([image(i)])
    steps.append([("list", "/studies?expand")])
    return steps


# --- the client (a second process) ------------------------------------------------------


class Conn:
    """One HTTP/1.1 keep-alive connection."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, path: str, headers: dict[str, str]) -> tuple[int, int, str]:
        """GET path: (status, body bytes, ETag)."""
        for attempt in (0, 1):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            assert self.reader is not None
            head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            self.writer.write(head.encode())
            try:
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionResetError("closed before answering")
            except (ConnectionError, OSError):
                self.close()
                if attempt:  # a kept-alive connection closed by the server: retry once
                    raise
                continue
            return await self._response(status_line)
        raise AssertionError("unreachable")

    async def _response(self, status_line: bytes) -> tuple[int, int, str]:
        assert self.reader is not None
        status = int(status_line.split()[1])
        fields: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            fields[k.strip().lower()] = v.strip()
        size = 0
        if status == 304 or status < 200:
            pass
        elif "content-length" in fields:
            size = int(fields["content-length"])
            await self.reader.readexactly(size)
        elif "chunked" in fields.get("transfer-encoding", ""):
            while True:
                n = int((await self.reader.readline()).split(b";")[0], 16)
                await self.reader.readexactly(n + 2)
                size += n
                if n == 0:
                    break
        else:
            size = len(await self.reader.read())
            fields["connection"] = "close"
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, size, fields.get("etag", "")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class IPad:
    def __init__(self, port: int, rng: random.Random, studies: list[dict[str, object]],
                 page: str, think: float, log: list[tuple[str, float, int, int]]):
        self.port = port
        self.rng = rng
        self.studies = studies
        self.page = page
        self.think = think
        self.log = log
        self.idle = [Conn(port) for _ in range(CONNECTIONS_PER_IPAD)]
        self.etags: dict[str, str] = {}
        self.visits = 0
        self.errors: list[str] = []

    async def fetch(self, kind: str, path: str) -> None:
        conn = self.idle.pop()
        headers = dict(HEADERS)
        headers["Accept"] = {"page": "text/html,*/*", "thumbnail": "image/*",
                             "image": "image/jpeg"}.get(kind, "application/json")
        if path in self.etags:
            headers["If-None-Match"] = self.etags[path]
        t0 = time.perf_counter()
        try:
            status, size, etag = await conn.request(path, headers)
        except (OSError, ValueError, asyncio.IncompleteReadError) as e:
            conn.close()
            self.log.append((kind, (time.perf_counter() - t0) * 1000, 599, 0))
            self.errors.append(f"{path}: {type(e).__name__} {e}")
            return
        finally:
            self.idle.append(conn)
        self.log.append((kind, (time.perf_counter() - t0) * 1000, status, size))
        if status >= 400:
            self.errors.append(f"{path}: HTTP {status}")
        if etag and kind == "page":
            self.etags[path] = etag

    async def run(self, deadline: float) -> None:
        while time.perf_counter() < deadline:
            study = self.rng.choice(self.studies)
            for step in visit_steps(study, self.page):
                if time.perf_counter() >= deadline:
                    return
                await asyncio.gather(*(self.fetch(k, p) for k, p in step))
                if self.think:
                    await asyncio.sleep(self.think)
            self.visits += 1

    def close(self) -> None:
        for c in self.idle:
            c.close()


async def _client(port: int, plan: dict[str, object], ipads: int, duration: float,
                  think: float, seed: int) -> dict[str, object]:
    log: list[tuple[str, float, int, int]] = []
    studies: list[dict[str, object]] = plan["studies"]  # type: ignore[assignment]
    pads = [IPad(port, random.Random(f"{seed}:{i}"), studies, str(plan["page"]), think, log)
            for i in range(ipads)]
    t0 = time.perf_counter()
    # iPads join over the first second, as a class does not tap at the same millisecond
    tasks = []
    for i, pad in enumerate(pads):
        tasks.append(asyncio.create_task(pad.run(t0 + duration)))
        await asyncio.sleep(1.0 / ipads if i < ipads - 1 else 0)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    for pad in pads:
        pad.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "elapsed": elapsed,
        "log": log,
        "visits": sum(p.visits for p in pads),
        "errors": [e for p in pads for e in p.errors][:20],
        "error_count": sum(len(p.errors) for p in pads),
        "cpu": usage.ru_utime + usage.ru_stime,
    }


def client_main(args: argparse.Namespace) -> int:
    plan = json.loads(Path(args.client).read_text())
    out = asyncio.run(_client(args.port, plan, args.ipads, args.duration, args.think, args.seed))
    json.dump(out, sys.stdout)
    return 0


# --- the servers and the report (main process) -----------------------------------------


def server_class() -> type:
    import ingest

    class Server(ingest.Server):
        """ingest's server with the viewer: pipacs' built-in, Orthanc's ServeFolders."""

        def config(self) -> dict[str, object]:
            cfg = super().config()
            cfg["StableAge"] = 2
            if self.kind == "orthanc":
                cfg["Plugins"] = [SERVE_FOLDERS]
                cfg["ServeFolders"] = {"/viewer": str(ASSETS)}
            else:
                cfg["WebViewer"] = {"Enable": True}
            return cfg

    return Server


def run_load(srv: object, plan_path: Path, args: argparse.Namespace) -> dict[str, object]:
    import benchlib

    cmd = [sys.executable, str(Path(__file__).resolve()), "--client", str(plan_path),
           "--port", str(srv.http_port), "--ipads", str(args.ipads),  # type: ignore[attr-defined]
           "--duration", str(args.duration), "--think", str(args.think), "--seed", str(args.seed)]
    with benchlib.RssSampler(srv.proc.pid) as rss:  # type: ignore[attr-defined]
        done = subprocess.run(cmd, check=True, capture_output=True, timeout=args.duration + 300)
    out: dict[str, object] = json.loads(done.stdout)
    out["rss_peak"] = rss.peak
    out["rss_last"] = rss.last
    out["loadavg"] = benchlib.loadavg()
    return out


def summarise(out: dict[str, object]) -> dict[str, str]:
    import benchlib

    log: list[list[float]] = out["log"]  # type: ignore[assignment]
    elapsed = float(out["elapsed"])  # type: ignore[arg-type]
    lat = [r[1] for r in log]
    cells = {
        "requests": f"{len(log)}",
        "requests/s": f"{len(log) / elapsed:.0f}",
        "MB/s sent": f"{sum(r[3] for r in log) / elapsed / 1e6:.1f}",
        "latency p50 (ms)": f"{benchlib.percentile(lat, 50):.1f}",
        "latency p99 (ms)": f"{benchlib.percentile(lat, 99):.1f}",
        "latency max (ms)": f"{max(lat, default=0):.0f}",
    }
    for kind in KINDS:
        sub = [r[1] for r in log if r[0] == kind]
        cells[f"  {kind}: p50 / p99 (ms), requests"] = (
            f"{benchlib.percentile(sub, 50):.1f} / {benchlib.percentile(sub, 99):.1f}, {len(sub)}")
    cells["304 Not Modified answers"] = f"{sum(1 for r in log if r[2] == 304)}"
    cells["errors"] = f"{out['error_count']}"
    cells["visits completed"] = f"{out['visits']}"
    cells["RSS peak / end of load (MB)"] = f"{out['rss_peak']:.0f} / {out['rss_last']:.0f}"
    cells["client CPU (s)"] = f"{out['cpu']:.1f}"
    cells["load average after"] = str(out["loadavg"])
    return cells


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipads", type=int, default=30, help="simulated iPads (default 30)")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of load per server")
    ap.add_argument("--think", type=float, default=0.0,
                    help="seconds between a visit's steps (default 0: as fast as answered)")
    ap.add_argument("--rounds", type=int, default=1, help="loads per server, order alternated")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=["orthanc", "pipacs"], help="one server only")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--client", help=argparse.SUPPRESS)  # plan file: run as the load client
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        return client_main(args)

    import benchlib
    import datagen
    import ingest

    kinds = [args.only] if args.only else ["orthanc", "pipacs"]
    root = Path(tempfile.mkdtemp(prefix="bench-ipads-"))
    servers: dict[str, ingest.Server] = {}
    try:
        small = datagen.make_small(root / "data" / "small", patients=10, seed=1)
        large = datagen.make_large(root / "data" / "large", count=100, studies=4, seed=2)
        files = [*small, *large]
        print(f"data: {len(small)} small + {len(large)} large files; "
              f"{ingest._orthanc_version()}; load average {benchlib.loadavg()}")
        cls = server_class()
        for kind in kinds:
            ingest.start_and_fill(servers, kind, cls(kind, root / kind), files)
        time.sleep(4)  # StableAge 2: stability work over before the load
        first = servers[kinds[-1]]
        plan_path = root / "plan.json"
        studies = build_studies(first.http_port)
        page = {"orthanc": "/viewer/index.html", "pipacs": "/viewer/"}
        results: dict[str, list[dict[str, object]]] = {k: [] for k in kinds}
        for rnd in range(args.rounds):
            order = kinds if rnd % 2 == 0 else list(reversed(kinds))
            for kind in order:
                plan_path.write_text(json.dumps({"studies": studies, "page": page[kind]}))
                print(f"  round {rnd + 1}: {args.ipads} iPads on {kind} for {args.duration:g} s "
                      f"(load average before {benchlib.loadavg()}) ...", flush=True)
                out = run_load(servers[kind], plan_path, args)
                results[kind].append(out)
                for e in out["errors"][:5]:  # type: ignore[index]
                    print(f"    ! {e}")
        for rnd in range(args.rounds):
            table = {k: summarise(results[k][rnd]) for k in kinds}
            labels = list(next(iter(table.values())))
            headers = ["measure", *kinds]
            rows = [[label, *(table[k][label] for k in kinds)] for label in labels]
            if len(kinds) == 2:
                headers.append("pipacs/Orthanc")
                for row, label in zip(rows, labels, strict=True):
                    skip = label in ("client CPU (s)", "load average after")
                    row.append("" if skip else _ratio(table["orthanc"][label],
                                                      table["pipacs"][label]))
            benchlib.print_table(
                headers, rows,
                f"{args.ipads} iPads, {args.duration:g} s each, think time {args.think:g} s, "
                f"round {rnd + 1}")
    finally:
        benchlib.stop_and_clean(servers.values(), root, args.keep)
    return 0


def _ratio(orthanc: str, pipacs: str) -> str:
    """pipacs / Orthanc of the first figure in each cell (the p50 in "p50 / p99, n")."""
    try:
        o, p = float(orthanc.split()[0].rstrip(",")), float(pipacs.split()[0].rstrip(","))
    except (ValueError, IndexError):
        return ""
    return f"{p / o:.2f}x" if o else ""


if __name__ == "__main__":
    sys.exit(main())
