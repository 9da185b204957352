"""Where pipacs' ingest time goes: py-spy samples the running server while storescu sends.

pipacs is started on loopback (``bench/ingest.py``'s server and configuration), py-spy
(``py-spy record --idle --threads --format raw``) attaches to it, one dcmtk ``storescu``
sends ``--files`` small files (``datagen.make_small``, 2000 by default) over one association
(``--associations`` more in parallel, split by patient; ``--large`` sends 512x512 CT files of
about 0.5 MB instead, ``datagen.make_large``), and py-spy is stopped as soon as
storescu is done. Sampling slows the server: the ingest rate printed is under py-spy.

Each sample is one thread's stack at one instant, idle threads included, so the samples of
one thread add up to its wall time. Threads are named by what they run (the association's
DIMSE loop, its DUL reader/writer, the index settler, the stability loop, HTTP). Every
sample is put in one layer by its innermost frame that says something:

* ``fsync`` (a storage or index line calling ``os.fsync``/``fdatasync``/make_durable),
* ``CRC`` (``zlib.crc32``), ``file write/rename`` (other storage.py lines),
* ``SQLite`` (a line of the index package: the call into sqlite3),
* ``tag parsing`` (dicomfile.py, tagscan.py, part10.py), ``our fast paths`` (dicom/fastrsp.py,
  reactor.py, rawsend.py), ``C-STORE handler`` (dicom/store.py, context.py),
* ``pynetdicom PDU/DIMSE`` (pynetdicom's own code, not waiting), ``pydicom``,
* ``waiting`` (select, queue get, sleep, lock or event wait, socket recv),
* ``other``.

Printed: the threads with their share of samples, the layers for the association and DUL
threads (wall time, then the same without waiting), and the top functions by own samples.

``--mode gil`` samples only the thread holding the GIL (``py-spy --gil``): where the Python
time goes, which with several associations is what limits throughput (only one thread runs
Python at a time). ``--mode cpu`` samples nothing and prints the server's user and system
CPU per file and how busy the machine was.

Usage: ``.venv/bin/python bench/profile_ingest.py [--files 2000] [--associations 1]
[--large] [--rate 200] [--mode wall|gil|cpu] [--tmp DIR] [--keep]``; needs py-spy
(requirements.txt) and root or ptrace rights.
"""

from __future__ import annotations

import argparse
import collections
import functools
import linecache
import os
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
import datagen
import ingest

REPO = Path(__file__).resolve().parent.parent
PY_SPY = Path(os.environ.get("PY_SPY", Path(sys.executable).with_name("py-spy")))
WAIT_WORDS = ("select(", ".select(", "poll(", ".wait(", ".get(", "sleep(", ".recv(",
              ".acquire(", "recv_into(", ".accept(", "_wait_for_tstate_lock", "readinto(")
WAIT_FUNCS = {"wait", "select", "poll", "sleep", "_wait_for_tstate_lock", "get", "readinto",
              "accept", "recv", "recv_into", "_wait", "idle_sleep"}


def frame_parts(frame: str) -> tuple[str, str, int]:
    """``func (path:line)`` -> (func, path, line)."""
    func, _, rest = frame.partition(" (")
    path, _, line = rest.rstrip(")").rpartition(":")
    try:
        return func, path, int(line)
    except ValueError:
        return func, path, 0


@functools.cache
def resolve(path: str) -> str:
    """py-spy prints paths short (``pipacs/storage.py``): find the file on sys.path."""
    if os.path.isabs(path) or path.startswith("<"):
        return path
    for base in [str(REPO / "server" / "src"), *sys.path, sysconfig.get_paths()["stdlib"]]:
        candidate = os.path.join(base, path)
        if os.path.exists(candidate):
            return candidate
    return path


def source(path: str, line: int) -> str:
    return linecache.getline(resolve(path), line).strip() if line else ""


def layer(stack: list[str]) -> str:
    """The layer of a sample, from its innermost informative frame (stack root first)."""
    func, path, line = frame_parts(stack[-1])
    text = source(path, line)
    if func in WAIT_FUNCS or any(w in text for w in WAIT_WORDS):
        # a wait in our own reactor counts as waiting too
        return "waiting"
    for frame in reversed(stack):
        func, path, line = frame_parts(frame)
        text = source(path, line)
        path = "/" + path
        if "/pipacs/" in path:
            name = path.rsplit("/pipacs/", 1)[1]
            if "fsync" in text or "fdatasync" in text or "make_durable" in text:
                return "fsync"
            if "crc32" in text:
                return "CRC"
            if name == "storage.py":
                return "file write/rename"
            if name.startswith("index/"):
                return "SQLite"
            if name in ("dicomfile.py", "tagscan.py", "part10.py", "ids.py"):
                return "tag parsing"
            if name in ("dicom/fastrsp.py", "dicom/reactor.py", "dicom/rawsend.py"):
                return "our fast paths"
            if name in ("dicom/store.py", "context.py"):
                return "C-STORE handler"
            return f"pipacs {name}"
        if "/pynetdicom/" in path:
            return "pynetdicom PDU/DIMSE"
        if "/pydicom/" in path:
            return "pydicom"
    return "other"


