"""Differential testing against Debian's Orthanc 1.10.1: one server pair per test module,
the same request sent to both, and the ONE list of allowed differences (DIFFERENCES).

A test sends a request with `Pair.same(...)`: both answers must have the same status and,
for JSON, the same value once `normalize` has taken out what DIFFERENCES allows. Anything
else that differs is a failure: fix pipacs, or add the difference here with its reason.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_coverage import Answer, call

from conftest import PipacsProcess, base_config, free_port, http_request

ORTHANC = "/usr/sbin/Orthanc"

# ---------------------------------------------------------------- allowed differences
# Every difference between pipacs' and Orthanc's answers that the differential tests allow,
# with why. Keys are what `normalize` matches: a JSON key anywhere in an answer (its value
# is not compared), or an operation (METHOD, route) whose answer is compared less.
VOLATILE_KEYS = {
    # made at the moment of the request on each server
    "LastUpdate": "a time stamp",
    "ReceptionDate": "a time stamp",
    "FileUuid": "storage UUIDs are random on both servers",
    "IsStable": "stability timers run on each server on their own",
    # pipacs answers these and Orthanc 1.10 does not
    "IsProtected": "pipacs adds the patient's protection to /patients/{id} (as Orthanc 1.12)",
    # Orthanc 1.10 writes these metadata and pipacs does not
    "RemoteAET": "pipacs does not record the (empty) AET of a REST upload",
    "HttpUsername": "pipacs does not record the (empty) user of a REST upload",
    "PixelDataOffset": "pipacs does not record where the pixel data starts",
    "RemoteIP": "recorded by both, compared by the tests that care",
    # C-FIND answers (find-*, /queries): each server's SCP answers for itself
    "RetrieveAETitle": "each server answers its own AET",
    "SpecificCharacterSet": "pipacs' C-FIND SCP answers in UTF-8 (ISO_IR 192), Orthanc's in "
                            "its DefaultEncoding",
    "MediaStorageSOPInstanceUID": "Orthanc's find-instance asks for this file meta tag in a "
                                  "C-FIND identifier; pipacs asks for DICOM tags only",
    # test_rest_orthanc.test_same_resource_json compares its PatientID
    "PatientMainDicomTags": "Orthanc takes them from the study's first instance, pipacs from "
                            "the patient's; datagen gives a patient two PatientSex values",
}
OPERATIONS = {
    ("GET", "/tools"): "pipacs lists the same tools; Orthanc lists none beyond them",
    ("GET", "/tools/dicom-conformance"): "each server describes itself (text, not compared)",
    ("GET", "/tools/accepted-transfer-syntaxes"):
        "Orthanc also accepts JPIP (.4.94/.4.95) and the .6.1/.6.2 syntaxes under other keys; "
        "pipacs lists those it has a <Name>TransferSyntaxAccepted key for, plus 4.201-203 "
        "(HTJ2K) with JPEG 2000",
    ("GET", "/tools/metrics-prometheus"): "pipacs gives the counts, not Orthanc's timings",
    ("POST", "/{level}/{id}/reconstruct"):
        "pipacs' main tags always come from the files (501 Not implemented)",
    ("POST", "/{level}/{id}/attachments/{name}/compress"):
        "pipacs changes no single file's compression (501 unless it is so already)",
    ("PUT", "/{level}/{id}/attachments/{name}"): "user attachments: 501 Not implemented",
    ("POST", "/modalities/{id}/storage-commitment"): "no storage commitment: 501",
    ("POST", "/studies/{id}/split"): "new UIDs are random; compared by shape and counts",
    ("POST", "/studies/{id}/merge"): "compared by shape and counts",
    ("POST", "/tools/create-dicom"): "new UIDs are random; the stored tags are compared. "
        "Orthanc writes no SOPClassUID for an image (DCMTK's private class in the meta "
        "header); pipacs writes Secondary Capture Image Storage, in both places",
    ("GET", "/patients/{id}/module"): "read from one instance of the patient, which one is "
        "not said; datagen gives a patient's CT and MR instances different PatientSex",
    ("GET", "/tools/generate-uid"): "random; pipacs uses pydicom's UID root, Orthanc DCMTK's",
    ("PUT", "/tools/default-encoding"):
        "both answer the encoding; Orthanc's 400 names no details",
}


# Lists of child IDs are in no defined order (Orthanc's follow its index's row order).
UNORDERED = {"Studies", "Series", "Instances"}


def normalize(value: Any) -> Any:
    """`value` without the keys VOLATILE_KEYS allows to differ (recursively), child ID
    lists sorted."""
    if isinstance(value, dict):
        return {k: sorted(v) if k in UNORDERED and all(isinstance(x, str) for x in v)
                else normalize(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def error_shape(body: bytes) -> dict[str, Any]:
    """An error answer as compared: status and Orthanc's code, not the wording."""
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return {k: value.get(k) for k in ("HttpStatus", "OrthancStatus", "Method", "Uri")} \
        if isinstance(value, dict) else {}


