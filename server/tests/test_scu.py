"""The DICOM SCU: C-ECHO and C-STORE from pipacs to a real storescp."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pipacs import config
from pipacs.context import ServerContext
from pipacs.dicom.scu import Scu, ScuError
from pipacs.ids import INSTANCE, STUDY


def context_with(tmp_path: Path, storescp, **overrides: object) -> ServerContext:  # type: ignore[no-untyped-def]
    data = {
        "StorageDirectory": str(tmp_path / "st"),
        "DicomModalities": {
            "scp": [storescp.aet, "127.0.0.1", storescp.port],
            "nobody": ["NOBODY", "127.0.0.1", 1],
        },
        **overrides,
    }
    settings, _ = config.build_settings(data, tmp_path)
    return ServerContext(settings)


def test_echo_and_store_a_study(tmp_path, storescp, small_data) -> None:  # type: ignore[no-untyped-def]
    ctx = context_with(tmp_path, storescp, DicomAssociationCloseDelay=0)
    results = [ctx.store(f.read_bytes()) for f in small_data[:20]]
    scu = Scu(ctx)
    scu.echo(ctx.settings.modalities["scp"])
    report = scu.store(ctx.settings.modalities["scp"], [results[0].ids[STUDY]])
    assert report.sent == 20 and report.failed == []
    deadline = time.monotonic() + 5
    while len(storescp.files()) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(storescp.files()) == 20
    ctx.stop()


def test_idle_association_is_reused_then_closed(tmp_path, storescp, small_data) -> None:  # type: ignore[no-untyped-def]
    ctx = context_with(tmp_path, storescp, DicomAssociationCloseDelay=1)
    r = ctx.store(small_data[0].read_bytes())
    scu = Scu(ctx)
    modality = ctx.settings.modalities["scp"]
    scu.store(modality, [r.ids[INSTANCE]])
    (assoc, _), = scu._idle.values()
    scu.store(modality, [r.ids[INSTANCE]])
    (again, _), = scu._idle.values()
    assert again is assoc and assoc.is_established
    time.sleep(1.5)
    assert not scu._idle and not assoc.is_established
    scu.close()
    ctx.stop()


def test_unreachable_modality_is_a_clear_error(tmp_path, storescp) -> None:  # type: ignore[no-untyped-def]
    ctx = context_with(tmp_path, storescp)
    with pytest.raises(ScuError, match=r"nobody \(NOBODY@127.0.0.1:1\)"):
        Scu(ctx).echo(ctx.settings.modalities["nobody"])
    ctx.stop()
