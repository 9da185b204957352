"""What decoding and rendering a frame raise, answered as Orthanc answers them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .. import render
from .errors import HttpError


@contextlib.contextmanager
def frame_errors() -> Iterator[None]:
    """A frame that does not exist is a 404; a transfer syntax this Pi has no decoder for a
    415 naming it; pixel data that cannot be decoded a 400."""
    try:
        yield
    except IndexError as e:
        raise HttpError(404, "Inexistent item", str(e)) from None
    except render.CodecMissing as e:
        raise HttpError(415, "Not implemented", str(e)) from None
    except render.RenderError as e:
        raise HttpError(400, "Incompatible image format", str(e)) from None
