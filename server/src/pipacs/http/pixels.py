"""Pixel data as numbers: numpy, MATLAB text, image-int16, raw.gz; an instance's tag tree."""

from __future__ import annotations

import gzip
import io
from typing import Any

import bottle
import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from .. import browse, render
from ..context import ServerContext
from ..ids import INSTANCE, SERIES
from .common import query_flag, resource
from .errors import HttpError
from .frameerrors import frame_errors
from .instances import instance_dataset
from .responses import json_response


def rescaled() -> bool:
    """?rescale: on by default, as in Orthanc ("0" or "false" turn it off)."""
    return "rescale" not in bottle.request.query or query_flag("rescale")

# GET /instances/{id}/frames/{n}: what can be asked of one frame (Orthanc's list).
FRAME_OPERATIONS = ["image-int16", "image-uint16", "image-uint8", "matlab", "numpy", "preview",
                    "raw", "raw.gz", "rendered"]




def frame_values(ds: Dataset, frame: int, rescale: bool = False) -> np.ndarray:
    """One frame's values as Orthanc gives them to numpy: rows x columns x channels."""
    with frame_errors():
        arr = render.decode(ds, frame)
    if rescale and arr.ndim == 2:
        arr = render.rescale(ds, arr).astype(np.float32)
    return arr if arr.ndim == 3 else arr[:, :, np.newaxis]


# One numpy answer holds at most this many values (a 512x512 CT frame is 262,144; 64 Mi
# float32 values are 256 MB built in memory, more than a small Pi should at once).
MAX_VALUES = 64 * 1024 * 1024


def frame_size(ds: Dataset) -> int:
    return int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * int(
        ds.get("SamplesPerPixel", 1) or 1)


def values_within_bound(count: int) -> None:
    if count > MAX_VALUES:
        raise HttpError(400, "Parameter out of range",
                        f"{count} pixel values are more than one answer holds ({MAX_VALUES}): "
                        "ask for one frame at a time (/frames/{n}/numpy)")


def npy(arr: np.ndarray) -> bytes:
    """The .npy (or, with ?compress=true, .npz) bytes of an array."""
    buf = io.BytesIO()
    if query_flag("compress"):
        np.savez_compressed(buf, arr)
    else:
        np.save(buf, arr, allow_pickle=False)
    bottle.response.content_type = "application/octet-stream"
    return buf.getvalue()


def matlab(arr: np.ndarray) -> str:
    """A frame as Orthanc's MATLAB text: double([ v v ; v v ]), rows split by "; "."""
    grey = arr[:, :, 0] if arr.shape[2] == 1 else arr
    if grey.ndim == 3:
        raise HttpError(400, "Incompatible image format", "MATLAB output of a colour image")
    rows = ["".join(f"{int(v)} " for v in row) for row in grey]
    bottle.response.content_type = "text/plain"
    return "double([ " + "; ".join(rows) + "])"


def int16_png(ds: Dataset, frame: int) -> bytes:
    """image-int16: values clamped to -32768..32767, written as a 16-bit PNG (two's
    complement, as Orthanc writes signed images)."""
    arr = frame_values(ds, frame)
    if arr.shape[2] != 1:
        raise HttpError(400, "Incompatible image format", "image-int16 of a colour image")
    out = np.clip(arr[:, :, 0].astype(np.int64), -32768, 32767).astype(np.int16)
    bottle.response.content_type = "image/png"
    return render.encode(out.view(np.uint16), "png")


def content_item(value: Any, path: list[str]) -> Any:
    """Walk /content/{tag}/{index}/{tag}...: a dataset lists its tags, a sequence its item
    indices, an element answers its raw value."""
    node: Any = value
    for step in path:
        if isinstance(node, Dataset):
            try:
                tag = int(step.replace("-", "").replace(",", ""), 16)
            except ValueError:
                raise HttpError(400, "Bad request", f"not a DICOM tag: {step[:40]!r}") from None
            if tag not in node:
                raise HttpError(404, "Inexistent item", f"no tag {step}")
            raw = node.get_item(tag)  # before node[tag] decodes it: the bytes as stored
            elem = node[tag]
            node = elem.value if isinstance(elem.value, Sequence) else \
                raw.value if isinstance(raw, RawDataElement) and \
                isinstance(raw.value, bytes) else elem
        elif isinstance(node, Sequence):
            if not step.isdigit() or int(step) >= len(node):
                raise HttpError(404, "Inexistent item", f"no item {step[:40]}")
            node = node[int(step)]
        else:
            raise HttpError(404, "Inexistent item", f"{step[:40]} is below a value")
    if isinstance(node, Dataset):
        return json_response([f"{e.tag.group:04x}-{e.tag.elem:04x}" for e in node])
    if isinstance(node, Sequence):
        return json_response([str(i) for i in range(len(node))])
    bottle.response.content_type = "application/octet-stream"
    if isinstance(node, bytes):  # as stored, padding included (as Orthanc answers)
        return node
    raw = node.value
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, list | tuple) or type(raw).__name__ == "MultiValue":
        return "\\".join(str(v) for v in raw).encode("utf-8")
    return str(raw if raw is not None else "").encode("utf-8")


