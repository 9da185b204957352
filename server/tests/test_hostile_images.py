"""Image sizes (issue 13, item 6): /rendered was capped at 4096 px, WADO-URI at 65536 and
the DICOMweb viewport at 16384 (a 30000-px request peaked at 2.8 GB). One cap for all three
(pipacs.limits.MAX_IMAGE_SIZE), a 400 that says so beyond it; the server runs with an
address-space limit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import test_hostile_dicom
from conftest import PipacsProcess, http_request
from test_hostile_dicom import rss_mb
from test_rest_resources import uids

limited = test_hostile_dicom.limited  # the fixture
TOO_BIG = 30000
MAX_IMAGE_SIZE = 4096  # pipacs.limits.MAX_IMAGE_SIZE


def test_one_image_size_cap_everywhere(limited: Any, small_data: list[Path]) -> None:
    p: PipacsProcess = limited(Plugins=["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"])
    p.store(small_data[0])
    _, study, series, sop = uids(small_data[0])
    (instance,) = p.get("/instances")
    rendered = f"/dicom-web/studies/{study}/series/{series}/instances/{sop}/rendered"
    wado = (f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
            f"&contentType=image/png")
    before = rss_mb(p)
    for path in (f"/instances/{instance}/rendered?width={TOO_BIG}",
                 f"{rendered}?viewport={TOO_BIG},{TOO_BIG}",
                 f"{rendered}?viewport={MAX_IMAGE_SIZE + 1},16",
                 f"{wado}&rows={TOO_BIG}&columns={TOO_BIG}"):
        status, _, body = http_request(p.url + path, timeout=60)
        assert status == 400, (path, status, body[:200])
        assert str(MAX_IMAGE_SIZE) in json.loads(body)["Details"], body
    assert rss_mb(p) - before < 100
    for path in (f"/instances/{instance}/rendered?width={MAX_IMAGE_SIZE}",
                 f"{rendered}?viewport={MAX_IMAGE_SIZE},{MAX_IMAGE_SIZE}",
                 f"{wado}&rows=64&columns=64"):
        assert http_request(p.url + path, timeout=60)[0] == 200, path
