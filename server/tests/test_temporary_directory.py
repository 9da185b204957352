"""TemporaryDirectory (Orthanc's option): where archive jobs and DICOMDIR media write their
temporary files instead of the system's temporary folder (a RAM tmpfs on Debian 13). A folder
that cannot be made or written fails the configuration with the key's name; on a full one a
job fails with 507 naming it; nothing is left behind in it, nor in the system's folder.

Real pipacs processes over HTTP; the folder is on a real small tmpfs as in test_diskfull.py.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from pipacs.config import ConfigError, build_settings
from test_diskfull import small_disk, store_status  # noqa: F401 (a fixture)
from test_faults_archive import fetch, job_result, settled


def test_default_is_the_system_folder(tmp_path: Path) -> None:
    settings, _ = build_settings({}, tmp_path)
    assert settings.temporary_directory == ""


def test_relative_folder_is_resolved_and_may_not_exist_yet(tmp_path: Path) -> None:
    settings, _ = build_settings({"TemporaryDirectory": "tmp/pipacs"}, tmp_path)
    assert settings.temporary_directory == str(tmp_path / "tmp" / "pipacs")
    assert not (tmp_path / "tmp").exists(), "checking the configuration makes no folder"


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_unusable_folder_fails_with_the_key(tmp_path: Path, where: str) -> None:
    (tmp_path / "f").write_text("not a folder")
    folder = tmp_path / "f" if where == "a file" else tmp_path / "f" / "tmp"
    with pytest.raises(ConfigError) as e:
        build_settings({"TemporaryDirectory": str(folder)}, tmp_path)
    (problem,) = e.value.problems
    assert problem.startswith("TemporaryDirectory: ") and str(folder) in problem, problem


def test_wrong_type_fails_with_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        build_settings({"TemporaryDirectory": 5}, tmp_path)
    assert e.value.problems == ["TemporaryDirectory: must be a string, not 5"]


def series_of(p: Any, modality: str) -> str:
    """The ID of a series of that modality."""
    return str(next(s["ID"] for s in p.get("/series?expand")
                    if s["MainDicomTags"].get("Modality") == modality))


def test_archives_and_media_use_the_folder(small_disk: Any, make_pipacs: Any,  # noqa: F811
                                           small_data: list[Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    disk = small_disk("tmp", "tmpfs", 1024)
    folder = disk.root / "pipacs"  # made at first use
    system = tmp_path / "system-tmp"
    system.mkdir()
    monkeypatch.setenv("TMPDIR", str(system))
    p = make_pipacs(TemporaryDirectory=str(folder))
    assert store_status(p, *small_data) == [0] * 80
    settled(p)
    patients = p.get("/patients")

    # All 80 files (~1.3 MB as a ZIP) do not fit in 1 MB: 507 naming the folder.
    status, _, raw, _ = fetch(p, "POST", "/tools/create-archive",
                              {"Resources": patients, "Asynchronous": True})
    assert status == 200, raw
    job = job_result(p, json.loads(raw)["ID"])
    assert job["State"] == "Failure" and job["ErrorCode"] == 19, job
    assert job["ErrorDescription"] == "The file storage is full", job
    assert str(folder) in job["ErrorDetails"], job
    assert not list(folder.iterdir()), "a failed job left its temporary file"

    # One series fits: the job's ZIP is in the folder until the job goes.
    series = series_of(p, "CT")
    status, _, raw, _ = fetch(p, "POST", f"/series/{series}/archive", {"Asynchronous": True})
    job_id = json.loads(raw)["ID"]
    assert job_result(p, job_id)["State"] == "Success"
    (archive,) = folder.iterdir()
    status, _, raw, complete = fetch(p, "GET", f"/jobs/{job_id}/archive")
    assert status == 200 and complete
    assert len(zipfile.ZipFile(io.BytesIO(raw)).namelist()) == 10
    archive.unlink()

    # DICOMDIR media of a small MR series: staged in the folder, removed once sent.
    mr = series_of(p, "MR")
    status, _, raw, complete = fetch(p, "GET", f"/series/{mr}/media")
    assert status == 200 and complete
    assert "DICOMDIR" in zipfile.ZipFile(io.BytesIO(raw)).namelist()
    status, _, raw, _ = fetch(p, "POST", f"/series/{mr}/media", {"Asynchronous": True})
    media_job = json.loads(raw)["ID"]
    assert job_result(p, media_job)["State"] == "Success"
    assert fetch(p, "GET", f"/jobs/{media_job}/archive")[0] == 200
    assert len(list(folder.iterdir())) == 1, "only the media job's ZIP stays"

    assert not list(system.iterdir()), "temporary files went to the system's folder"
    assert "Traceback" not in p.log(), p.log()
