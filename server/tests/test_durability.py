"""A power cut in the middle of parallel C-STOREs: nothing acknowledged is lost."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time

import pydicom

from conftest import DCMTK_ENV, need


def test_sigkill_during_parallel_stores(make_pipacs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import datagen

    files = datagen.make_small(tmp_path / "data", patients=40, seed=23)  # 1600 files
    p = make_pipacs()
    senders = []
    for n in range(4):
        batch = files[n::4]
        senders.append(
            subprocess.Popen(
                [
                    need("storescu"),
                    "-v",
                    "-aec",
                    p.aet,
                    "127.0.0.1",
                    str(p.dicom_port),
                    *map(str, batch),
                ],
                env=DCMTK_ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    # Kill once a good part has been stored, whatever the speed of this machine.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(1 for f in p.storage.rglob("*") if f.is_file()) >= 200:
            break
        time.sleep(0.01)
    p.stop(signal.SIGKILL)
    acknowledged: set[str] = set()
    for s in senders:
        out = s.communicate(timeout=60)[0]
        current = None
        for line in out.splitlines():
            if line.startswith("I: Sending file: "):
                current = line.split(": ", 2)[2]
            elif "Received Store Response (Success)" in line and current:
                acknowledged.add(current)
    assert 0 < len(acknowledged) < len(files), "the kill should land in the middle"

    p.start()
    stats = p.get("/statistics")
    assert stats["CountInstances"] >= len(acknowledged)
    wanted = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in acknowledged}
    # Index and files agree: every indexed instance has its file, and no file is left over.
    db = sqlite3.connect(p.folder / "index" / "pipacs-index.db")
    uuids = {r[0] for r in db.execute("SELECT uuid FROM attachments")}
    uids = {r[0] for r in db.execute("SELECT uid FROM resources WHERE level=3")}
    db.close()
    files_on_disk = {f.name for f in p.storage.rglob("*") if f.is_file()}
    assert files_on_disk == uuids
    assert wanted <= uids
    # And each acknowledged instance reads back as DICOM.
    for f in p.storage.rglob("*"):
        if f.is_file():
            pydicom.dcmread(f, stop_before_pixels=True)
    assert not list((p.storage / ".incoming").iterdir())
