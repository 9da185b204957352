"""Private tags named as Orthanc 1.10.1 names them (from DCMTK's private dictionary) in
simplified-tags, ?simplify and the full tags, on pydicom's GE, Siemens and other files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from orthanc_api import Pair, start_pair

pytestmark = pytest.mark.orthanc

# pydicom's files with private tags of several makers (GE, Siemens, SonoSite, Mortara...).
FILES = ["CT_small.dcm", "examples_overlay.dcm", "JPEG2000.dcm", "examples_ybr_color.dcm",
         "J2K_pixelrep_mismatch.dcm", "waveform_ecg.dcm"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    files = [Path(str(get_testdata_file(name))) for name in FILES]
    yield from start_pair(tmp_path_factory.mktemp("api-private"), files)


def private_keys(tags: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in tags.items() if "," in k and int(k[:4], 16) % 2}


@pytest.mark.parametrize("name", FILES)
def test_private_tag_names(pair: Pair, name: str) -> None:
    from pydicom import dcmread

    uid = str(dcmread(get_testdata_file(name), stop_before_pixels=True).SOPInstanceUID)
    found = [i for i in pair.get("/instances")
             if pair.get(f"/instances/{i}")["MainDicomTags"]["SOPInstanceUID"] == uid]
    assert found, name
    inst = found[0]
    ours, theirs = pair.both("GET", f"/instances/{inst}/tags")
    a, b = ours.json(), theirs.json()
    names = {k: (a[k]["Name"], b[k]["Name"]) for k in private_keys(b) if k in a}
    assert all(x == y for x, y in names.values()), {k: v for k, v in names.items()
                                                    if v[0] != v[1]}
    for route in (f"/instances/{inst}/simplified-tags", f"/instances/{inst}/tags?simplify"):
        ours, theirs = pair.both("GET", route)
        a, b = ours.json(), theirs.json()
        assert sorted(a) == sorted(b), (route, sorted(set(a) ^ set(b)))
