"""What a person at the controller does to a classroom Pi's pipacs: DICOM echo and store with
dcmtk (to the container's own address only), and HTTP requests made inside the container."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

REPO = Path(__file__).resolve().parents[3]
# The administrator of the example inventory (inventory/example: group_vars/pacs and its vault).
EXAMPLE_ADMIN = ("admin", "example-teacher-password")
# dcmtk waits for Nagle's algorithm without it (see the team's testbed notes).
DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")
# dcmtk's tools by path: make puts the venv's bin/ first, where pynetdicom has its own.
DCMTK_BIN = os.environ.get("DCMTK_BIN", "/usr/bin")


def container_ip(name: str) -> str:
    """The address of a scenario's container on its podman network."""
    out = subprocess.run(
        ["podman", "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    assert out, f"{name} has no address"
    return out[0]


def sample_instance(path: Path, patient_id: str = "PIPACS-TEST-1", name: str = "Test^Patient") -> Dataset:
    """Write a small secondary-capture image (8x8 pixels) and return it."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = "20250101"
    ds.Modality = "OT"
    ds.StudyDescription = "PiPACS test"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(64))
    ds.save_as(path, enforce_file_format=True)
    return ds


def echoscu(host: str, port: int, aet: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [f"{DCMTK_BIN}/echoscu", "-aet", "CONTROLLER", "-aec", aet, host, str(port)],
        env=DCMTK_ENV, capture_output=True, text=True, timeout=30, check=False,
    )


def storescu(host: str, port: int, aet: str, *files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [f"{DCMTK_BIN}/storescu", "-aet", "CONTROLLER", "-aec", aet, host, str(port), *map(str, files)],
        env=DCMTK_ENV, capture_output=True, text=True, timeout=60, check=False,
    )


def http_get(host, port: int, path: str, user: str = "", password: str = "", *,
             tls_ca: str = "") -> tuple[int, str]:
    """GET http://127.0.0.1:PORT/PATH from inside the container (testinfra `host`); with
    tls_ca (a certificate file in the container), https:// verified against it."""
    return http_request(host, port, "GET", path, "", user, password, tls_ca=tls_ca)


def http_request(host, port: int, method: str, path: str, body: str, user: str = "",
                 password: str = "", *, tls_ca: str = "") -> tuple[int, str]:
    """METHOD http://127.0.0.1:PORT/PATH with a JSON body ("" for none), from inside the
    container; https:// verified against tls_ca when it is given."""
    script = (
        "import base64, ssl, sys, urllib.request, urllib.error\n"
        "ctx = ssl.create_default_context(cafile=sys.argv[6]) if sys.argv[6] else None\n"
        "data = sys.argv[5].encode() or None\n"
        "req = urllib.request.Request(sys.argv[1], data=data, method=sys.argv[4])\n"
        "if data:\n"
        "    req.add_header('Content-Type', 'application/json')\n"
        "if sys.argv[2]:\n"
        "    token = base64.b64encode((sys.argv[2] + ':' + sys.argv[3]).encode()).decode()\n"
        "    req.add_header('Authorization', 'Basic ' + token)\n"
        "try:\n"
        "    with urllib.request.urlopen(req, timeout=10, context=ctx) as r:\n"
        "        print(r.status); print(r.read().decode())\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code); print(e.read().decode())\n"
    )
    url = f"{'https' if tls_ca else 'http'}://127.0.0.1:{port}{path}"
    out = host.check_output(
        "python3 -c %s %s %s %s %s %s %s", script, url, user, password, method, body, tls_ca
    )
    status, _, body = out.partition("\n")
    return int(status), body


def http_json(host, port: int, path: str, user: str, password: str, *, tls_ca: str = ""):
    status, body = http_get(host, port, path, user, password, tls_ca=tls_ca)
    assert status == 200, (status, body)
    return json.loads(body)


def quote(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in args)


def server_config(host) -> dict:
    """The Pi's /etc/pipacs/server.json as pipacs reads it (whole-line // comments dropped)."""
    text = host.file("/etc/pipacs/server.json").content_string
    return json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))


def assert_release_holds_lock(host, arch: str) -> None:
    """The Pi installed from server/locks/<arch>.txt: the wheelhouse's requirements are that
    file, and the current release's id ends with its hash."""
    lock = REPO / "server" / "locks" / f"{arch}.txt"
    assert host.file("/opt/pipacs/wheelhouse/requirements.txt").content_string == lock.read_text()
    release = host.file("/opt/pipacs/current").linked_to.rsplit("/", 1)[1]
    assert release.endswith("-" + hashlib.sha256(lock.read_bytes()).hexdigest()[:12]), release


def assert_site_pi_serves(host, hostname: str, name: str, aet: str) -> None:
    """After site.yml: the Pi has its inventory name, pipacs is enabled and running, and its
    configuration carries the classroom's Name and AE title."""
    assert host.check_output("hostname") == hostname
    assert host.service("pipacs").is_enabled
    assert host.service("pipacs").is_running
    cfg = server_config(host)
    assert (cfg["Name"], cfg["DicomAet"]) == (name, aet)


def assert_architecture(host, machine: str, dpkg_arch: str) -> None:
    """The Pi's CPU (`uname -m`, emulated by qemu-user) and its userland's architecture."""
    assert (host.check_output("uname -m"), host.check_output("dpkg --print-architecture")) == (
        machine,
        dpkg_arch,
    )