# ---------------------------------------------------------------- servers


def _call(url: str, method: str, body: Any, headers: dict[str, str] | None) -> Answer:
    data = body if isinstance(body, bytes) or body is None else \
        body.encode() if isinstance(body, str) else json.dumps(body).encode()
    return call(url, method, data, headers, timeout=30)


class Pair:
    """pipacs and Orthanc, started from the same configuration, holding the same data."""

    def __init__(self, ours: str, theirs: str, ours_dicom: int, theirs_dicom: int):
        self.ours, self.theirs = ours, theirs
        self.ours_dicom, self.theirs_dicom = ours_dicom, theirs_dicom

    def both(self, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None) -> tuple[Answer, Answer]:
        return (_call(self.ours + path, method, body, headers),
                _call(self.theirs + path, method, body, headers))

    def same(self, method: str, path: str, body: Any = None, *, json_body: bool = True,
             headers: dict[str, str] | None = None, sort_by: str = "") -> tuple[Any, Any]:
        """Send to both; same status, and the same normalized JSON (or bytes) on success,
        the same Orthanc error code on failure. Returns both decoded answers. `sort_by`:
        a list of objects in no defined order, compared sorted by that key."""
        a, b = self.both(method, path, body, headers)
        assert a.status == b.status, (method, path, a.status, b.status, a.body[:300],
                                      b.body[:300])
        if a.status >= 400:
            ea, eb = error_shape(a.body), error_shape(b.body)
            if eb:  # Orthanc answered an error body: the code must agree
                assert ea.get("OrthancStatus") == eb.get("OrthancStatus"), (path, ea, eb)
            return ea, eb
        if not json_body:
            assert a.body == b.body, (method, path, a.body[:200], b.body[:200])
            return a.body, b.body
        ja, jb = normalize(a.json()), normalize(b.json())
        if sort_by:
            ja, jb = (sorted(j, key=lambda x: x[sort_by]) for j in (ja, jb))
        assert ja == jb, (method, path, ja, jb)
        return ja, jb

    def get(self, path: str) -> Any:
        a = _call(self.theirs + path, "GET", None, None)
        assert a.status == 200, (path, a.status, a.body[:300])
        return a.json()


def start_orthanc(folder: Path, config: dict[str, Any], *args: str
                  ) -> tuple[subprocess.Popen[bytes], str]:
    """Debian's Orthanc with `config` (its storage, index and no plugins added) and `args`
    before the configuration file; waits for its /system. (process, URL)."""
    if not Path(ORTHANC).exists():
        pytest.fail("Orthanc is not installed: run `make setup`")
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {**config, "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
           "Plugins": [], "Name": "Reference"}
    (folder / "orthanc.json").write_text(json.dumps(cfg))
    log = (folder / "orthanc.log").open("wb")
    proc = subprocess.Popen([ORTHANC, *args, str(folder / "orthanc.json")], stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": "1"})
    url = f"http://127.0.0.1:{config['HttpPort']}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if http_request(url + "/system")[0] == 200:
                return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"Orthanc did not start:\n{(folder / 'orthanc.log').read_text()}")
        time.sleep(0.1)


def start_pair(folder: Path, files: list[Path], **extra: Any) -> Iterator[Pair]:
    """A module's server pair: each has itself as modality "self" and peer "self"."""
    ours_cfg = base_config(**extra)
    theirs_cfg = {**base_config(**extra), "HttpPort": free_port(), "DicomPort": free_port(),
                  "DicomAet": "ORTHANC"}
    for cfg in (ours_cfg, theirs_cfg):
        cfg["DicomModalities"] = {"self": [cfg["DicomAet"], "127.0.0.1", cfg["DicomPort"]]}
        cfg["OrthancPeers"] = {"self": [f"http://127.0.0.1:{cfg['HttpPort']}/"]}
        cfg["StoreMD5ForAttachments"] = True
    # --verbose, as PipacsProcess starts pipacs: the log levels start equal
    proc, theirs = start_orthanc(folder / "orthanc", theirs_cfg, "--verbose")
    (folder / "pipacs").mkdir()
    p = PipacsProcess(folder / "pipacs", ours_cfg)
    p.start()
    pair = Pair(p.url, theirs, p.dicom_port, theirs_cfg["DicomPort"])
    try:
        for path in files:
            a, b = pair.both("POST", "/instances", path.read_bytes())
            assert a.status == b.status == 200, (a.body[:200], b.body[:200])
        yield pair
    finally:
        p.stop()
        proc.terminate()
        proc.wait(20)


UID = re.compile(r"^[0-9.]+$")
