"""Fixtures: generated DICOM data, a real pipacs process on loopback, dcmtk peers."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import benchlib  # noqa: E402

import datagen  # noqa: E402

PIPACS = [sys.executable, "-m", "pipacs"]
# An OrthancPi's configuration (our own file with the keys and values of a real one).
ORTHANCPI_CONFIG = Path(__file__).resolve().parent / "fixtures" / "orthancpi-configuration.json"
# Debian's dcmtk waits on Nagle's algorithm unless told not to.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# pynetdicom puts its own storescu, findscu, ... in the venv's bin: take dcmtk's, always
# (bench/benchlib.py's folder, DCMTK_BIN in the environment or /usr/bin).
DCMTK_DIR = str(benchlib.DCMTK_BIN)


def need(tool: str) -> str:
    path = shutil.which(tool, path=DCMTK_DIR)
    if path is None:
        pytest.fail(f"{tool} is not installed: run `make setup` (installs dcmtk and orthanc)")
    return path


def dcmtk(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    args = (need(args[0]), *args[1:])
    proc = subprocess.run(
        list(args), env=DCMTK_ENV, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def http_request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, Message, bytes]:
    """(status, headers, body) of one request: error statuses are answers, not exceptions;
    header names ignore case."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return int(r.status), r.headers, r.read()
    except urllib.error.HTTPError as e:
        return int(e.code), e.headers, e.read()


def store_status(p: PipacsProcess, *paths: Path) -> list[int]:
    """The C-STORE statuses dcmtk's storescu received, one per file, in order."""
    proc = dcmtk("storescu", "-d", "-nh", "-aet", "STORESCU", "-aec", p.aet, "127.0.0.1",
                 str(p.dicom_port), *map(str, paths), check=False)
    found = re.findall(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})", proc.stdout + proc.stderr)
    assert len(found) == len(paths), proc.stdout + proc.stderr
    return [int(s, 16) for s in found]


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    """Poll `check`; the deadline is generous: this waits, it does not measure."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} (waited {timeout} s)")
        time.sleep(0.1)


@dataclass
class PipacsProcess:
    """A pipacs server started from a configuration in a temporary folder."""

    folder: Path
    config: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.folder / "pipacs.log"

    @property
    def dicom_port(self) -> int:
        return int(self.config["DicomPort"])

    @property
    def http_port(self) -> int:
        return int(self.config["HttpPort"])

    @property
    def aet(self) -> str:
        return str(self.config.get("DicomAet", "PIPACS"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def storage(self) -> Path:
        return self.folder / str(self.config.get("StorageDirectory", "storage"))

    def write_config(self) -> Path:
        path = self.folder / "configuration.json"
        path.write_text(json.dumps(self.config, indent=2))
        return path

    def start(self, *extra: str, wait: bool = True) -> None:
        path = self.write_config()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*PIPACS, "--verbose", *extra, str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
        )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 20) -> None:
        """Wait until both ports accept a connection. Each port is probed until it answers
        once: every probe of the DICOM port is an association pynetdicom keeps waiting for
        its request (up to 10 s), and a slow HTTP start under load used to pile up more than
        pipacs' 32, so that the test's first association was refused (Local Limit Exceeded)."""
        deadline = time.monotonic() + timeout
        waiting = [self.dicom_port, self.http_port]
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"pipacs exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.2):
                    waiting.pop(0)
            except OSError:
                time.sleep(0.05)
            if not waiting:
                return
        raise AssertionError(f"pipacs did not start in {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"pipacs did not stop on {sig}:\n{self.log()}") from None
        rc = self.proc.returncode
        self.proc = None
        return rc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, written: Callable[[str], bool], since: int = 0,
                 timeout: float = 10, settle: float = 0.2) -> str:
        """The log from character `since` on, once `written` holds for it (pipacs writes some
        lines after the answer has left), then `settle` seconds more, so that a line written
        twice shows twice. After `timeout` the log as it is: the test's assertion says what
        is missing. The deadline waits, it does not measure."""
        deadline = time.monotonic() + timeout
        while not written(self.log()[since:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(settle)
        return self.log()[since:]

    def get(self, path: str) -> Any:
        with self.answering(path), urllib.request.urlopen(self.url + path, timeout=10) as r:
            body = r.read()
            if r.headers.get("Content-Type", "").startswith("application/json"):
                return json.loads(body)
            return body

    @contextlib.contextmanager
    def answering(self, what: str) -> Iterator[None]:
        """A request that times out fails with what every thread of pipacs was doing then
        (pipacs writes its stacks to its log on SIGUSR1) and the end of its log."""
        try:
            yield
        except (TimeoutError, urllib.error.URLError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            if not isinstance(reason, TimeoutError) or self.proc is None \
                    or self.proc.poll() is not None:
                raise
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            raise AssertionError(f"pipacs did not answer {what} in time:\n"
                                 f"{self.log()[-20000:]}") from e

    def status(self, method: str, path: str, body: bytes | None = None) -> int:
        """The HTTP status of a request (errors included, no exception)."""
        return self.request(method, path, body, timeout=10)[0]

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> tuple[int, Message, bytes]:
        """(status, headers, body) of a request to this server, errors included."""
        with self.answering(f"{method} {path}"):
            return http_request(self.url + path, method, body, headers, timeout)

    def echo(self) -> None:
        dcmtk("echoscu", "-aec", self.aet, "127.0.0.1", str(self.dicom_port))

    def store(self, *paths: Path | str, aet: str = "STORESCU") -> subprocess.CompletedProcess[str]:
        return dcmtk(
            "storescu",
            "-aet",
            aet,
            "-aec",
            self.aet,
            "+sd",
            "+r",
            "127.0.0.1",
            str(self.dicom_port),
            *map(str, paths),
        )


def base_config(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "Name": "TestPi",
        "StorageDirectory": "storage",
        "IndexDirectory": "index",
        "DicomAet": "PIPACS",
        "DicomPort": free_port(),
        "HttpPort": free_port(),
        "AuthenticationEnabled": False,
        "RemoteAccessAllowed": False,
        "StableAge": 1,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture
def make_pipacs(tmp_path: Path) -> Iterator[Any]:
    started: list[PipacsProcess] = []

    def factory(start: bool = True, **overrides: Any) -> PipacsProcess:
        folder = tmp_path / f"pipacs{len(started)}"
        folder.mkdir()
        p = PipacsProcess(folder, base_config(**overrides))
        started.append(p)
        if start:
            p.start()
        return p

    yield factory
    for p in started:
        p.stop(signal.SIGKILL) if p.proc and p.proc.poll() is None else None


@pytest.fixture
def pipacs(make_pipacs: Any) -> PipacsProcess:
    return make_pipacs()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """2 patients x 2 studies x 2 series x 10 instances (80 files, CT and MR)."""
    return datagen.make_small(tmp_path_factory.mktemp("small"), patients=2, seed=11)


@dataclass
class StoreScp:
    aet: str
    port: int
    folder: Path
    proc: subprocess.Popen[bytes]

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreScp]:
    """dcmtk's storescp as a peer: accepts what it is offered, writes the bytes it got (+B)."""
    binary = need("storescp")
    port = free_port()
    folder = tmp_path / "storescp"
    folder.mkdir()
    proc = subprocess.Popen(
        [binary, "-aet", "STORESCP", "+xa", "+B", "-od", str(folder), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    yield StoreScp("STORESCP", port, folder, proc)
    proc.terminate()
    proc.wait(5)
