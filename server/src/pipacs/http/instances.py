"""Instance content routes: the file, its tags, frames rendered as images, PDFs; shared tags."""

from __future__ import annotations

import os
from typing import Any

import bottle
from pydicom.dataset import Dataset

from .. import browse, dicomfile, render, tagsjson
from ..context import ServerContext
from ..ids import INSTANCE
from ..limits import MAX_IMAGE_SIZE
from ..storage import COMPRESSION_NONE, decode_stored
from .common import LEVEL_ROUTE, PLURALS, query_int, resource
from .errors import HttpError
from .frameerrors import frame_errors
from .responses import json_response

IMAGE_KINDS = "preview|rendered|image-uint8|image-uint16|raw"


def install(app: bottle.Bottle, context: ServerContext) -> None:

    def read(pid: str) -> bytes:
        return instance_bytes(context, pid)

    def dataset(pid: str) -> Dataset:
        return instance_dataset(context, pid)

    @app.get("/instances/<pid>/file")
    def file(pid: str) -> Any:
        body = open_instance(context, pid)
        bottle.response.content_type = "application/dicom"
        bottle.response.set_header("Content-Disposition", f'filename="{pid}.dcm"')
        if not isinstance(body, bytes):  # the length of an open file, HEAD included
            bottle.response.set_header("Content-Length", str(os.fstat(body.fileno()).st_size))
        return body

    @app.get("/instances/<pid>/tags")
    def tags(pid: str) -> str:
        return json_response(tagsjson.to_json(dataset(pid),
                                              tagsjson.mode_of(bottle.request.query)))

    @app.get("/instances/<pid>/simplified-tags")
    def simplified_tags(pid: str) -> str:
        return json_response(tagsjson.to_json(dataset(pid), tagsjson.SIMPLIFY))

    @app.get("/instances/<pid>/header")
    def header(pid: str) -> str:
        meta, _ = dicomfile.split_meta(read(pid))
        if meta is None:
            return json_response({})
        return json_response(tagsjson.to_json(meta, tagsjson.mode_of(bottle.request.query)))

    @app.get("/instances/<pid>/frames")
    def frames(pid: str) -> str:
        return json_response(list(range(render.frame_count(dataset(pid)))))

    @app.get(f"/instances/<pid>/frames/<frame:int>/<kind:re:{IMAGE_KINDS}>")
    def frame_image(pid: str, frame: int, kind: str) -> bytes:
        return image(dataset(pid), frame, kind)

    @app.get(f"/instances/<pid>/<kind:re:{IMAGE_KINDS.replace('|raw', '')}>")
    def first_frame_image(pid: str, kind: str) -> bytes:
        return image(dataset(pid), 0, kind)

    @app.get("/instances/<pid>/pdf")
    def pdf(pid: str) -> bytes:
        ds = dataset(pid)
        if str(ds.get("MIMETypeOfEncapsulatedDocument", "")).strip() != "application/pdf" \
                or "EncapsulatedDocument" not in ds:
            raise HttpError(404, "Inexistent item", "this instance is not an encapsulated PDF")
        data = bytes(ds.EncapsulatedDocument)
        end = data.rfind(b"%%EOF")
        if end >= 0:
            data = data[: end + 5] + data[end + 5:].rstrip(b"\x00")
        bottle.response.content_type = "application/pdf"
        return data

    @app.get(f"/{LEVEL_ROUTE}/<pid>/shared-tags")
    def shared_tags(plural: str, pid: str) -> str:
        res = resource(context, PLURALS[plural], pid)
        mode = tagsjson.mode_of(bottle.request.query)
        shared: dict[str, Any] | None = None
        for inst in browse.descendants(context, res, INSTANCE):
            try:
                raw = context.read_instance(inst.public_id)
            except (KeyError, OSError):
                continue
            ds = dicomfile.read_full(raw)
            del ds[0x7FE00010:0x7FE00011]
            # Orthanc shares string values only: no sequences, no binary (Null) values.
            current = {k: v for k, v in tagsjson.to_json(ds, mode).items()
                       if isinstance(v, str) or (isinstance(v, dict) and v["Type"] == "String")}
            if shared is None:
                shared = current
            else:
                shared = {k: v for k, v in shared.items() if current.get(k) == v}
        return json_response(shared or {})


def instance_bytes(context: ServerContext, pid: str) -> bytes:
    """The stored DICOM file of an instance; 404 for an unknown instance or a missing file."""
    resource(context, INSTANCE, pid)
    try:
        return context.read_instance(pid)
    except KeyError:
        raise HttpError(404, "Unknown resource", f"no instance with ID {pid}") from None
    except FileNotFoundError as e:
        raise HttpError(404, "Inexistent file", str(e)) from None
    except OSError as e:
        raise HttpError(500, "Cannot read the storage area", str(e)) from None


