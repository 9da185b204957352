#!/usr/bin/env python3
"""Thirty tablets at once over a Pi's Wi-Fi: what a class waits for, and what it costs the air.

Starts a server (pipacs, or Debian's Orthanc with its web viewer plugin), stores one CT series
(bench/datagen.py's 512x512 slices, 200 by default), and runs N simulated tablets in a network
namespace joined to the server by a veth pair shaped like a classroom Wi-Fi: `tc netem` with a
shared rate (20 Mbit/s) and a few ms of delay each way. Each tablet does what its viewer does:
the page and its assets, the study list, the study (pipacs: the series strip's thumbnail),
then the middle image alone (each viewer shows it before it prefetches), then every other image
of the series outwards, up to 4 requests in flight (a browser opens up to 6 connections per
host; the viewers prefetch a few images ahead, a student scrolls through the rest).

    sudo .venv/bin/python bench/tablets.py                       # pipacs viewer, 30 tablets
    sudo .venv/bin/python bench/tablets.py --viewers pipacs,orthanc,ohif
    sudo .venv/bin/python bench/tablets.py --tablets 5 --slices 40   # quick
    sudo .venv/bin/python bench/tablets.py --pi3                 # servers capped like a Pi 3

Viewers (the requests are the ones each viewer's code makes; no browser is run here):
- `pipacs`: pipacs' /viewer/ (server-rendered JPEG per slice, /instances/{id}/rendered at the
  viewer's quality 90); `pipacs-q95` the same at Orthanc's web viewer quality (95).
- `orthanc`: Orthanc 1.10.1 + orthanc-webviewer 2.8 (/web-viewer/series, then
  /web-viewer/instances/jpeg95-{id}_0 per slice: JSON with the JPEG in base64).
- `ohif`: OHIF 3 against pipacs' DICOMweb (QIDO, series metadata, then WADO-RS frames with
  `transfer-syntax=*`, as OHIF's default data source asks for them).
Per tablet it prints the time to the first image, to the whole series, and the bytes on the
air; per viewer the p50/p95 over the tablets, and how long the link itself needs for all the
bytes sent (rate x total bytes): the goal is the whole series within 1.2x of that.

`--pi3` runs the server in a cgroup (v1 or v2) with `--cpu-quota` of one CPU (0.6) and 1 GB
of memory, a rough Raspberry Pi 3 (four 1.2 GHz cores are about this machine's 0.6 core for
this kind of work); both servers get the same limits.

Needs root (ip netns, tc). Talks only to its own namespace and loopback. Cleans up on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

NS = f"pipacs-air-{os.getpid()}"
HOST_IF, NS_IF = f"pa{os.getpid() % 100000}", f"pb{os.getpid() % 100000}"
HOST_IP, NS_IP = "10.213.0.1", "10.213.0.2"
IN_FLIGHT = 4
TABLET_ADDRESSES = 200  # 10.213.0.10 and up, one per tablet


def tablet_ip(k: int) -> str:
    return f"10.213.0.{10 + k % TABLET_ADDRESSES}"
ORTHANC_VIEWER = "/usr/share/orthanc/plugins/libOrthancWebViewer.so"
CLIENT_RTT = 0.0  # seconds each tablet waits before a request when the kernel cannot delay


def ms(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)ms", text)
    if not m:
        raise SystemExit(f"--delay {text!r}: write e.g. 3ms")
    return float(m.group(1))


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


# ---------------------------------------------------------------- the air


def air_up(rate: str, delay: str, queue: str = "station", tablets: int = 30) -> None:
    """A namespace for the tablets, a veth pair to it, both directions shaped."""
    sh("ip", "netns", "add", NS)
    sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
    sh("ip", "link", "set", NS_IF, "netns", NS)
    sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_IF)
    sh("ip", "link", "set", HOST_IF, "up")
    sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/24", "dev", NS_IF)
    # Each tablet has its own address, as iPads on a Wi-Fi do (pipacs caps connections per
    # address: 30 tablets behind one address would be one very busy client).
    for k in range(TABLET_ADDRESSES):
        sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{tablet_ip(k)}/24", "dev", NS_IF)
    sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")
    sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
    global CLIENT_RTT
    for prefix, dev, side in (((), HOST_IF, "dst"), (("ip", "netns", "exec", NS), NS_IF, "src")):
        tc = (*prefix, "tc")
        if queue == "station":
            # One rate for the channel, one queue per tablet served in turn: an access point's
            # per-station queues (Linux mac80211's with airtime fairness; brcmfmac, the Pi's
            # Wi-Fi, keeps a flow ring per station). A tablet's first image then waits behind
            # its own bytes, not behind every other tablet's prefetching.
            sh(*tc, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "2",
               "r2q", "100")
            sh(*tc, "class", "add", "dev", dev, "parent", "1:", "classid", "1:1", "htb",
               "rate", rate, "ceil", rate)
            share = f"{max(1.0, rate_bits(rate) / 1000 / max(1, tablets)):.0f}kbit"
            for k in range(min(tablets, TABLET_ADDRESSES) + 1):  # the last: everything else
                cls = f"1:{k + 2:x}"
                sh(*tc, "class", "add", "dev", dev, "parent", "1:1", "classid", cls, "htb",
                   "rate", share, "ceil", rate, "quantum", "1514")
                leaf = sh(*tc, "qdisc", "add", "dev", dev, "parent", cls, "netem", "delay",
                          delay, "limit", "1000", check=False)
                if leaf.returncode:
                    sh(*tc, "qdisc", "add", "dev", dev, "parent", cls, "bfifo", "limit", "1mb")
                    CLIENT_RTT = 2 * ms(delay) / 1000
                if k < min(tablets, TABLET_ADDRESSES):
                    sh(*tc, "filter", "add", "dev", dev, "protocol", "ip", "parent", "1:",
                       "prio", "1", "u32", "match", "ip", side, f"{tablet_ip(k)}/32",
                       "flowid", cls)
            continue
        # fifo: one token bucket per direction, every tablet's bytes queue behind one another
        # in 2 MB (a deep single queue, as pfifo_fast's 1,000 packets on a Pi's wlan0). netem
        # would add the delay in the kernel; where the kernel has no sch_netem (as here),
        # the tablets wait the round trip themselves before each request (Tablet.get).
        shaped = sh(*tc, "qdisc", "add", "dev", dev, "root", "netem", "delay", delay,
                    "rate", rate, "limit", "10000", check=False)
        if shaped.returncode:
            sh(*tc, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
               "burst", "64kb", "limit", "2mb")
            CLIENT_RTT = 2 * ms(delay) / 1000


def air_down() -> None:
    sh("ip", "link", "del", HOST_IF, check=False)
    sh("ip", "netns", "del", NS, check=False)


def rate_bits(rate: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)bit", rate.lower())
    if not m:
        raise SystemExit(f"--rate {rate!r}: write e.g. 20mbit")
    return float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


# ---------------------------------------------------------------- limits like a Pi 3


class Cgroup:
    """A CPU quota and a memory limit for one server process (cgroup v2, else v1)."""

    def __init__(self, cpu: float, memory_mb: int):
        self.paths: list[Path] = []
        name = f"pipacs-bench-{os.getpid()}"
        root = Path("/sys/fs/cgroup")
        if (root / "cgroup.controllers").exists():
            path = root / name
            path.mkdir()
            (path / "cpu.max").write_text(f"{int(cpu * 100000)} 100000")
            (path / "memory.max").write_text(str(memory_mb << 20))
            self.paths = [path]
        else:
            cpu_dir, mem_dir = root / "cpu" / name, root / "memory" / name
            cpu_dir.mkdir()
            mem_dir.mkdir()
            (cpu_dir / "cpu.cfs_period_us").write_text("100000")
            (cpu_dir / "cpu.cfs_quota_us").write_text(str(int(cpu * 100000)))
            (mem_dir / "memory.limit_in_bytes").write_text(str(memory_mb << 20))
            self.paths = [cpu_dir, mem_dir]

    def add(self, pid: int) -> None:
        for path in self.paths:
            (path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        for path in self.paths:
            with contextlib.suppress(OSError):
                path.rmdir()


# ---------------------------------------------------------------- servers


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            u = urllib.parse.urlsplit(url)
            c = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=2)
            c.request("GET", "/system")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server did not answer:\n{log.read_text(errors='replace')[-3000:]}")


def start_server(kind: str, folder: Path,
                 cgroup: Cgroup | None) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config: dict[str, Any] = {
        "Name": "Classroom", "HttpPort": port, "DicomPort": free_port(),
        "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "RemoteAccessAllowed": True, "AuthenticationEnabled": False, "StableAge": 1,
    }
    if kind == "orthanc":
        config["Plugins"] = [ORTHANC_VIEWER]
        cmd = ["/usr/sbin/Orthanc", str(folder / "config.json")]
    else:
        config["Plugins"] = ["libOrthancWebViewer.so"]  # pipacs' built-in viewer
        config["DicomWeb"] = {"Enable": True}
        exe = os.environ.get("PIPACS_BIN") or str(REPO / ".venv" / "bin" / "pipacs")
        cmd = [exe, str(folder / "config.json")]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    log = folder / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=folder,
                                env={**os.environ, "TCP_NODELAY": "1"})
    if cgroup is not None:
        cgroup.add(proc.pid)
    wait_http(f"http://127.0.0.1:{port}", proc, log)
    return proc, port


def upload(port: int, files: list[Path]) -> None:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for f in files:
        c.request("POST", "/instances", body=f.read_bytes(),
                  headers={"Content-Type": "application/dicom"})
        r = c.getresponse()
        r.read()
        if r.status != 200:
            raise SystemExit(f"upload of {f} answered {r.status}")


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# ---------------------------------------------------------------- one tablet (in the namespace)


class Tablet:
    """One iPad: a few keep-alive connections, bytes counted as they arrive (headers too)."""

    def __init__(self, host: str, port: int, rtt: float, source: str):
        self.host, self.port, self.rtt, self.source = host, port, rtt, source
        self.bytes = 0
        self.requests = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.local = threading.local()

    def get(self, path: str, accept: str = "*/*") -> bytes:
        conn = getattr(self.local, "conn", None)
        if self.rtt:
            time.sleep(self.rtt)
        for attempt in range(2):
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=600,
                                                  source_address=(self.source, 0))
                self.local.conn = conn
            try:
                conn.request("GET", path, headers={"Accept": accept,
                                                   "Accept-Encoding": "gzip, deflate",
                                                   "User-Agent": "Mozilla/5.0 (iPad)"})
                r = conn.getresponse()
                body = r.read()
                head = sum(len(k) + len(v) + 4 for k, v in r.getheaders()) + 17
                with self.lock:
                    self.bytes += len(body) + head
                    self.requests += 1
                if r.status != 200:
                    self.errors.append(f"{r.status} {path}")
                if r.getheader("Content-Encoding") == "gzip":
                    import gzip

                    body = gzip.decompress(body)
                return body
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                conn = self.local.conn = None
                if attempt:
                    self.errors.append(f"{type(e).__name__} {path}")
        return b""

    def images(self, paths: list[str], accept: str) -> float:
        """The middle image alone (each viewer shows it before it prefetches), then every
        other path outwards, IN_FLIGHT at a time; the time the first (middle) one arrived."""
        middle = len(paths) // 2
        self.get(paths[middle], accept)
        first_at = time.monotonic()
        order = [i for d in range(1, len(paths)) for i in (middle + d, middle - d)
                 if 0 <= i < len(paths)]
        work: queue.Queue[int] = queue.Queue()
        for i in order:
            work.put(i)

        def worker() -> None:
            while True:
                try:
                    i = work.get_nowait()
                except queue.Empty:
                    return
                self.get(paths[i], accept)

        threads = [threading.Thread(target=worker) for _ in range(IN_FLIGHT)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return first_at


def assets(page: bytes, base: str) -> list[str]:
    """The scripts and style sheets a page loads from its own server."""
    found = re.findall(rb'(?:src|href)="([^"#?]+\.(?:js|css))"', page)
    return [urllib.parse.urljoin(base, f.decode()) for f in found]


def run_pipacs(t: Tablet, quality: int = 90) -> float:
    page = t.get("/viewer/", "text/html")
    for a in assets(page, "/viewer/"):
        t.get(a)
    t.get("/system", "application/json")
    studies = json.loads(t.get("/studies?expand", "application/json"))
    study = studies[0]["ID"]
    t.get(f"/studies/{study}", "application/json")
    series = json.loads(t.get(f"/studies/{study}/series?expand", "application/json"))
    for se in series:  # the series strip's thumbnails (a 92-pixel image each)
        ids = se.get("Instances") or []
        if ids:
            t.get(f"/instances/{ids[len(ids) // 2]}/rendered?width=92&height=92", "image/jpeg")
    instances = json.loads(t.get(f"/series/{series[0]['ID']}/instances", "application/json"))
    instances.sort(key=lambda i: int(i["MainDicomTags"].get("InstanceNumber", "0") or 0))
    t.get(f"/instances/{instances[len(instances) // 2]['ID']}/simplified-tags", "application/json")
    paths = [f"/instances/{i['ID']}/rendered?quality={quality}" for i in instances]
    return t.images(paths, "image/jpeg")


def run_orthanc(t: Tablet) -> float:
    studies = json.loads(t.get("/studies?expand", "application/json"))  # Orthanc Explorer
    series_id = studies[0]["Series"][0]
    page = t.get(f"/web-viewer/app/viewer.html?series={series_id}", "text/html")
    for a in assets(page, "/web-viewer/app/"):
        t.get(a)
    volume = json.loads(t.get(f"/web-viewer/series/{series_id}", "application/json"))
    paths = [f"/web-viewer/instances/jpeg95-{s}" for s in volume["Slices"]]
    return t.images(paths, "application/json")


def run_ohif(t: Tablet) -> float:
    studies = json.loads(t.get("/dicom-web/studies?limit=101&offset=0&fuzzymatching=false"
                               "&includefield=00081030%2C00080060", "application/dicom+json"))
    study = studies[0]["0020000D"]["Value"][0]
    series = json.loads(t.get(f"/dicom-web/studies/{study}/series", "application/dicom+json"))
    suid = series[0]["0020000E"]["Value"][0]
    meta = json.loads(t.get(f"/dicom-web/studies/{study}/series/{suid}/metadata",
                            "application/dicom+json"))
    meta.sort(key=lambda m: int((m.get("00200013", {}).get("Value") or [0])[0]))
    paths = [f"/dicom-web/studies/{study}/series/{suid}/instances/{m['00080018']['Value'][0]}"
             "/frames/1" for m in meta]
    return t.images(paths, 'multipart/related; type="application/octet-stream"; transfer-syntax=*')


VIEWERS = {"pipacs": run_pipacs, "orthanc": run_orthanc, "ohif": run_ohif,
           "pipacs-q95": lambda t: run_pipacs(t, 95)}


def clients(viewer: str, port: int, tablets: int, stagger: float,
            rtt: float) -> list[dict[str, Any]]:
    """N tablets at once (this runs inside the namespace); one result per tablet."""
    results: list[dict[str, Any]] = [{} for _ in range(tablets)]

    def one(k: int) -> None:
        time.sleep(k * stagger)
        t = Tablet(HOST_IP, port, rtt, tablet_ip(k))
        start = time.monotonic()
        try:
            first = VIEWERS[viewer](t)
        except Exception as e:  # the tablet gave up: reported as such, not lost
            t.errors.insert(0, f"{type(e).__name__}: {e}"[:200])
            first = 0.0
        results[k] = {"first": first - start if first else None, "all": time.monotonic() - start,
                      "bytes": t.bytes, "requests": t.requests, "errors": t.errors[:5]}

    threads = [threading.Thread(target=one, args=(k,)) for k in range(tablets)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return results


# ---------------------------------------------------------------- report


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))]


def report(viewer: str, res: list[dict[str, Any]], rate: float, extra: str) -> dict[str, Any]:
    firsts = [r["first"] for r in res if r.get("first") is not None]
    alls = [r["all"] for r in res if r]
    total = sum(r.get("bytes", 0) for r in res)
    errors = [e for r in res for e in r.get("errors", [])]
    link = total * 8 / rate
    row = {
        "viewer": viewer, "tablets": len(res),
        "first p50": statistics.median(firsts) if firsts else float("nan"),
        "first p95": pct(firsts, 95) if firsts else float("nan"),
        "series p50": statistics.median(alls), "series p95": pct(alls, 95),
        "series max": max(alls), "MB/tablet": total / len(res) / 1e6,
        "link s": link, "max/link": max(alls) / link if link else float("nan"),
        "errors": len(errors),
    }
    print(f"\n== {viewer} ({extra})")
    for k, r in enumerate(res):
        first = "-" if r.get("first") is None else f"{r['first']:.2f}"
        print(f"   tablet {k + 1:2d}: first image {first} s, series {r['all']:.1f} s, "
              f"{r['bytes'] / 1e6:.1f} MB in {r['requests']} requests"
              + (f", errors {r['errors']}" if r["errors"] else ""))
    print(f"   first image p50 {row['first p50']:.2f} s, p95 {row['first p95']:.2f} s; whole "
          f"series p50 {row['series p50']:.1f} s, p95 {row['series p95']:.1f} s, last "
          f"{row['series max']:.1f} s; {row['MB/tablet']:.1f} MB per tablet; the link needs "
          f"{link:.1f} s for all bytes: last tablet at {row['max/link']:.2f}x; "
          f"errors {len(errors)}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--viewers", default="pipacs", help="comma list of " + ", ".join(VIEWERS))
    ap.add_argument("--tablets", type=int, default=30)
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--rate", default="20mbit", help="the shared Wi-Fi rate (netem)")
    ap.add_argument("--delay", default="3ms", help="one-way delay each direction")
    ap.add_argument("--stagger", type=float, default=0.1, help="seconds between tablet starts")
    ap.add_argument("--queue", choices=("station", "fifo"), default="station",
                    help="the access point's queueing: one queue per tablet served in turn "
                         "(default), or one 2 MB queue for all")
    ap.add_argument("--pi3", action="store_true", help="cap the server like a Raspberry Pi 3")
    ap.add_argument("--cpu-quota", type=float, default=0.6, help="with --pi3: CPUs")
    ap.add_argument("--memory-mb", type=int, default=1024, help="with --pi3: memory")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--client", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.client:  # inside the namespace
        spec = json.loads(args.client)
        print(json.dumps(clients(spec["viewer"], spec["port"], spec["tablets"], spec["stagger"],
                                 spec["rtt"])))
        return
    if os.geteuid() != 0:
        raise SystemExit("needs root: ip netns and tc (sudo .venv/bin/python bench/tablets.py)")
    viewers = [v.strip() for v in args.viewers.split(",") if v.strip()]
    unknown = set(viewers) - set(VIEWERS)
    if unknown:
        raise SystemExit(f"unknown viewer(s) {sorted(unknown)}: choose from {sorted(VIEWERS)}")
    if "orthanc" in viewers and not Path(ORTHANC_VIEWER).exists():
        raise SystemExit("orthanc-webviewer is not installed: apt-get install orthanc-webviewer")
    rate = rate_bits(args.rate)

    import datagen

    tmp = Path(tempfile.mkdtemp(prefix="pipacs-tablets-"))
    rows = []
    procs: list[subprocess.Popen[bytes]] = []

    def cleanup(*_: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        air_down()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    def on_sigterm(*_: object) -> None:
        cleanup()
        sys.exit(1)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        files = datagen.make_large(tmp / "data", count=args.slices, studies=1, seed=3)
        air_up(args.rate, args.delay, args.queue, args.tablets)
        limits = (f"server capped at {args.cpu_quota} CPU and {args.memory_mb} MB"
                  if args.pi3 else "server unlimited")
        how = ("in the kernel" if not CLIENT_RTT else
               "waited by the tablets before each request (no sch_netem in this kernel)")
        queueing = ("a queue per tablet" if args.queue == "station" else "one 2 MB queue")
        print(f"{args.tablets} tablets, {args.slices} slices of 512x512 CT, link {args.rate} "
              f"shared ({queueing}), {args.delay} each way {how}; {limits}; "
              f"load {os.getloadavg()[0]:.2f}")
        for viewer in viewers:
            kind = "orthanc" if viewer == "orthanc" else "pipacs"
            cgroup = Cgroup(args.cpu_quota, args.memory_mb) if args.pi3 else None
            proc, port = start_server(kind, tmp / viewer, cgroup)
            procs.append(proc)
            upload(port, files)
            spec = json.dumps({"viewer": viewer, "port": port, "tablets": args.tablets,
                               "stagger": args.stagger, "rtt": CLIENT_RTT})
            out = sh("ip", "netns", "exec", NS, sys.executable, __file__, "--client", spec)
            rows.append(report(viewer, json.loads(out.stdout), rate,
                               f"{kind} peak RSS {rss_mb(proc.pid):.0f} MB"))
            proc.terminate()
            proc.wait(30)
            if cgroup is not None:
                cgroup.remove()
        print("\n| viewer | first image p50 / p95 (s) | whole series p50 / p95 (s) | MB per "
              "tablet | link time for all bytes (s) | last tablet / link |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['viewer']} | {r['first p50']:.2f} / {r['first p95']:.2f} | "
                  f"{r['series p50']:.1f} / {r['series p95']:.1f} | {r['MB/tablet']:.1f} | "
                  f"{r['link s']:.1f} | {r['max/link']:.2f} |")
    finally:
        cleanup()


if __name__ == "__main__":
    main()