def thread_role(stacks: list[list[str]]) -> str:
    text = " ".join(f for s in stacks[:50] for f in s)
    for needle, role in (("association.py", "association (DIMSE)"), ("dul.py", "DUL (PDUs)"),
                         ("_settle", "settler (index durability)"), ("stabil", "stability"),
                         ("waitress", "HTTP (waitress)"), ("server.py", "DICOM accept loop"),
                         ("serve_forever", "DICOM accept loop")):
        if needle in text:
            return role
    return "other"


def parse_raw(path: Path) -> dict[str, list[tuple[list[str], int]]]:
    """py-spy's raw output (``thread (0x..);frame;...;frame count``) by thread."""
    threads: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in path.read_text(errors="replace").splitlines():
        stack_text, _, count = line.rpartition(" ")
        if not stack_text or not count.isdigit():
            continue
        frames = stack_text.split(";")
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "?"
        frames = [f for f in frames if not f.startswith(("thread (", "process "))]
        if frames:
            threads[thread].append((frames, int(count)))
    return threads


def report(threads: dict[str, list[tuple[list[str], int]]]) -> None:
    total = sum(c for samples in threads.values() for _, c in samples)
    roles: dict[str, str] = {t: thread_role([s for s, _ in samples])
                             for t, samples in threads.items()}
    by_role: collections.Counter[str] = collections.Counter()
    busy_role: collections.Counter[str] = collections.Counter()
    for t, samples in threads.items():
        by_role[roles[t]] += sum(c for _, c in samples)
        busy_role[roles[t]] += sum(c for s, c in samples if layer(s) != "waiting")
    busy_all = sum(busy_role.values()) or 1
    rows = [[role, f"{n}", f"{busy_role[role]}", f"{100 * busy_role[role] / busy_all:.1f} %"]
            for role, n in by_role.most_common()]
    benchlib.print_table(["thread", "samples", "busy samples", "share of busy"], rows,
                         f"Threads ({total} samples, idle included)")

    for wanted in ("association (DIMSE)", "DUL (PDUs)", "settler (index durability)"):
        layers: collections.Counter[str] = collections.Counter()
        for t, samples in threads.items():
            if roles[t] == wanted:
                for stack, c in samples:
                    layers[layer(stack)] += c
        n = sum(layers.values())
        if not n:
            continue
        busy = n - layers["waiting"]
        rows = [[name, f"{c}", f"{100 * c / n:.1f} %",
                 f"{100 * c / busy:.1f} %" if name != "waiting" and busy else ""]
                for name, c in layers.most_common()]
        benchlib.print_table(["layer", "samples", "of wall time", "of busy time"], rows,
                             f"Layers of the {wanted} thread(s)")

    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    busy_total = 0
    for samples in threads.values():
        for stack, c in samples:
            if layer(stack) == "waiting":
                continue
            busy_total += c
            func, path, line = frame_parts(stack[-1])
            own[f"{func} ({_short(path)}:{line})"] += c
            for f in set(stack):
                func, path, _line = frame_parts(f)
                inclusive[f"{func} ({_short(path)})"] += c
    rows = [[name, f"{c}", f"{100 * c / busy_total:.1f} %"] for name, c in own.most_common(20)]
    benchlib.print_table(["innermost frame (line)", "samples", "of busy samples"], rows,
                         "Top lines by own samples, every thread, waiting left out")
    rows = [[name, f"{c}", f"{100 * c / busy_total:.1f} %"]
            for name, c in inclusive.most_common(60)
            if "/pipacs/" in name or "pipacs/" in name][:20]
    benchlib.print_table(["pipacs function", "samples", "of busy samples"], rows,
                         "pipacs functions, inclusive (their callees counted)")