def instance_dataset(context: ServerContext, pid: str) -> Dataset:
    """The stored instance, every element decoded (pixel data included)."""
    try:
        return dicomfile.read_full(instance_bytes(context, pid))
    except (ValueError, EOFError, AttributeError, TypeError) as e:
        raise HttpError(500, "Bad file format", f"the stored file is unreadable: {e}") from None


# Files up to this size are read whole and sent with the header in one packet; larger ones
# are handed to the server as open files (wsgi.file_wrapper), never held in memory whole.
INLINE_FILE_LIMIT = 64 * 1024


def open_instance(context: ServerContext, pid: str) -> Any:
    """The stored file of an instance, for sending: bytes when small or stored compressed,
    else the open file (the server sends it in pieces and closes it).

    The hot path of GET /instances/{id}/file: one index query and no tags decoded. An open
    file stays readable even if the instance is deleted meanwhile.
    """
    row = context.index.instance_file(pid)
    if row is None:
        resource(context, INSTANCE, pid)  # 404 for an unknown instance
        raise HttpError(404, "Inexistent file", f"instance {pid} has no DICOM file")
    file_uuid, compression, size = row
    storage = context.storage
    # StorageArea.path's layout, without pathlib (a tenth of this route's time).
    settled = os.path.join(storage.root, file_uuid[0:2], file_uuid[2:4], file_uuid)
    try:
        try:
            fd = os.open(settled, os.O_RDONLY)
        except FileNotFoundError:  # still staged in .incoming, or settled in between
            fd = os.open(storage.current_path(file_uuid), os.O_RDONLY)
    except FileNotFoundError as e:
        raise HttpError(404, "Inexistent file", f"the file of instance {pid} is missing: "
                        f"{e.strerror}") from None
    except OSError as e:
        raise HttpError(500, "Cannot read the storage area", str(e)) from None
    if compression == COMPRESSION_NONE and size > INLINE_FILE_LIMIT:
        return os.fdopen(fd, "rb")
    try:
        chunks = []
        while chunk := os.read(fd, max(size, 65536)):
            chunks.append(chunk)
        return decode_stored(b"".join(chunks) if len(chunks) != 1 else chunks[0],
                             compression, file_uuid)
    except OSError as e:
        raise HttpError(500, "Cannot read the storage area", str(e)) from None
    finally:
        os.close(fd)


# /rendered fits the image into width x height: no bigger than this (the cap shared with
# DICOMweb's viewport and WADO-URI).
MAX_RENDERED_SIZE = MAX_IMAGE_SIZE


def _accepts_jpeg() -> bool:
    accept = bottle.request.headers.get("Accept", "")
    return "image/jpeg" in accept and "image/png" not in accept


def image(ds: Dataset, frame: int, kind: str) -> bytes:
    q = bottle.request.query
    try:
        with frame_errors():
            if kind == "raw":
                data = render.raw_frame(ds, frame)
                bottle.response.content_type = render.raw_media(ds)
                return data
            arr = render.decode(ds, frame)
            if kind in ("image-uint8", "image-uint16"):
                bits = 8 if kind == "image-uint8" else 16
                out = render.clamp(arr, bits) if arr.ndim == 2 or bits == 16 else arr
                if out.ndim == 3 and bits == 16:
                    raise HttpError(400, "Not implemented", "image-uint16 of a colour image")
                bottle.response.content_type = "image/png"
                return render.encode(out, "png")
            window = None
            if kind == "rendered":
                values = render.rescale(ds, arr) if arr.ndim == 2 else arr
                window = render.default_window(ds, values)
                center, width = q.get("window-center"), q.get("window-width")
                if center is not None and width is not None:
                    window = render.Window(float(center), max(float(width), 1.0))
            out = render.to_8bit(ds, arr, window)
            if kind == "rendered":
                width = query_int("width", 0, MAX_RENDERED_SIZE)
                height = query_int("height", 0, MAX_RENDERED_SIZE)
                out = render.resize(out, width, height,
                                    q.get("smooth", "").lower() not in ("0", "false"))
            quality = int(q.get("quality", 90) or 90)  # checked even when the answer is PNG
            if not 1 <= quality <= 100:
                raise HttpError(400, "Parameter out of range", "quality must be 1 to 100")
            if _accepts_jpeg():
                bottle.response.content_type = "image/jpeg"
                return render.encode(out, "jpeg", quality)
            bottle.response.content_type = "image/png"
            return render.encode(out, "png")
    except ValueError as e:
        raise HttpError(400, "Bad request", str(e)) from None
