"""Fuzzing the parsing entry point: any bytes give a result or a DicomParseError, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipacs.dicomfile import DicomParseError, parse

SEED_FILES: list[bytes] = []


@pytest.fixture(scope="module", autouse=True)
def seeds(small_data: list[Path]) -> None:
    SEED_FILES[:] = [small_data[0].read_bytes(), small_data[-1].read_bytes()]


def check(raw: bytes) -> None:
    try:
        parse(raw)
    except DicomParseError as e:
        assert str(e)  # a message naming the problem


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_files(data: st.DataObject) -> None:
    raw = bytearray(SEED_FILES[data.draw(st.integers(0, 1))])
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        kind = data.draw(st.sampled_from(["flip", "cut", "insert", "length"]))
        if kind == "flip":
            raw[pos] = data.draw(st.integers(0, 255))
        elif kind == "cut":
            del raw[pos:]
            if not raw:
                break
        elif kind == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        else:  # a huge declared length somewhere
            raw[pos : pos + 4] = b"\xff\xff\xff\x7f"
    check(bytes(raw))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes(raw: bytes) -> None:
    check(raw)
    check(b"\0" * 128 + b"DICM" + raw)


@pytest.mark.parametrize("cut", [0, 1, 131, 132, 140, 200, 400, 1000])
def test_truncated_files(cut: int) -> None:
    check(SEED_FILES[0][:cut])


def test_regression_bad_vr_in_file_meta() -> None:
    """Found by fuzzing: pydicom raised NotImplementedError lazily on a bad meta VR."""
    raw = bytearray(SEED_FILES[0])
    at = raw.index(b"\x02\x00\x10\x00UI")  # (0002,0010) Transfer Syntax UID
    raw[at + 4 : at + 6] = b"\x55\x00"
    with pytest.raises(DicomParseError, match="file meta"):
        parse(bytes(raw))


def test_regression_null_in_character_set() -> None:
    """Found by fuzzing: a NUL inside SpecificCharacterSet made the decoder raise ValueError."""
    raw = bytearray(SEED_FILES[0])
    at = raw.index(b"ISO_IR 100")
    raw[at + 1] = 0
    parsed = parse(bytes(raw))  # read as Latin-1, with a warning
    assert parsed.tags[0]["PatientID"]
