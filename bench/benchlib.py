"""Helpers shared by the benchmark scripts: tables, percentiles, load average, RSS sampling.

The servers themselves (start, stop, configuration, dcmtk clients) live in ``ingest.py``,
which the other scripts import; this module holds what is not about ingest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

# Explicit paths: the venv's bin/ (first on make's PATH) also holds pynetdicom's storescu,
# findscu, echoscu ..., whose options differ from dcmtk's.
DCMTK_BIN = Path(os.environ.get("DCMTK_BIN", "/usr/bin"))


def dcmtk(tool: str) -> str:
    """dcmtk's `tool`, by its path."""
    return str(DCMTK_BIN / tool)


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by the nearest-rank method; nan for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))  # ceil(n * q / 100)
    return ordered[int(rank) - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str = "") -> None:
    """A Markdown table, columns padded to their widest cell."""
    if title:
        print(f"\n## {title}\n")
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


def dir_size(path: Path) -> int:
    """Bytes allocated on disk by the files under ``path`` (blocks, not apparent sizes)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):  # removed meanwhile
                total += os.stat(os.path.join(dirpath, f)).st_blocks * 512
    return total


class RssSampler:
    """Samples the RSS of a process tree in a thread: ``with RssSampler(pid) as s: ...``."""

    def __init__(self, pid: int, interval: float = 0.5):
        from ingest import rss_mb  # late: ingest imports this module

        self._rss = rss_mb
        self.pid = pid
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(self._rss(self.pid))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self._rss(self.pid))

    @property
    def peak(self) -> float:
        return max(self.samples, default=0.0)

    @property
    def last(self) -> float:
        return self.samples[-1] if self.samples else 0.0


class Stopwatch:
    """``with Stopwatch() as t: ...; t.seconds``."""

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


def remove_or_keep(root: Path, keep: bool) -> None:
    """Remove a benchmark's temporary folder, or say where it was kept."""
    if keep:
        print(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


def stop_and_clean(servers: Iterable[Any], root: Path, keep: bool) -> None:
    """The end of every benchmark: stop its servers, then remove its temporary folder
    (or say where it was kept)."""
    for srv in servers:
        srv.stop()
    remove_or_keep(root, keep)


@contextlib.contextmanager
def ext4_image(gigabytes: int, where: Path | None = None) -> Iterator[Path]:
    """A fresh ext4 made with mke2fs' defaults (a journal, as on a Raspberry Pi's SD card) in
    a sparse image file, loop-mounted for the time of the block. Needs root.

    The disks of build machines are often journal-less ext4 (no /proc/fs/jbd2 entry for
    them): there ext4 looks for free inodes past the recently deleted ones, which makes
    creating files cost more than on a Pi and depend on what was deleted before.
    """
    root = Path(tempfile.mkdtemp(prefix="pipacs-ext4-", dir=where))
    image, mountpoint = root / "disk.img", root / "mnt"
    mountpoint.mkdir()
    try:
        with open(image, "wb") as f:
            f.truncate(gigabytes << 30)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mountpoint)], check=True)
        try:
            yield mountpoint
        finally:
            subprocess.run(["umount", str(mountpoint)], check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)
