"""Pixel values as NumPy arrays (`.npy`), as Orthanc 1.10 serves them: what a notebook, a
script or the viewer's region statistics need, in the modality's units (Hounsfield for CT).

GET /instances/{id}/frames/{n}/numpy is one frame, shape (rows, columns, samples); GET
/instances/{id}/numpy is every frame, shape (frames, rows, columns, samples). `rescale`
(default true) applies RescaleSlope/Intercept to grayscale images as float32; `rescale=0`
keeps the stored integers. `compress=1` answers a zip (`.npz`, the array as `arr_0`).
"""

from __future__ import annotations

import io
from typing import Any

import bottle
import numpy as np

from .. import render
from ..context import ServerContext
from .errors import HttpError
from .instances import instance_dataset

# One answer holds at most this many pixel values (a 512x512 CT frame is 262,144; 64 Mi
# float32 values are 256 MB on the way, more than a small Pi should build at once).
MAX_VALUES = 64 * 1024 * 1024


def _frame_values(ds: Any, frame: int, rescale: bool) -> np.ndarray:
    arr = render.decode(ds, frame)
    if arr.ndim == 2:
        arr = (render.rescale(ds, arr) if rescale else arr)[:, :, np.newaxis]
    return arr


def _answer(arr: np.ndarray, compress: bool) -> bytes:
    out = io.BytesIO()
    if compress:
        np.savez_compressed(out, arr)
    else:
        np.save(out, arr, allow_pickle=False)
    bottle.response.content_type = "application/octet-stream"
    return out.getvalue()


def install(app: bottle.Bottle, context: ServerContext) -> None:
    def values(pid: str, single: int | None) -> bytes:
        ds = instance_dataset(context, pid)
        query = bottle.request.query
        rescale = query.get("rescale", "1").lower() not in ("0", "false")
        compress = query.get("compress", "0").lower() not in ("0", "false")
        try:
            count = render.frame_count(ds)
            if count == 0:
                raise render.RenderError("this instance has no pixel data")
            wanted = range(count) if single is None else range(single, single + 1)
            size = len(wanted) * int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
            if size > MAX_VALUES:
                raise HttpError(400, "Parameter out of range",
                                f"{len(wanted)} frames of {ds.Rows}x{ds.Columns} are more than "
                                f"{MAX_VALUES} values: ask for one frame at a time")
            arrays = [_frame_values(ds, f, rescale) for f in wanted]
        except IndexError as e:
            raise HttpError(400, "Parameter out of range", str(e)) from None
        except render.RenderError as e:
            raise HttpError(400, "Incompatible image format", str(e)) from None
        return _answer(arrays[0] if single is not None else np.stack(arrays), compress)

    @app.get("/instances/<pid>/frames/<frame:int>/numpy")
    def frame_numpy(pid: str, frame: int) -> bytes:
        return values(pid, frame)

    @app.get("/instances/<pid>/numpy")
    def instance_numpy(pid: str) -> bytes:
        return values(pid, None)