def report_gil(threads: dict[str, list[tuple[list[str], int]]]) -> None:
    """Samples taken with py-spy --gil: only the thread holding the GIL, so they add up to
    the Python (and GIL-holding C) time that the server's threads cannot run in parallel."""
    samples = [(stack, c) for found in threads.values() for stack, c in found]
    total = sum(c for _, c in samples) or 1
    layers: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for stack, c in samples:
        layers[layer(stack)] += c
        for f in {frame_parts(f)[:2] for f in stack}:
            inclusive[f"{f[0]} ({_short(f[1])})"] += c
    rows = [[name, f"{c}", f"{100 * c / total:.1f} %"] for name, c in layers.most_common()]
    benchlib.print_table(["layer (innermost informative frame)", "samples", "of GIL time"],
                         rows, f"Who holds the GIL ({total} samples)")
    skip = ("threading.py", "Thread.run", "_bootstrap")
    rows = [[name, f"{c}", f"{100 * c / total:.1f} %"] for name, c in inclusive.most_common(80)
            if not any(k in name for k in skip)][:30]
    benchlib.print_table(["function, callees included", "samples", "of GIL time"], rows,
                         "Functions holding the GIL")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, every thread included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def machine_seconds() -> tuple[float, float]:
    """(all, idle + iowait) CPU seconds of the machine since boot, every CPU summed."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return sum(fields) / tick, (fields[3] + fields[4]) / tick


def measure_cpu(srv: ingest.Server, files: list[Path], chunks: list[list[Path]]) -> int:
    """Send without sampling; print the server's CPU per file and how busy the machine was.
    With the GIL, a server near one CPU-second per second is CPU-bound whatever the cores."""
    assert srv.proc is not None
    u0, s0 = cpu_seconds(srv.proc.pid)
    m0 = machine_seconds()
    seconds, errors = ingest.send(srv.dicom_port, chunks)
    u1, s1 = cpu_seconds(srv.proc.pid)
    m1 = machine_seconds()
    n, _ = srv.wait_count(len(files))
    user, system = (u1 - u0) * 1000 / len(files), (s1 - s0) * 1000 / len(files)
    cores = os.cpu_count() or 1
    busy = 100 * (1 - (m1[1] - m0[1]) / (m1[0] - m0[0])) * cores
    print(f"stored {n} of {len(files)} in {seconds:.2f} s = {len(files) / seconds:.0f} files/s"
          + (f"; errors {errors}" if errors else ""))
    print(f"server CPU per file: user {user:.2f} ms + system {system:.2f} ms = "
          f"{user + system:.2f} ms; {100 * (u1 - u0 + s1 - s0) / seconds:.0f} % of one CPU")
    print(f"machine: {busy:.0f} % of one CPU busy ({cores} CPUs, storescu included); "
          f"load average {benchlib.loadavg()}")
    return 0 if n == len(files) else 1


def _short(path: str) -> str:
    for marker in ("/site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            return path.rsplit(marker, 1)[1]
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000, help="small files to send (default 2000)")
    ap.add_argument("--large", action="store_true",
                    help="send --files large files (512x512 CT, about 0.5 MB) instead")
    ap.add_argument("--associations", type=int, default=1, help="parallel storescu (default 1)")
    ap.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    ap.add_argument("--mode", choices=["wall", "gil", "cpu"], default="wall",
                    help="wall: every thread's wall time (default); gil: only the thread "
                    "holding the GIL (where the Python time goes); cpu: no sampling, the "
                    "server's CPU per file")
    ap.add_argument("--raw", type=Path, help="analyse this py-spy raw file instead of running")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--tmp", type=Path, default=None, help="where to make the temp folder")
    args = ap.parse_args(argv)
    if args.raw:
        report(parse_raw(args.raw))
        return 0
    if not PY_SPY.exists() and args.mode != "cpu":
        print(f"{PY_SPY} not found: pip install -r requirements.txt")
        return 2
    root = Path(tempfile.mkdtemp(prefix="bench-profile-", dir=args.tmp))
    srv = ingest.Server("pipacs", root / "pipacs")
    try:
        if args.large:
            files = datagen.make_large(root / "data", count=args.files, studies=10, seed=2)
        else:
            files = datagen.make_small(root / "data", patients=max(1, args.files // 40), seed=1)
        chunks = ingest.split_by_patient(files, args.associations)
        if len(chunks) < args.associations:  # the large set is one patient: deal files out
            chunks = [files[i::args.associations] for i in range(args.associations)]
        srv.start()
        assert srv.proc is not None
        if args.mode == "cpu":
            return measure_cpu(srv, files, chunks)
        raw = root / "pyspy.txt"
        how = ["--gil"] if args.mode == "gil" else ["--idle", "--nonblocking"]
        spy = subprocess.Popen(
            [str(PY_SPY), "record", "--pid", str(srv.proc.pid), "--rate", str(args.rate),
             *how, "--threads", "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.5)  # attached and sampling
        print(f"{len(files)} files over {len(chunks)} association(s), py-spy at {args.rate} Hz; "
              f"load average {benchlib.loadavg()}")
        seconds, errors = ingest.send(srv.dicom_port, chunks)
        spy.send_signal(signal.SIGINT)
        _, err = spy.communicate(timeout=120)
        n, _ = srv.wait_count(len(files))
        print(f"stored {n} in {seconds:.2f} s = {len(files) / seconds:.0f} files/s under py-spy"
              + (f"; errors {errors}" if errors else ""))
        if not raw.exists():
            print("py-spy wrote nothing:\n" + err.decode(errors="replace")[-2000:])
            return 1
        if args.mode == "gil":
            report_gil(parse_raw(raw))
        else:
            report(parse_raw(raw))
        print(f"\nload average after: {benchlib.loadavg()}")
    finally:
        benchlib.stop_and_clean([srv], root, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
