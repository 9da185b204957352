"""Lua scripts as Orthanc runs them, the same scripts on pipacs and Debian's Orthanc 1.10.1.

The scripts are ours, written after the behaviour the Orthanc Book documents for its
auto-routing samples: OnStoredInstance + SendToModality, OnStableStudy, ReceivedInstanceFilter,
IncomingHttpRequestFilter, and /tools/execute-script. Each case runs on both servers against
the same dcmtk peers and checks the same outcome.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from conftest import DCMTK_ENV, StoreScp, base_config, datagen, need
from test_rest_resources import request

pytestmark = pytest.mark.orthanc

ROUTING = """
-- Every instance a modality sends goes on to the teacher's workstation, once.
function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin['RequestOrigin'] ~= 'Lua' then
    SendToModality(instanceId, 'workstation')
  end
end
"""
FILTERS = """
function ReceivedInstanceFilter(dicom, origin, info)
  return dicom.PatientID ~= 'BLOCKED'
end

function IncomingHttpRequestFilter(method, uri, ip, username, headers)
  return method ~= 'DELETE'
end
"""
STABLE = """
-- A study nobody added to for StableAge seconds goes to the workstation, whole.
function OnStableStudy(studyId, tags, metadata)
  print('stable study ' .. tags['StudyInstanceUID'])
  RestApiPost('/modalities/workstation/store', studyId)
