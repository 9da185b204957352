"""Orthanc's configuration dialect (jsoncpp): comments and trailing commas; pipacs reads the
same files as Orthanc 1.10.1 does, and refuses the ones it refuses."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from conftest import free_port, http_request
from pipacs.config.jsonc import relaxed_json

GOOD = """{
  "Name": "Commas",  // the last modality was commented out, its comma left behind
  "DicomModalities": {
    "ct": ["CT", "127.0.0.1", 104],
    // "mr": ["MR", "127.0.0.1", 105]
  },
  "ExtraNotes": [
    "a.lua",
  ],
  "UserMetadata": { "Note": 1024, },
  "Text": "a,] and ,} stay as they are",
}
"""
# Files jsoncpp 1.9 reads (True) or refuses (False); pipacs must agree (measured on
# Orthanc 1.10.1: in a list, no comment may stand between the last comma and "]").
CASES = [
    (GOOD, True),
    ('{"A": [1, 2,\n  ]}', True),
    ('{"A": {"b": 1, /* c */ }}', True),
    ('{"A": [1, // "2"\n]}', False),
    ('{"A": [1, /* 2 */ ]}', False),
    ('{"A": [1,,2]}', False),
    ('{"A": [,]}', False),
    ('{"A": {,}}', False),
    ('{"A": 1,,}', False),
]


def test_trailing_commas_are_read() -> None:
    data = relaxed_json(GOOD)
    assert data["DicomModalities"] == {"ct": ["CT", "127.0.0.1", 104]}
    assert data["ExtraNotes"] == ["a.lua"]
    assert data["UserMetadata"] == {"Note": 1024}
    assert data["Text"] == "a,] and ,} stay as they are"


@pytest.mark.parametrize("text,accepted", CASES)
def test_pipacs_reads_what_jsoncpp_reads(tmp_path: Path, text: str, accepted: bool) -> None:
    try:
        relaxed_json(text)
        read = True
    except ValueError:
        read = False
    assert read == accepted, text


def _orthanc_accepts(folder: Path, text: str) -> bool:
    """Start Orthanc with `text` (plus what it needs to run here): does it come up?"""
    port = free_port()
    extra = (f'"HttpPort": {port}, "DicomPort": {free_port()}, "Plugins": [], '
             f'"StorageDirectory": "{folder / "db"}", "IndexDirectory": "{folder / "db"}",')
    config = folder / "orthanc.json"
    config.write_text(text.replace("{", "{" + extra, 1))
    log = (folder / "orthanc.log").open("wb")
    proc = subprocess.Popen(["/usr/sbin/Orthanc", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "TCP_NODELAY": "1"})
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if http_request(f"http://127.0.0.1:{port}/system")[0] == 200:
                    return True
            except OSError:
                time.sleep(0.1)
        return False
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.mark.orthanc
def test_orthanc_reads_the_same_files(tmp_path: Path) -> None:
    """Each case as Orthanc's configuration: Orthanc starts exactly when CASES says so."""
    for n, (text, accepted) in enumerate(CASES):
        folder = tmp_path / str(n)
        folder.mkdir()
        assert _orthanc_accepts(folder, text) == accepted, text
