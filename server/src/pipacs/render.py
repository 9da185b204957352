"""Frames as images: one frame decoded at a time with pydicom, encoded with Pillow."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRBigEndian

from . import pixels
from .values import is_multi

logger = logging.getLogger(__name__)


class RenderError(ValueError):
    """The instance has no image pipacs can decode; the message says why."""


class CodecMissing(RenderError):
    """No decoder for the transfer syntax here (Orthanc: 415); the message names the syntax
    and what would decode it."""


@dataclass
class Window:
    center: float
    width: float


def frame_count(ds: Dataset) -> int:
    if "PixelData" not in ds:
        return 0
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _check_frame(ds: Dataset, frame: int) -> None:
    n = frame_count(ds)
    if n == 0:
        raise RenderError("this instance has no pixel data")
    if not 0 <= frame < n:
        raise IndexError(f"frame {frame} does not exist (the instance has {n})")


def raw_frame(ds: Dataset, frame: int) -> bytes:
    """The frame's bytes as stored: a slice of native pixel data, or the compressed frame."""
    _check_frame(ds, frame)
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        for i, data in enumerate(generate_frames(ds.PixelData,
                                                 number_of_frames=frame_count(ds))):
            if i == frame:
                return bytes(data)
        raise IndexError(f"frame {frame} is missing from the encapsulated data")
    rows, cols = int(ds.Rows), int(ds.Columns)
    spp = int(ds.get("SamplesPerPixel", 1))
    bits = int(ds.BitsAllocated)
    size = rows * cols * spp * bits // 8
    data = bytes(ds.PixelData[frame * size:(frame + 1) * size])
    if ds.file_meta.TransferSyntaxUID == ExplicitVRBigEndian and bits in (16, 32):
        # little endian, as Orthanc answers it (DCMTK swaps big endian data when it reads)
        data = np.frombuffer(data, f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
    return data


# Orthanc's Content-Type of a raw frame: JPEG baseline and JPEG 2000 have one, the rest are
# application/octet-stream.
RAW_MEDIA = {"1.2.840.10008.1.2.4.50": "image/jpeg", "1.2.840.10008.1.2.4.90": "image/jp2",
             "1.2.840.10008.1.2.4.91": "image/jp2"}


def raw_media(ds: Dataset) -> str:
    return RAW_MEDIA.get(str(ds.file_meta.TransferSyntaxUID), "application/octet-stream")


def decode(ds: Dataset, frame: int) -> np.ndarray:
    """One frame as an array (rows x columns, or rows x columns x 3 for colour)."""
    _check_frame(ds, frame)
    from pydicom.pixels import pixel_array

    missing = pixels.missing_decoder(ds.file_meta.TransferSyntaxUID,
                                     int(ds.get("BitsStored", 8) or 8))
    if missing:
        raise CodecMissing(missing)
    try:
        arr = pixel_array(ds, index=frame, raw=False)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError, KeyError) as e:
        raise RenderError(f"cannot decode the pixel data ({e})") from e
    return arr  # colour as RGB: pydicom converts YBR_* itself (as_rgb)


def _is_color(arr: np.ndarray) -> bool:
    return arr.ndim == 3


def rescale(ds: Dataset, arr: np.ndarray) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope == 1 and intercept == 0:
        return arr.astype(np.float32)
    return arr.astype(np.float32) * slope + intercept


def default_window(ds: Dataset, values: np.ndarray) -> Window:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    try:
        if center is not None and width is not None:
            c = float(center[0] if is_multi(center) else center)
            w = float(width[0] if is_multi(width) else width)
            if w > 0:
                return Window(c, w)
    except (TypeError, ValueError, IndexError):
        pass
    lo, hi = float(values.min()), float(values.max())
    return Window((lo + hi) / 2, max(hi - lo, 1.0))


def to_8bit(ds: Dataset, arr: np.ndarray, window: Window | None) -> np.ndarray:
    """Grey levels through a window (the full range when None), inverted for MONOCHROME1."""
    if _is_color(arr):
        return arr.astype(np.uint8) if arr.dtype != np.uint8 else arr
    values = rescale(ds, arr)
    if window is None:
        lo, hi = float(values.min()), float(values.max())
    else:
        lo = window.center - window.width / 2
        hi = window.center + window.width / 2
    span = hi - lo if hi > lo else 1.0
    out = np.clip((values - lo) * (255.0 / span), 0, 255).astype(np.uint8)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        out = 255 - out
    return out


def encode(arr: np.ndarray, fmt: str, quality: int = 90) -> bytes:
    """PNG or JPEG bytes of an 8-bit (or 16-bit grey, PNG only) image."""
    if arr.dtype == np.uint16:
        image = Image.fromarray(arr.astype(np.uint16))
    else:
        image = Image.fromarray(arr)
    buf = io.BytesIO()
    if fmt == "jpeg":
        if image.mode not in ("L", "RGB"):
            image = image.convert("L")
        image.save(buf, format="JPEG", quality=quality)
    else:
        image.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def clamp(arr: np.ndarray, bits: int) -> np.ndarray:
    """Values clamped to 0..2^bits-1 (Orthanc's image-uint8 and image-uint16)."""
    top = (1 << bits) - 1
    out = np.clip(arr.astype(np.int64), 0, top)
    return out.astype(np.uint8 if bits == 8 else np.uint16)


def resize(arr: np.ndarray, width: int, height: int, smooth: bool) -> np.ndarray:
    """Fit inside width x height (0: free), keeping the aspect ratio."""
    rows, cols = arr.shape[:2]
    if not width and not height:
        return arr
    scale_w = width / cols if width else float("inf")
    scale_h = height / rows if height else float("inf")
    scale = min(scale_w, scale_h)
    size = (max(1, round(cols * scale)), max(1, round(rows * scale)))
    resample = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
    return np.asarray(Image.fromarray(arr).resize(size, resample))
