"""Datasets from JSON: bounded nesting, element count and error text."""

from __future__ import annotations

import io
import time
from typing import Any

import pydicom
import pytest

from pipacs.jsondataset import (
    MAX_DEPTH,
    MAX_ELEMENTS,
    QUOTE_LIMIT,
    JsonDatasetError,
    clip,
    dataset_from_json,
)

SPS = "ScheduledProcedureStepSequence"


def nested(levels: int, leaf: dict[str, Any] | None = None) -> dict[str, Any]:
    """Tags with `levels` sequences, each the only item of the one above."""
    tags: dict[str, Any] = leaf or {"PatientName": "DOE^JOHN"}
    for _ in range(levels):
        tags = {SPS: [tags]}
    return tags


def depth_of(ds: pydicom.Dataset) -> int:
    return 1 + depth_of(ds[SPS].value[0]) if SPS in ds else 0


def written(ds: pydicom.Dataset) -> pydicom.Dataset:
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=False, little_endian=True)
    return pydicom.dcmread(io.BytesIO(out.getvalue()), force=True)


def test_a_worklist_as_before() -> None:
    ds = dataset_from_json({
        "PatientName": "DOE^JOHN", "PatientID": "P1", "PatientWeight": 71.5,
        "ReferencedFrameNumber": [1, 2],
        SPS: [{"Modality": "CT", "ScheduledStationAETitle": "CT1"}, {"Modality": "MR"}],
    })
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert ds.PatientWeight == 71.5 and list(ds.ReferencedFrameNumber) == [1, 2]
    assert [it.Modality for it in ds[SPS].value] == ["CT", "MR"]
    assert written(ds)[SPS].value[0].ScheduledStationAETitle == "CT1"
    assert dataset_from_json({"SpecificCharacterSet": "ISO_IR 100"}).SpecificCharacterSet \
        == "ISO_IR 100"


def test_nesting_up_to_the_limit_is_kept() -> None:
    ds = dataset_from_json(nested(MAX_DEPTH))
    assert depth_of(written(ds)) == MAX_DEPTH


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 260, 5000])
def test_deeper_nesting_is_refused_naming_path_and_limit(levels: int) -> None:
    t0 = time.perf_counter()
    with pytest.raises(JsonDatasetError) as e:
        dataset_from_json(nested(levels))
    assert time.perf_counter() - t0 < 1
    message = str(e.value)
    assert f"deeper than {MAX_DEPTH} levels" in message
    assert message.startswith(f"Tags.{SPS}[0].")  # the path, its middle elided
    assert f"{SPS}: sequences nested" in message  # ... down to the sequence refused
    assert len(message) < QUOTE_LIMIT + 60


def test_an_empty_sequence_too_deep_is_refused_too() -> None:
    with pytest.raises(JsonDatasetError, match="deeper than 2 levels"):
        dataset_from_json(nested(2, {SPS: []}), max_depth=2)
    dataset_from_json(nested(1, {SPS: []}), max_depth=2)


def test_element_count_is_bounded() -> None:
    dataset_from_json({SPS: [{} for _ in range(MAX_ELEMENTS - 1)]})
    with pytest.raises(JsonDatasetError, match=f"more than {MAX_ELEMENTS} elements"):
        dataset_from_json({SPS: [{} for _ in range(MAX_ELEMENTS)]})
    with pytest.raises(JsonDatasetError, match="more than 3 elements"):
        dataset_from_json({"PatientName": "A", SPS: [{"Modality": "CT"}, {}]}, max_elements=3)


@pytest.mark.parametrize(
    ("tags", "words"),
    [
        ({"X" * 1_000_000: "v"}, "not a DICOM keyword"),
        ({SPS: [{"Y" * 1_000_000: 1}]}, "not a DICOM keyword"),
        ({"Rows": "x" * 4000}, "invalid literal"),
        ({"Rows": 1e999}, "Rows: cannot convert"),
        ({"PatientName": [{"a": "b" * 100_000}]}, "expected a string"),
        ({SPS: {"Modality": "C" * 100_000}}, "a sequence must be a list"),
        ({SPS: ["Z" * 100_000]}, "must be an object"),
        ("W" * 100_000, "must be an object"),
    ],
)
def test_errors_quote_little_of_the_input(tags: Any, words: str) -> None:
    with pytest.raises(JsonDatasetError, match=words) as e:
        dataset_from_json(tags)
    assert len(str(e.value)) < 2 * QUOTE_LIMIT + 80, str(e.value)[:300]


def test_clip_keeps_both_ends() -> None:
    assert clip("short") == "short"
    text = "a" * 60 + "b" * 60
    assert len(clip(text)) == QUOTE_LIMIT
    assert clip(text).startswith("a" * 48) and clip(text).endswith("b" * 49)
    assert "..." in clip(text)
