"""DICOMweb rendered resources and frames: the query arguments (frames, quality, window,
viewport, Accept) and one frame drawn as JPEG or PNG."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

from .. import render
from ..http.errors import HttpError
from ..http.frameerrors import frame_errors
from ..limits import MAX_IMAGE_SIZE
from . import dicomweb_multipart as mp

# The media type of a frame stored in each compressed transfer syntax.
FRAME_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
THUMBNAIL_SIZE = 128


def frame_list(text: str | None) -> list[int]:
    try:
        numbers = [int(x) for x in (text or "").split(",") if x.strip()]
    except ValueError:
        numbers = []
    if not numbers or len(numbers) > 10000 or any(n < 1 for n in numbers):
        raise HttpError(400, "Bad request",
                        f"frames must be a comma-separated list of numbers from 1, "
                        f"not {(text or '')[:40]!r}")
    return numbers


def image_format(accept: str) -> str:
    """jpeg unless the client prefers PNG; 406 when it accepts neither."""
    entries = mp.parse_accept(accept)
    if not entries:
        return "jpeg"
    for a in entries:
        if a.media in ("image/jpeg", "image/*", "*/*"):
            return "jpeg"
        if a.media == "image/png":
            return "png"
    raise HttpError(406, "Not acceptable", "rendered resources are image/jpeg or image/png")


def window_arg(text: str | None) -> tuple[float, float, str] | None:
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        center, width = float(parts[0]), float(parts[1])
    except (ValueError, IndexError):
        raise HttpError(400, "Bad request", "window must be center,width[,function]") from None
    function = parts[2].lower() if len(parts) > 2 and parts[2] else "linear"
    if function not in ("linear", "linear_exact", "sigmoid"):
        raise HttpError(400, "Bad request", "the window function must be linear, "
                        "linear_exact or sigmoid")
    if not (np.isfinite(center) and np.isfinite(width) and width > 0):
        raise HttpError(400, "Bad request", "the window needs a finite center and a width > 0")
    return center, width, function


def viewport_arg(text: str | None) -> tuple[int, int, tuple[int, int, int, int] | None] | None:
    if not text:
        return None
    try:
        parts = [int(float(p)) if p.strip() else 0 for p in text.split(",")]
    except ValueError:
        raise HttpError(400, "Bad request", "viewport must be vw,vh[,sx,sy,sw,sh]") from None
    if len(parts) not in (2, 6) or parts[0] < 0 or parts[1] < 0:
        raise HttpError(400, "Bad request", "viewport must be vw,vh[,sx,sy,sw,sh]")
    return parts[0], parts[1], (parts[2], parts[3], parts[4], parts[5]) if len(parts) == 6 else None


def render_frame(ds: Dataset, frame: int, fmt: str, quality: int,
                 window: tuple[float, float, str] | None,
                 viewport: tuple[int, int, tuple[int, int, int, int] | None] | None) -> bytes:
    """One frame as JPEG or PNG: windowed (the file's window by default), cropped and fitted
    into the viewport (WADO-URI's rows and columns as well), at most MAX_IMAGE_SIZE a side."""
    if viewport is not None and max(viewport[:2]) > MAX_IMAGE_SIZE:
        raise HttpError(400, "Bad request", f"the image asked for is {viewport[0]} x "
                        f"{viewport[1]} pixels: at most {MAX_IMAGE_SIZE} a side")
    with frame_errors():
        arr = render.decode(ds, frame)
        if arr.ndim == 2:
            values = render.rescale(ds, arr)
            if window is None:
                w = render.default_window(ds, values)
                center, width, function = w.center, w.width, "linear"
            else:
                center, width, function = window
            if function == "sigmoid":
                out = 255.0 / (1.0 + np.exp(-4.0 * (values - center) / width))
            else:
                lo = center - 0.5 - (width - 1) / 2 if function == "linear" else center - width / 2
                out = (values - lo) * (255.0 / width)
            img = np.clip(out, 0, 255).astype(np.uint8)
            if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
                img = 255 - img
        else:
            img = arr.astype(np.uint8) if arr.dtype != np.uint8 else arr
        if viewport is not None:
            vw, vh, region = viewport
            if region is not None:
                sx, sy, sw, sh = region
                cols, rows = img.shape[1], img.shape[0]
                sw = sw or cols - sx
                sh = sh or rows - sy
                x0, x1 = sorted((sx, sx + sw))
                y0, y1 = sorted((sy, sy + sh))
                crop = img[max(0, y0):max(0, y1), max(0, x0):max(0, x1)]
                if crop.size == 0:
                    raise HttpError(400, "Bad request", "the viewport region is outside the image")
                img = crop[:: -1 if sh < 0 else 1, :: -1 if sw < 0 else 1]
            img = render.resize(np.ascontiguousarray(img), vw, vh, True)
        return render.encode(img, fmt, quality)
