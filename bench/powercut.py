#!/usr/bin/env python3
"""Power cuts during C-STOREs and index checkpoints, for pipacs and Debian's Orthanc.

Each trial runs the server with its storage and index on powerfs (a FUSE file system that
forgets every write not yet fsynced when told to cut the power: see powerfs.py), sends files
from datagen.py over 4 parallel dcmtk storescu associations, and cuts the power at one of
three kinds of moment, drawn at random: at the N-th write to the index's main database file
(a checkpoint: pipacs and Orthanc both commit to a WAL), at the N-th write to its WAL (mid
commit), or after a random delay (anywhere, files included). The server is killed with the
power, the unsynced state dropped, and the server started again on what survived. Then:

* lost: instances whose C-STORE was acknowledged (storescu printed their success response)
  but that the restarted server cannot find (/tools/lookup) or serve whole (/file must parse
  and carry the same SOP Instance UID);
* repairs: trials after which the server did not start by itself, or its index and its
  storage folder disagree (an indexed file missing, or a file in place that no index row
  names: what only a --reindex or a hand would fix).

    python bench/powercut.py --trials 100 --minutes 20 [--servers pipacs,orthanc] [--strict]

Needs root, /dev/fuse and pyfuse3 (make setup), dcmtk and /usr/sbin/Orthanc.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parent))
import datagen
import powerfs
from benchlib import dcmtk

ORTHANC = Path(os.environ.get("ORTHANC_BIN", "/usr/sbin/Orthanc"))
AET = "POWERPACS"
ASSOCIATIONS = 4
# the index's main database file: only checkpoints write to it in pipacs (WAL mode)
INDEX_FILE = {"pipacs": "*/index/pipacs-index.db", "orthanc": "*/index/index"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Totals:
    trials: int = 0
    acknowledged: int = 0
    lost: int = 0
    repairs: int = 0
    at_index_write: int = 0  # trials cut at the write to the index they were armed for
    full_send: float = 0.0  # seconds all 4 associations take to send everything
    modes: dict[str, int] = field(
        default_factory=lambda: {"checkpoint": 0, "commit": 0, "timer": 0})
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def mounted(where: Path, strict: bool = False) -> Iterator[tuple[Path, str]]:
    """A powerfs mounted at where/mnt for the block: (mount point, control socket)."""
    mnt, ctl = where / "mnt", str(where / "powerfs.sock")
    mnt.mkdir(parents=True, exist_ok=True)
    log = (where / "powerfs.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(Path(powerfs.__file__)), str(mnt), "--control", ctl,
         *(["--strict"] if strict else [])], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (os.path.ismount(mnt) and os.path.exists(ctl)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("powerfs did not mount: "
                                   + (where / "powerfs.log").read_text(errors="replace"))
            time.sleep(0.05)
        yield mnt, ctl
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Server:
    """pipacs or Orthanc with its storage and index under `data` (on powerfs), its
    configuration and log under `work` (not on powerfs)."""

    def __init__(self, kind: str, data: Path, work: Path, **overrides: object):
        self.kind, self.data, self.work = kind, data, work
        self.dicom_port, self.http_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        # a name of its own: a server another program started on a port freed by the cut
        # must not be taken for this one
        self.name = f"powercut-{kind}-{os.getpid()}-{random.randrange(1 << 30)}"
        config = {
            "Name": self.name, "StorageDirectory": str(data / "storage"),
            "IndexDirectory": str(data / "index"), "DicomAet": AET,
            "DicomPort": self.dicom_port, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False, "StableAge": 60,
        }
        if kind == "orthanc":
            config["Plugins"] = []
        config.update(overrides)
        self.config = work / f"{kind}.json"
        self.config.write_text(json.dumps(config))
        self.log = work / f"{kind}.log"

    def start(self, timeout: float = 60) -> bool:
        """Start and wait for HTTP; False (and the log kept) when it exits or hangs. Ports
        another program took meanwhile are replaced by free ones."""
        for _attempt in range(3):
            begin = self.log.stat().st_size if self.log.exists() else 0
            if self._start(timeout):
                return True
            with self.log.open("rb") as f:
                f.seek(begin)
                said = f.read().decode(errors="replace")
            if "in use" not in said:
                return False
            self.dicom_port, self.http_port = free_port(), free_port()
            config = json.loads(self.config.read_text())
            config.update(DicomPort=self.dicom_port, HttpPort=self.http_port)
            self.config.write_text(json.dumps(config))
        return False

    def _start(self, timeout: float) -> bool:
        cmd = ([str(ORTHANC)] if self.kind == "orthanc"
               else [sys.executable, "-m", "pipacs"]) + [str(self.config)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.work, env={**os.environ, "TCP_NODELAY": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                name = json.loads(self.get("/system")).get("Name")
            except (OSError, ValueError):
                time.sleep(0.05)
                continue
            if name == self.name:
                return True
            with self.log.open("a") as log:  # someone else's server: take other ports
                log.write(f"\npowercut: port {self.http_port} in use by {name!r}\n")
            break
        self.kill()
        self.wait()
        return False

    def get(self, route: str, body: bytes | None = None) -> bytes:
        url = f"http://127.0.0.1:{self.http_port}{route}"
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as r:
            return bytes(r.read())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()

    def wait(self) -> None:
        if self.proc is not None:
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.wait()

    def readable(self, sop_uid: str) -> bool:
        """The instance is found by its UID and its file parses as that instance."""
        return not self.unreadable(sop_uid)

    def unreadable(self, sop_uid: str) -> str:
        """Why the instance cannot be read back whole ("" when it can)."""
        try:
            found = json.loads(self.get("/tools/lookup", sop_uid.encode()))
            ids = [f["ID"] for f in found if f.get("Type") == "Instance"]
            if not ids:
                return f"{sop_uid}: not found"
            raw = self.get(f"/instances/{ids[0]}/file")
            ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(raw))
            ds.PixelData  # noqa: B018 - read to the end
        except (OSError, ValueError, pydicom.errors.InvalidDicomError, AttributeError) as e:
            return f"{sop_uid}: {e}"
        if str(ds.SOPInstanceUID) != sop_uid:
            return f"{sop_uid}: the file is {ds.SOPInstanceUID}'s"
        return ""

    def disagreements(self) -> list[str]:
        """Index and storage folder compared (server stopped): what does not match."""
        index = self.data / "index" / ("index" if self.kind == "orthanc" else
                                       "pipacs-index.db")
        table = "AttachedFiles" if self.kind == "orthanc" else "attachments"
        try:
            conn = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
            try:
                indexed = {r[0] for r in conn.execute(f"SELECT uuid FROM {table}")}
            finally:
                conn.close()
        except sqlite3.Error as e:
            return [f"index unreadable: {e}"]
        storage = self.data / "storage"
        placed = {p.name for p in storage.glob("??/??/*") if p.is_file()}
        staged = {p.name.partition(".")[0] for p in storage.glob(".incoming/*")}
        out = [f"indexed, no file: {u}" for u in sorted(indexed - placed - staged)]
        out += [f"file, not indexed: {u}" for u in sorted(placed - indexed)]
        out += [f"staged, not indexed: {u}" for u in sorted(staged - indexed)]
        return out


ACK = re.compile(r"Received Store Response \((Success|Warning)")


def acknowledged(output: str, sop_of: dict[str, str]) -> list[str]:
    """The SOP Instance UIDs whose C-STORE storescu -v saw acknowledged, from its log
    ("Sending file: F" ... "Received Store Response (Success)")."""
    acked, current = [], None
    for line in output.splitlines():
        if "Sending file: " in line:
            current = line.split("Sending file: ", 1)[1].strip()
        elif current and ACK.search(line):
            acked.append(sop_of[current])
            current = None
    return acked


def trial(kind: str, n: int, mnt: Path, ctl: str, work: Path, chunks: Sequence[Sequence[Path]],
          sop_of: dict[str, str], rng: random.Random, totals: Totals) -> None:
    data = mnt / f"{kind}{n}"
    data.mkdir()
    _fsync_dir(mnt)  # the trial's own folder is durable: what follows is the server's
    srv = Server(kind, data, work)
    try:
        _trial(srv, n, ctl, work, chunks, sop_of, rng, totals)
    finally:
        srv.kill()  # on an error or an interrupt: no server left on the mount
        srv.wait()
    shutil.rmtree(data, ignore_errors=True)


def _trial(srv: Server, n: int, ctl: str, work: Path, chunks: Sequence[Sequence[Path]],
           sop_of: dict[str, str], rng: random.Random, totals: Totals) -> None:
    kind = srv.kind
    if not srv.start():
        raise RuntimeError(f"{kind} did not start on a fresh folder:\n{srv.log.read_text()}")
    echo = subprocess.run([dcmtk("echoscu"), "-to", "10", "-aec", AET, "127.0.0.1",
                           str(srv.dicom_port)], capture_output=True, text=True, timeout=60)
    if echo.returncode:
        raise RuntimeError(f"{kind} trial {n}: C-ECHO to port {srv.dicom_port} failed: "
                           f"{echo.stdout}{echo.stderr}\n{kind} said: "
                           f"{srv.log.read_text(errors='replace')[-1500:]}")
    # where the cut comes: at a random write to the index's main file (checkpoints), to its
    # WAL or journal (commits), or after a random time (anywhere, files included)
    mode = rng.choice(("checkpoint", "commit", "timer")) if totals.full_send else "calibrate"
    before = powerfs.control(ctl, "status")["triggered"]
    if mode == "checkpoint":
        powerfs.control(ctl, f"arm {INDEX_FILE[kind]} {rng.randint(1, 40)}")
    elif mode == "commit":
        powerfs.control(ctl, f"arm {INDEX_FILE[kind]}-wal {rng.randint(1, 400)}")
    outs = [work / f"storescu{i}.log" for i in range(len(chunks))]
    clients = []
    for chunk, out in zip(chunks, outs, strict=True):
        with out.open("wb") as f:
            clients.append(subprocess.Popen(
                [dcmtk("storescu"), "-v", "-nh", "-to", "10", "-ta", "10", "-td", "10", "-aec", AET,
                 "127.0.0.1", str(srv.dicom_port), *map(str, chunk)],
                stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": "1"}))
    t0 = time.monotonic()
    wait = totals.full_send * (rng.uniform(0, 1.2) if mode == "timer" else 1.5)
    while mode == "calibrate" or time.monotonic() - t0 < wait:
        status = powerfs.control(ctl, "status")
        if status["frozen"] or all(c.poll() is not None for c in clients):
            break
        time.sleep(0.01)
    if mode == "calibrate":  # the first trial sends everything, then cuts: how long it takes
        totals.full_send = time.monotonic() - t0
    # the cut: time stops, the server dies with it, what was not durable goes
    triggered = powerfs.control(ctl, "freeze")["triggered"]
    srv.kill()
    powerfs.control(ctl, "cut")
    srv.wait()
    for c in clients:
        try:
            c.wait(30)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
    acked = [u for out in outs for u in acknowledged(out.read_text(errors="replace"), sop_of)]
    if mode == "calibrate" and not acked:  # the whole send, and nothing taken: say why
        said = "\n".join(out.read_text(errors="replace")[:1500] for out in outs[:1])
        raise RuntimeError(f"{kind} trial {n}: no C-STORE acknowledged in "
                           f"{totals.full_send:.2f} s; storescu said:\n{said}\n{kind} said: "
                           f"{srv.log.read_text(errors='replace')[-1500:]}")
    totals.modes[mode if mode != "calibrate" else "timer"] += 1
    totals.at_index_write += triggered > before
    totals.trials += 1
    totals.acknowledged += len(acked)
    if not srv.start():
        totals.repairs += 1
        totals.lost += len(acked)
        totals.notes.append(f"{kind} trial {n}: did not restart: "
                            + srv.log.read_text(errors="replace")[-400:])
        return
    lost = [why for why in map(srv.unreadable, acked) if why]
    srv.stop()
    wrong = srv.disagreements()
    totals.lost += len(lost)
    if wrong:
        totals.repairs += 1
    if lost or wrong:
        totals.notes.append(f"{kind} trial {n}: {len(lost)} of {len(acked)} acknowledged lost "
                            f"{lost[:2]}; {len(wrong)} disagreement(s) {wrong[:3]}")


def run(kinds: Sequence[str], trials: int, seconds: float, *, strict: bool = False,
        files_per_association: int = 40, seed: int = 1,
        quiet: bool = False) -> dict[str, Totals]:
    """`trials` cuts per server (fewer when `seconds` run out); the totals per server."""
    results = {k: Totals() for k in kinds}
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="powercut-") as tmp:
        work = Path(tmp)
        files = datagen.make_small(work / "data", patients=1 + ASSOCIATIONS *
                                   files_per_association // 40, seed=seed)
        files = files[: ASSOCIATIONS * files_per_association]
        sop_of = {str(p): str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                  for p in files}
        chunks = [files[i::ASSOCIATIONS] for i in range(ASSOCIATIONS)]
        t0 = time.monotonic()
        with mounted(work / "fs", strict) as (mnt, ctl):
            for n in range(trials):
                for kind in kinds:
                    if time.monotonic() - t0 > seconds:
                        break
                    with_time = time.monotonic()
                    trial(kind, n, mnt, ctl, work, chunks, sop_of, rng, results[kind])
                    results[kind].seconds += time.monotonic() - with_time
                    if not quiet:
                        t = results[kind]
                        print(f"{kind} trial {n}: {t.acknowledged} acknowledged so far, "
                              f"{t.lost} lost, {t.repairs} repairs", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=100, help="cuts per server (default 100)")
    ap.add_argument("--minutes", type=float, default=30, help="stop starting trials after")
    ap.add_argument("--servers", default="pipacs,orthanc")
    ap.add_argument("--strict", action="store_true",
                    help="powerfs without ext4's journal ordering (POSIX's minimum)")
    ap.add_argument("--files", type=int, default=40, help="files per association")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    # SIGTERM unwinds like ^C: servers killed, powerfs unmounted, temporary folder removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not os.path.exists("/dev/fuse") or os.geteuid() != 0:
        print("powercut needs root and /dev/fuse", file=sys.stderr)
        return 2
    kinds = [k for k in args.servers.split(",") if k]
    results = run(kinds, args.trials, args.minutes * 60, strict=args.strict,
                  files_per_association=args.files, seed=args.seed)
    print(f"\npowerfs model: {'strict (no journal)' if args.strict else 'ext4 data=ordered'}")
    print(f"{'server':8} {'trials':>6} {'ckpt/commit/timer':>17} {'armed hit':>9} "
          f"{'acknowledged':>12} {'lost':>5} {'repairs':>7} {'s/trial':>7}")
    for kind, t in results.items():
        per = t.seconds / t.trials if t.trials else 0.0
        modes = "/".join(str(v) for v in t.modes.values())
        print(f"{kind:8} {t.trials:6} {modes:>17} {t.at_index_write:9} {t.acknowledged:12} "
              f"{t.lost:5} {t.repairs:7} {per:7.1f}")
    for t in results.values():
        for note in t.notes[:20]:
            print(f"  {note}")
    return 1 if any(t.lost or t.repairs for t in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
