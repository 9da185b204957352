"""Side-by-side ingest benchmark: Debian's Orthanc 1.10.1 against pipacs.

Each server is started fresh on loopback (temp storage, free ports, TCP_NODELAY=1 in its
environment), then measured with dcmtk clients, all in the same run:

* start-up time until the first C-ECHO is answered (echoscu polled),
* RSS when idle,
* ingest of the small set over one association (one storescu call with all files),
* ingest of the large set over one association,
* study-level C-FIND (findscu, median of several calls) once small + large are in,
* ingest of a second small set (new UIDs) over 4 parallel associations,
* ingest of a second large set (new UIDs, ``--large4`` files) over 4 parallel associations,
* RSS after ingest (about 5000 instances with the defaults),
* study-level C-FIND again with everything in.

Every ingest is checked: the number of stored instances must grow by the number of files
sent (``GET /statistics``, or counting files in the storage folder when the server has no
such route yet). The final table gives medians over ``--runs`` and pipacs/Orthanc ratios
with the project's targets.

Usage: ``.venv/bin/python bench/ingest.py [--only orthanc|pipacs|storescp] [--small N]
[--large N] [--runs K] [--keep]``. ``storescp`` (dcmtk's, forking) is a floor reference and
a stand-in while pipacs is not installed; add it to a full run with ``--with-storescp``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
import datagen

REPO = Path(__file__).resolve().parent.parent
PIPACS_BIN = Path(os.environ.get("PIPACS_BIN", REPO / ".venv" / "bin" / "pipacs"))
ORTHANC_BIN = Path(os.environ.get("ORTHANC_BIN", "/usr/sbin/Orthanc"))
DCMTK_BIN, dcmtk = benchlib.DCMTK_BIN, benchlib.dcmtk

LOOPBACK = "127.0.0.1"
CLIENT_ENV = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk leaves Nagle on without it
SERVER_AET = "BENCHPACS"
CLIENT_TIMEOUT = 1800  # seconds for any one dcmtk client call, a last resort

FIND_KEYS = [
    "QueryRetrieveLevel=STUDY",
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "StudyDescription",
    "ReferringPhysicianName",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


# --- process memory ------------------------------------------------------------------


def _vmrss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def rss_mb(pid: int) -> float:
    """VmRSS of a process and all its descendants, in MB (10^6 bytes)."""
    total = _vmrss_kb(pid) + sum(_vmrss_kb(c) for c in _descendants(pid))
    return total * 1024 / 1e6


# --- servers -------------------------------------------------------------------------


@dataclass
class Server:
    kind: str  # "orthanc", "pipacs" or "storescp"
    workdir: Path
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"

    @property
    def has_http(self) -> bool:
        return self.kind != "storescp"

    def config(self) -> dict[str, object]:
        cfg: dict[str, object] = {
            "Name": f"bench-{self.kind}",
            "StorageDirectory": str(self.storage),
            "IndexDirectory": str(self.workdir / "index"),
            "DicomAet": SERVER_AET,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "StableAge": 60,
            # Orthanc (and pipacs, which follows it) refuse C-FIND from unknown AETs without it
            "DicomAlwaysAllowFind": True,
        }
        if self.kind == "orthanc":
            cfg["Plugins"] = []  # do not load the system plugins
        return cfg

    def command(self) -> list[str]:
        cfg_path = self.workdir / "config.json"
        if self.kind == "storescp":
            # --fork: one child per association, so parallel associations really are
            return [
                dcmtk("storescp"),
                "--fork",
                "-aet",
                SERVER_AET,
                "-od",
                str(self.storage),
                str(self.dicom_port),
            ]
        binary = ORTHANC_BIN if self.kind == "orthanc" else PIPACS_BIN
        return [str(binary), str(cfg_path)]

    def start(self, timeout: float = 60.0) -> float:
        """Start the server; return seconds until the first answered C-ECHO."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        (self.workdir / "index").mkdir(exist_ok=True)
        (self.workdir / "config.json").write_text(json.dumps(self.config(), indent=2))
        log = open(self.workdir / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "TCP_NODELAY": "1"}
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._log = log
        # HTTP is polled in a thread beside the C-ECHO polling: start to first HTTP answer
        self.http_ready_s: float | None = None
        poller = None
        if self.has_http:
            poller = threading.Thread(target=self._poll_http, args=(t0, timeout), daemon=True)
            poller.start()
        while True:
            if echo(self.dicom_port, timeout=2):
                elapsed = time.perf_counter() - t0
                break
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"{self.kind}: no C-ECHO answer after {timeout} s")
            time.sleep(0.005)
        if poller is not None:
            poller.join(timeout)
            if self.http_ready_s is None:
                raise RuntimeError(f"{self.kind}: HTTP /system not answering after {timeout} s")
        return elapsed

    def _poll_http(self, t0: float, timeout: float) -> None:
        url = f"http://{LOOPBACK}:{self.http_port}/system"
        while time.perf_counter() - t0 < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                return
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    resp.read()
                    if resp.status == 200:
                        self.http_ready_s = time.perf_counter() - t0
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.005)

    def wait_http(self, timeout: float) -> None:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            try:
                self.get("/system")
                return
            except (OSError, ValueError):
                time.sleep(0.02)
        raise RuntimeError(f"{self.kind}: HTTP /system not answering after {timeout} s")

    def get(self, route: str, timeout: float = 10.0) -> object:
        url = f"http://{LOOPBACK}:{self.http_port}{route}"
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.load(resp)

    def rss(self) -> float:
        assert self.proc is not None
        return rss_mb(self.proc.pid)

    def count_instances(self) -> tuple[int, str]:
        """Stored instances and how they were counted ("statistics" or "files").

        Tolerant: uses ``GET /statistics`` (CountInstances) when the server answers it,
        else counts the files under the storage folder (skipping obvious index, journal
        and temporary files).
        """
        if self.has_http:
            try:
                stats = self.get("/statistics")
                if isinstance(stats, dict) and "CountInstances" in stats:
                    return int(stats["CountInstances"]), "statistics"
            except (OSError, ValueError):
                pass
        skip_suffixes = (
            ".tmp",
            ".part",
            ".db",
            ".sqlite",
            "-wal",
            "-shm",
            "-journal",
            ".json",
        )
        n = 0
        for _dirpath, _dirs, files in os.walk(self.storage):
            n += sum(1 for f in files if not f.startswith(".") and not f.endswith(skip_suffixes))
        return n, "files"

    def wait_count(self, expected: int, timeout: float = 10.0) -> tuple[int, str]:
        """Count instances, retrying for a while if fewer than expected."""
        t0 = time.perf_counter()
        while True:
            n, how = self.count_instances()
            if n >= expected or time.perf_counter() - t0 > timeout:
                return n, how
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM and wait; returns the seconds it took to exit."""
        if self.proc is None:
            return 0.0
        t0 = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"  ! {self.kind} ignored SIGTERM for {timeout} s, killing it")
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return time.perf_counter() - t0

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = (self.workdir / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


# --- dcmtk clients -------------------------------------------------------------------


def echo(port: int, timeout: int = 5) -> bool:
    # short connect, ACSE, DIMSE and socket timeouts: a hung server must not stall polling
    t = str(timeout)
    cmd = [dcmtk("echoscu"), "-to", t, "-ta", t, "-td", t, "-ts", t, "-aec", SERVER_AET]
    try:
        r = subprocess.run(
            [*cmd, LOOPBACK, str(port)], check=False, env=CLIENT_ENV, capture_output=True,
            timeout=4 * timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return False
    return r.returncode == 0


def storescu_cmd(port: int, files: Sequence[Path]) -> list[str]:
    # Default proposals: 64 storage SOP classes (always including the files' classes),
    # each as one context with explicit VR LE and one with big endian + implicit VR LE.
    # -nh: go on after a refused file, the count check below reports it.
    # Timeouts so that a hung server fails the run instead of stalling it.
    opts = ["-nh", "-to", "10", "-ta", "30", "-td", "60", "-aec", SERVER_AET]
    if any(Path(f).is_dir() for f in files):
        opts += ["+sd", "+r"]  # folders: send every file under them (long lists break argv)
    return [dcmtk("storescu"), *opts, LOOPBACK, str(port), *(str(f) for f in files)]


def start_and_fill(servers: dict[str, Any], kind: str, srv: Any, files: Sequence[Path]) -> None:
    """Start `srv`, register it in `servers` (so the caller's cleanup stops it whatever
    happens), store `files` over one association and say how it went."""
    srv.start()
    servers[kind] = srv
    seconds, errors = send(srv.dicom_port, [files])
    n, _ = srv.wait_count(len(files))
    print(
        f"  {kind}: {n} instances stored in {seconds:.1f} s"
        + (f", errors: {errors}" if errors else "")
    )
    if n != len(files):
        raise RuntimeError(f"{kind} stored {n} of {len(files)} files")


def send(port: int, chunks: Sequence[Sequence[Path]]) -> tuple[float, list[str]]:
    """Send each chunk over its own association, all at once; returns (seconds, errors)."""
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            storescu_cmd(port, chunk),
            env=CLIENT_ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for chunk in chunks
    ]
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=CLIENT_TIMEOUT)[0])
        except subprocess.TimeoutExpired:
            p.kill()
            outputs.append(p.communicate()[0] + b"\nkilled after CLIENT_TIMEOUT")
    elapsed = time.perf_counter() - t0
    errors = []
    for p, out in zip(procs, outputs, strict=True):
        if p.returncode != 0:
            text = out.decode(errors="replace").strip().splitlines()
            errors.append(f"storescu rc={p.returncode}: " + " | ".join(text[-3:]))
    return elapsed, errors


def find_studies(port: int) -> tuple[float, int]:
    """One study-level C-FIND over all studies: (seconds, number of matches)."""
    return findscu(port, FIND_KEYS)


def findscu(port: int, keys: Sequence[str], model: str = "-S") -> tuple[float, int]:
    """One C-FIND with dcmtk's findscu (``-S`` study root, ``-P`` patient root) and these
    ``-k`` keys: (seconds including the client's start, number of matches or -1 on error)."""
    cmd = [dcmtk("findscu"), "-v", model, "-to", "10", "-ta", "30", "-td", "60"]
    cmd += ["-aec", SERVER_AET]
    for key in keys:
        cmd += ["-k", key]
    cmd += [LOOPBACK, str(port)]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(
            cmd, check=False, env=CLIENT_ENV, capture_output=True, timeout=CLIENT_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return time.perf_counter() - t0, -1
    elapsed = time.perf_counter() - t0
    out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
    matches = sum(1 for line in out.splitlines() if "Find Response:" in line and "Pending" in line)
    if r.returncode != 0:
        matches = -1
    return elapsed, matches


# --- one run against one server -----------------------------------------------------


@dataclass
class DataSets:
    small: list[Path]
    large: list[Path]
    small2: list[Path]
    small_studies: int
    large_studies: int
    large2: list[Path] = field(default_factory=list)
    large2_studies: int = 0

    @staticmethod
    def size(paths: Sequence[Path]) -> int:
        return sum(p.stat().st_size for p in paths)


def split_by_patient(paths: Sequence[Path], parts: int) -> list[list[Path]]:
    """Split a small set (patient-ordered) into ``parts`` chunks along patient folders."""
    by_patient: dict[str, list[Path]] = {}
    for p in paths:
        by_patient.setdefault(p.parts[-4], []).append(p)
    groups = list(by_patient.values())
    chunks: list[list[Path]] = [[] for _ in range(min(parts, len(groups)) or 1)]
    for i, g in enumerate(groups):
        chunks[i * len(chunks) // len(groups)].extend(g)
    return chunks


def measure(kind: str, workdir: Path, data: DataSets, find_runs: int) -> dict[str, float]:
    res: dict[str, float] = {}
    srv = Server(kind, workdir)
    print(f"-- {kind}: DICOM port {srv.dicom_port}, HTTP port {srv.http_port}, {workdir}")
    try:
        res["startup_s"] = srv.start()
        time.sleep(1.0)
        res["rss_idle_mb"] = srv.rss()
        startup, idle = res["startup_s"], res["rss_idle_mb"]
        print(f"   start to first C-ECHO {startup:.3f} s, RSS idle {idle:.0f} MB")
        stored = 0

        def ingest(label: str, key: str, chunks: list[list[Path]]) -> None:
            nonlocal stored
            files = [p for c in chunks for p in c]
            if not files:
                return
            secs, errors = send(srv.dicom_port, chunks)
            stored += len(files)
            n, how = srv.wait_count(stored)
            mb = DataSets.size(files) / 1e6
            ok = "ok" if n == stored else f"MISMATCH (expected {stored})"
            res[f"{key}_fps"] = len(files) / secs
            res[f"{key}_mbps"] = mb / secs
            res[f"{key}_complete"] = float(n == stored)
            print(
                f"   {label}: {len(files)} files, {mb:.1f} MB in {secs:.2f} s = "
                f"{len(files) / secs:.0f} files/s, {mb / secs:.1f} MB/s; "
                f"stored {n} by {how}: {ok}"
            )
            for e in errors[:3]:
                print(f"     ! {e}")
            if n == stored - len(files):
                raise RuntimeError(f"{label}: nothing was stored, giving up on {kind}")
            stored = n  # go on from what is really there

        ingest("small, 1 association", "small1", [data.small])
        ingest("large, 1 association", "large1", [data.large])
        if srv.kind != "storescp":
            run_find(srv, data.small_studies + data.large_studies, find_runs, res, "find1")
        ingest("small, 4 associations", "small4", split_by_patient(data.small2, 4))
        ingest("large, 4 associations", "large4", split_by_patient(data.large2, 4))
        time.sleep(1.0)
        res["rss_after_mb"] = srv.rss()
        res["instances_after"] = stored
        print(f"   RSS after ingest ({stored} instances) {res['rss_after_mb']:.0f} MB")
        if srv.kind != "storescp":
            total_studies = 2 * data.small_studies + data.large_studies + data.large2_studies
            run_find(srv, total_studies, find_runs, res, "find2")
    except Exception as exc:  # report it and go on with the other server
        print(f"   ! {kind} failed: {exc}")
        tail = srv.log_tail()
        if tail:
            print(
                "   last lines of its log:\n" + "\n".join("     " + ln for ln in tail.splitlines())
            )
    finally:
        res["stop_s"] = srv.stop()
    return res


def run_find(srv: Server, studies: int, runs: int, res: dict[str, float], key: str) -> None:
    times, counts, echoes = [], [], []
    for _ in range(runs):
        t, n = find_studies(srv.dicom_port)
        times.append(t)
        counts.append(n)
        t0 = time.perf_counter()
        echo(srv.dicom_port)
        echoes.append(time.perf_counter() - t0)
    med = statistics.median(times)
    res[f"{key}_ms"] = med * 1000
    # the same client overhead (process start, dictionary load, association) in a C-ECHO
    res[f"{key}_echo_ms"] = statistics.median(echoes) * 1000
    res[f"{key}_net_ms"] = res[f"{key}_ms"] - res[f"{key}_echo_ms"]
    res[f"{key}_studies"] = studies
    res[f"{key}_matches"] = min(counts)
    res[f"{key}_complete"] = float(all(c == studies for c in counts))
    ok = "ok" if all(c == studies for c in counts) else f"MISMATCH: matches {sorted(set(counts))}"
    print(
        f"   C-FIND study level, {studies} studies: median {med * 1000:.1f} ms "
        f"over {runs} (min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}); {ok}; "
        f"echoscu round trip {res[f'{key}_echo_ms']:.1f} ms"
    )


# --- report --------------------------------------------------------------------------

# (key, label, format, target: a pipacs/Orthanc ratio or an absolute figure for pipacs)
ROWS: list[tuple[str, str, str, str]] = [
    ("startup_s", "start to first C-ECHO (s)", "{:.3f}", "pipacs <= 1 s"),
    ("rss_idle_mb", "RSS idle (MB)", "{:.0f}", ""),
    ("small1_fps", "ingest small, 1 assoc (files/s)", "{:.0f}", ">= 1.0x"),
    ("small1_mbps", "ingest small, 1 assoc (MB/s)", "{:.1f}", ""),
    ("large1_fps", "ingest large, 1 assoc (files/s)", "{:.0f}", ">= 1.0x"),
    ("large1_mbps", "ingest large, 1 assoc (MB/s)", "{:.1f}", ""),
    ("small4_fps", "ingest small, 4 assoc (files/s)", "{:.0f}", ">= 1.0x"),
    ("small4_mbps", "ingest small, 4 assoc (MB/s)", "{:.1f}", ""),
    ("large4_fps", "ingest large, 4 assoc (files/s)", "{:.0f}", ">= 1.0x"),
    ("large4_mbps", "ingest large, 4 assoc (MB/s)", "{:.1f}", ""),
    ("rss_after_mb", "RSS after ingest, {instances} instances (MB)", "{:.0f}", "<= 0.5x"),
    ("find1_ms", "C-FIND study, {find1_studies} studies (ms)", "{:.1f}", "<= 1.5x"),
    ("find1_net_ms", "  same minus echoscu round trip (ms)", "{:.1f}", ""),
    ("find2_ms", "C-FIND study, {find2_studies} studies (ms)", "{:.1f}", "<= 1.5x"),
    ("find2_net_ms", "  same minus echoscu round trip (ms)", "{:.1f}", ""),
    ("find1_echo_ms", "echoscu round trip (ms)", "{:.1f}", ""),
    ("stop_s", "exit after SIGTERM (s)", "{:.2f}", ""),
]


def check_target(target: str, value: float | None, ratio: float | None) -> str:
    if not target:
        return ""
    if target.startswith("pipacs <="):
        if value is None:
            return "-"
        return "PASS" if value <= float(target.split("<=")[1].split()[0]) else "FAIL"
    if ratio is None:
        return "-"
    limit = float(target.split()[1].rstrip("x"))
    passed = ratio >= limit if target.startswith(">=") else ratio <= limit
    return "PASS" if passed else "FAIL"


def median_of(results: list[dict[str, float]], key: str) -> float | None:
    values = [r[key] for r in results if key in r]
    return statistics.median(values) if values else None


def report(
    all_results: dict[str, list[dict[str, float]]], runs: int, studies: dict[str, int]
) -> None:
    """Print the table of medians; ``studies`` fills the {find1_studies}-style labels."""
    kinds = list(all_results)
    med = {
        k: {key: median_of(all_results[k], key) for key in _all_keys(all_results)} for k in kinds
    }
    base = "orthanc" if "orthanc" in kinds else None
    cand = "pipacs" if "pipacs" in kinds else None
    headers = ["measure", *kinds]
    if base and cand:
        headers += ["pipacs/Orthanc", "target", "result"]
    rows = []
    for key, label, fmt, target in ROWS:
        cells = [label.format(**studies)]
        for k in kinds:
            v = med[k].get(key)
            cells.append(fmt.format(v) if v is not None else "-")
        if base and cand:
            b, c = med[base].get(key), med[cand].get(key)
            ratio = c / b if b and c is not None else None
            cells.append(f"{ratio:.2f}x" if ratio is not None else "-")
            cells.append(target)
            cells.append(check_target(target, c, ratio))
        rows.append(cells)
    title = f"Medians over {runs} run(s)" if runs > 1 else "One run"
    print(f"\n## {title}\n")
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    for k in kinds:
        incomplete = [
            key
            for key in ("small1", "large1", "small4", "large4", "find1", "find2")
            if any(r.get(f"{key}_complete") == 0.0 for r in all_results[k])
        ]
        if incomplete:
            print(
                f"\n! {k}: incomplete (files not stored or studies not found): "
                f"{', '.join(incomplete)}"
            )


def _all_keys(all_results: dict[str, list[dict[str, float]]]) -> set[str]:
    return {key for results in all_results.values() for r in results for key in r}


# --- main ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Ingest benchmark: Orthanc vs pipacs on loopback.")

    def number(flag: str, default: int, metavar: str, text: str | None = None) -> None:
        ap.add_argument(flag, type=int, default=default, metavar=metavar, help=text)

    ap.add_argument("--only", choices=["orthanc", "pipacs", "storescp"], help="one server only")
    ap.add_argument("--with-storescp", action="store_true", help="add dcmtk storescp (floor)")
    number(
        "--small", 2000, "N", "small files per small set, rounded to 40 per patient (default 2000)"
    )
    number("--large", 500, "N", "large files (default 500)")
    number("--large-studies", 10, "N")
    number(
        "--large4",
        500,
        "N",
        "large files of a second set sent over 4 associations (default 500, 0: skip)",
    )
    number("--runs", 1, "K", "medians over K runs")
    number("--find-runs", 5, "K", "C-FIND calls per measure (median)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs")
    ap.add_argument("--tmp", type=Path, default=None, help="where to make the temp dir")
    number(
        "--ext4-image",
        0,
        "GB",
        "run on a fresh ext4 of this size made with mke2fs' defaults (journal on, as "
        "on a Pi's SD card), loop-mounted; needs root",
    )
    args = ap.parse_args(argv)
    if not args.ext4_image:
        return _run(args)
    with benchlib.ext4_image(args.ext4_image, args.tmp) as mountpoint:
        print(f"on a fresh journaled ext4 ({args.ext4_image} GB image) mounted at {mountpoint}")
        args.tmp = mountpoint
        return _run(args)


def _run(args: argparse.Namespace) -> int:

    if args.only:
        kinds = [args.only]
    else:
        kinds = ["orthanc", "pipacs"] + (["storescp"] if args.with_storescp else [])
    for tool in ("echoscu", "storescu", "findscu") + (("storescp",) if "storescp" in kinds else ()):
        if not Path(dcmtk(tool)).exists():
            print(f"dcmtk's {tool} not found in {DCMTK_BIN}")
            return 2
    if "orthanc" in kinds and not ORTHANC_BIN.exists():
        print(f"{ORTHANC_BIN} not found (apt install orthanc)")
        return 2
    if "pipacs" in kinds and not PIPACS_BIN.exists():
        if args.only == "pipacs":
            print(f"{PIPACS_BIN} not found (pip install -e server)")
            return 2
        print(f"note: {PIPACS_BIN} not found, measuring without pipacs")
        kinds.remove("pipacs")

    root = Path(tempfile.mkdtemp(prefix="pipacs-bench-", dir=args.tmp))
    try:
        patients = max(1, round(args.small / 40)) if args.small > 0 else 0
        t0 = time.perf_counter()
        data = DataSets(
            small=datagen.make_small(root / "data" / "small", patients=patients, seed=1),
            large=datagen.make_large(
                root / "data" / "large",
                count=args.large,
                seed=2,
                studies=args.large_studies,
            ),
            small2=datagen.make_small(root / "data" / "small2", patients=patients, seed=3),
            small_studies=patients * 2,
            large_studies=min(args.large_studies, args.large) if args.large else 0,
            large2=datagen.make_large(
                root / "data" / "large2", count=args.large4, seed=4, studies=args.large_studies
            )
            if args.large4
            else [],
            large2_studies=min(args.large_studies, args.large4) if args.large4 else 0,
        )
        print(
            f"data: small {len(data.small)} files ({DataSets.size(data.small) / 1e6:.1f} MB) x2, "
            f"large {len(data.large)} files ({DataSets.size(data.large) / 1e6:.1f} MB), "
            f"generated in {time.perf_counter() - t0:.1f} s under {root}"
        )
        print(f"host: {os.cpu_count()} CPUs, {_orthanc_version()}, {_dcmtk_version()}")
        print(f"load average before: {_loadavg()} (other work on the machine skews figures)")

        all_results: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
        for run in range(args.runs):
            order = kinds if run % 2 == 0 else list(reversed(kinds))
            print(f"\n# run {run + 1}/{args.runs}")
            for kind in order:
                workdir = root / f"run{run + 1}-{kind}"
                all_results[kind].append(measure(kind, workdir, data, args.find_runs))
                # Stored files stay until the end: on a journal-less ext4, files deleted in
                # the last 5-30 s make creating new ones slower (see bench/README.md), which
                # would tax whichever server runs next.
        studies = {
            "find1_studies": data.small_studies + data.large_studies,
            "find2_studies": 2 * data.small_studies + data.large_studies + data.large2_studies,
            "instances": 2 * len(data.small) + len(data.large) + len(data.large2),
        }
        report(all_results, args.runs, studies)
        print(f"\nload average after: {_loadavg()}")
    finally:
        benchlib.remove_or_keep(root, args.keep)
    return 0


_loadavg = benchlib.loadavg  # rest.py calls it by this name


def _orthanc_version() -> str:
    try:
        out = subprocess.run(
            [str(ORTHANC_BIN), "--version"],
            check=False,
            capture_output=True,
            timeout=10,
        )
        return out.stdout.decode(errors="replace").splitlines()[0].strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "Orthanc version unknown"


def _dcmtk_version() -> str:
    try:
        out = subprocess.run(
            [dcmtk("storescu"), "--version"],
            check=False,
            capture_output=True,
            timeout=10,
        )
        return out.stdout.decode(errors="replace").splitlines()[0].strip().strip("$").strip()
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "dcmtk version unknown"


if __name__ == "__main__":
    sys.exit(main())