end
"""


class Server:
    def __init__(self, url: str, dicom_port: int, aet: str, stop: Callable[[], None], log: Path):
        self.url, self.dicom_port, self.aet, self.stop, self.log = url, dicom_port, aet, stop, log

    def store(self, *files: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([need("storescu"), "-aet", "MODALITY", "-aec", self.aet, "127.0.0.1",
                               str(self.dicom_port), *map(str, files)], env=DCMTK_ENV,
                              capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def servers(tmp_path: Path, make_pipacs: Any) -> Iterator[Callable[..., Server]]:
    """Start pipacs or Orthanc with the same configuration keys."""
    stops: list[Callable[[], None]] = []

    def start(kind: str, **config: Any) -> Server:
        if kind == "pipacs":
            p = make_pipacs(**config)
            return Server(p.url, p.dicom_port, p.aet, p.stop, p.folder / "pipacs.log")
        folder = tmp_path / f"orthanc-{len(stops)}"
        folder.mkdir()
        cfg = base_config(**config)
        cfg.update(StorageDirectory=str(folder / "db"), IndexDirectory=str(folder / "db"),
                   Plugins=[], DicomAet="ORTHANC")
        (folder / "orthanc.json").write_text(json.dumps(cfg))
        log = folder / "orthanc.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([need("Orthanc") if not Path("/usr/sbin/Orthanc").exists()
                                     else "/usr/sbin/Orthanc", str(folder / "orthanc.json")],
                                    stdout=out, stderr=subprocess.STDOUT, cwd=folder,
                                    env={**os.environ, "TCP_NODELAY": "1"})
        url = f"http://127.0.0.1:{cfg['HttpPort']}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if request(url + "/system")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

        def stop() -> None:
            proc.terminate()
            proc.wait(10)

        stops.append(stop)
        return Server(url, cfg["DicomPort"], "ORTHANC", stop, log)

    yield start
    for stop in stops:
        stop()


def workstation(scp: StoreScp) -> dict[str, Any]:
    return {"workstation": [scp.aet, "127.0.0.1", scp.port]}


def received(scp: StoreScp, count: int, timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        files = scp.files()
        if len(files) >= count or time.monotonic() > deadline:
            return sorted(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                          for f in files)
        time.sleep(0.2)


@pytest.mark.parametrize("kind", ["orthanc", "pipacs"])
def test_auto_routing_on_stored_instance(kind: str, servers: Any, storescp: StoreScp,
                                         tmp_path: Path) -> None:
    script = tmp_path / "routing.lua"
    script.write_text(ROUTING)
    files = datagen.make_small(tmp_path / "data", patients=1, seed=21)[:3]
    server = servers(kind, LuaScripts=[str(script)], DicomModalities=workstation(storescp))
    assert server.store(*files).returncode == 0
    sent = received(storescp, 3)
    assert sent == sorted(str(pydicom.dcmread(f).SOPInstanceUID) for f in files), kind
    time.sleep(1)
    assert len(storescp.files()) == 3  # routed once, not again


@pytest.mark.parametrize("kind", ["orthanc", "pipacs"])
def test_filters_refuse_an_instance_and_a_method(kind: str, servers: Any,
                                                 tmp_path: Path) -> None:
    script = tmp_path / "filters.lua"
    script.write_text(FILTERS)
    files = datagen.make_small(tmp_path / "data", patients=1, seed=22)[:2]
    blocked = tmp_path / "blocked.dcm"
    ds = pydicom.dcmread(files[1])
    ds.PatientID = "BLOCKED"
    ds.save_as(blocked)
    server = servers(kind, LuaScripts=[str(script)])
    assert server.store(files[0]).returncode == 0
    server.store(blocked)  # refused with a failure status (storescu exits 0 all the same)
    status, _, body = request(server.url + "/instances")
    assert status == 200 and len(json.loads(body)) == 1, kind  # the blocked one is not stored
    instance = json.loads(body)[0]
    assert request(server.url + f"/instances/{instance}", "DELETE")[0] == 403, kind
    assert request(server.url + f"/instances/{instance}")[0] == 200


@pytest.mark.parametrize("kind", ["orthanc", "pipacs"])
def test_on_stable_study_sends_the_whole_study(kind: str, servers: Any, storescp: StoreScp,
                                               tmp_path: Path) -> None:
    script = tmp_path / "stable.lua"
    script.write_text(STABLE)
    files = datagen.make_small(tmp_path / "data", patients=1, seed=23)[:4]
    server = servers(kind, LuaScripts=[str(script)], DicomModalities=workstation(storescp),
                     StableAge=1)
    assert server.store(*files).returncode == 0
    study_files = [f for f in files if pydicom.dcmread(f).StudyInstanceUID
                   == pydicom.dcmread(files[0]).StudyInstanceUID]
    assert len(received(storescp, len(study_files), timeout=30)) == len(study_files), kind


@pytest.mark.parametrize("kind", ["orthanc", "pipacs"])
def test_execute_script(kind: str, servers: Any) -> None:
    server = servers(kind, Name="Room 12", ExecuteLuaEnabled=True)
    code = ("print(42)\nlocal system = ParseJson(RestApiGet('/system'))\n"
            "print(system['Name'])\nprint(DumpJson({1, 2, 3}))\n"
            "print(string.format('%d instances', #ParseJson(RestApiGet('/instances'))))")
    status, _, body = request(server.url + "/tools/execute-script", "POST", code)
    assert status == 200, body
    lines = body.decode().split("\n")
    assert lines[:2] == ["42", "Room 12"] and json.loads(lines[2]) == [1, 2, 3]
    assert lines[3] == "0 instances"
    off = servers(kind)
    status, _, body = request(off.url + "/tools/execute-script", "POST", "print(1)")
    assert status == 403, (kind, status, body)


def test_what_pipacs_refuses_and_says_why(make_pipacs: Any, tmp_path: Path) -> None:
    p = make_pipacs(ExecuteLuaEnabled=True)
    status, _, body = request(p.url + "/tools/execute-script", "POST",
                              "HttpGet('http://example.invalid/')")
    assert status == 500 and b"HttpGet() is not offered by pipacs" in body
    broken = tmp_path / "broken.lua"
    broken.write_text("function OnStoredInstance(\n")
    q = make_pipacs(LuaScripts=[str(broken)])
    assert "broken.lua failed to load" in q.log()
    assert shutil.which("storescu")