def install(app: bottle.Bottle, context: ServerContext) -> None:

    @app.get("/instances/<pid>/frames/<frame:int>")
    def frame_operations(pid: str, frame: int) -> str:
        resource(context, INSTANCE, pid)  # Orthanc checks no frame number here
        return json_response(FRAME_OPERATIONS)

    @app.get("/instances/<pid>/frames/<frame:int>/numpy")
    def frame_numpy(pid: str, frame: int) -> bytes:
        ds = instance_dataset(context, pid)
        if not 0 <= frame < max(1, render.frame_count(ds)):  # Orthanc: 400, not 404, here
            raise HttpError(400, "Parameter out of range",
                            f"frame {frame} does not exist (the instance has "
                            f"{render.frame_count(ds)})")
        return npy(frame_values(ds, frame, rescaled()))

    @app.get("/instances/<pid>/numpy")
    def instance_numpy(pid: str) -> bytes:
        ds = instance_dataset(context, pid)
        rescale = rescaled()
        count = render.frame_count(ds)
        values_within_bound(count * frame_size(ds))
        frames = [frame_values(ds, n, rescale) for n in range(count)]
        if not frames:
            raise HttpError(400, "Incompatible image format", "this instance has no pixel data")
        return npy(np.stack(frames))

    @app.get("/series/<pid>/numpy")
    def series_numpy(pid: str) -> bytes:
        series = resource(context, SERIES, pid)
        rescale = rescaled()
        frames: list[np.ndarray] = []
        instances = browse.descendants(context, series, INSTANCE)
        total = 0
        for inst in sorted(instances, key=lambda r: _instance_number(r.tags)):
            ds = instance_dataset(context, inst.public_id)
            total += render.frame_count(ds) * frame_size(ds)
            values_within_bound(total)
            frames.extend(frame_values(ds, n, rescale) for n in range(render.frame_count(ds)))
        if not frames or len({f.shape for f in frames}) != 1:
            raise HttpError(400, "Incompatible image format",
                            "the series has no frames, or frames of different sizes")
        return npy(np.stack(frames))

    @app.get("/instances/<pid>/frames/<frame:int>/matlab")
    def frame_matlab(pid: str, frame: int) -> str:
        return matlab(frame_values(instance_dataset(context, pid), frame))

    @app.get("/instances/<pid>/matlab")
    def instance_matlab(pid: str) -> str:
        return matlab(frame_values(instance_dataset(context, pid), 0))

    @app.get("/instances/<pid>/frames/<frame:int>/image-int16")
    def frame_int16(pid: str, frame: int) -> bytes:
        return int16_png(instance_dataset(context, pid), frame)

    @app.get("/instances/<pid>/image-int16")
    def instance_int16(pid: str) -> bytes:
        return int16_png(instance_dataset(context, pid), 0)

    @app.get("/instances/<pid>/frames/<frame:int>/raw.gz")
    def frame_raw_gz(pid: str, frame: int) -> bytes:
        ds = instance_dataset(context, pid)
        with frame_errors():
            data = render.raw_frame(ds, frame)
        bottle.response.content_type = "application/gzip"
        return gzip.compress(data, compresslevel=6)

    @app.get("/instances/<pid>/content")
    @app.get("/instances/<pid>/content/<path:path>")
    def content(pid: str, path: str = "") -> Any:
        ds = instance_dataset(context, pid)
        return content_item(ds, [p for p in path.split("/") if p])


def _instance_number(tags: dict[str, str]) -> tuple[int, str]:
    number = tags.get("InstanceNumber", "")
    try:
        return int(number), ""
    except ValueError:
        return 0, number
