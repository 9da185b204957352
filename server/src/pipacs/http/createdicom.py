"""POST /tools/create-dicom: a new instance from JSON tags, an image or PDF as data URIs."""

from __future__ import annotations

import base64
import io
import re
import time
import uuid
from typing import Any

import bottle
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .. import values
from ..config.keys import DEFAULT_ENCODINGS
from ..context import Origin, ServerContext, StoreRefused
from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from ..index import Resource
from ..tagscan import ENCODINGS
from .auth import remote_user
from .common import body_json, flag
from .errors import HttpError
from .resources import store_error, store_json
from .responses import json_response
from .tools import known_keyword

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
DATA_URI = re.compile(r"^data:([^;,]*)(;base64)?,(.*)$", re.S)
# What a child copies from its parent (Orthanc: the patient's and study's, and the series'
# when the parent is a series).
INHERITED = {
    PATIENT: ("PatientID", "PatientName", "PatientBirthDate", "PatientSex"),
    STUDY: ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "StudyDescription",
            "AccessionNumber", "ReferringPhysicianName"),
    SERIES: ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription"),
}


def decode_data_uri(uri: Any) -> tuple[str, bytes]:
    match = DATA_URI.match(uri) if isinstance(uri, str) else None
    if match is None:
        raise HttpError(400, "Bad file format", '"Content" must be a data URI '
                        '("data:image/png;base64,...")')
    mime, is_base64, payload = match.groups()
    try:
        data = base64.b64decode(payload, validate=False) if is_base64 else payload.encode()
    except ValueError:
        raise HttpError(400, "Bad file format", "the data URI is not valid base64") from None
    return mime.lower(), data


def embed_image(ds: Dataset, images: list[bytes]) -> None:
    """PixelData from PNG/JPEG images (one frame each, same size); alpha is dropped."""
    frames = []
    for data in images:
        try:
            image: Image.Image = Image.open(io.BytesIO(data))
            image.load()
        except Exception as e:  # PIL raises many kinds on a damaged image
            raise HttpError(400, "Bad file format", f"not a PNG or JPEG image: {e}") from None
        if image.mode in ("RGBA", "P", "LA", "CMYK"):
            image = image.convert("RGB")
        elif image.mode not in ("L", "RGB", "I;16", "I"):
            image = image.convert("L")
        frames.append(np.asarray(image))
    if len({f.shape for f in frames}) != 1:
        raise HttpError(400, "Bad file format", "the frames have different sizes")
    first = frames[0]
    colour = first.ndim == 3
    bits = 8 if first.dtype == np.uint8 else 16
    ds.Rows, ds.Columns = first.shape[:2]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
    pixels = np.stack(frames).astype(np.uint8 if bits == 8 else np.uint16)
    ds.PixelData = pixels.tobytes()
    ds["PixelData"].VR = "OB" if bits == 8 else "OW"


def set_tags(ds: Dataset, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        keyword = known_keyword(key)
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            items = []
            for item in value:
                sub = Dataset()
                set_tags(sub, item)
                items.append(sub)
            setattr(ds, keyword, Sequence(items))
        elif isinstance(value, str):
            values.set_value(ds, keyword, value)
        else:
            raise HttpError(400, "Bad request", f"the value of {key} must be a string or "
                            "a list of objects")


def build(context: ServerContext, body: dict[str, Any]) -> Dataset:
    tags = body.get("Tags", {})
    if not isinstance(tags, dict):
        raise HttpError(400, "Bad request", '"Tags" must be a JSON object')
    ds = Dataset()
    encoding = context.settings.default_encoding
    ds.SpecificCharacterSet = ENCODINGS.get(encoding, "ISO_IR 100") \
        if encoding in DEFAULT_ENCODINGS else "ISO_IR 100"
    ds.PatientID = str(uuid.uuid4())
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.SOPClassUID = SECONDARY_CAPTURE
    now = time.localtime()
    date, clock = time.strftime("%Y%m%d", now), time.strftime("%H%M%S.000000", now)
    for what in ("Study", "Series", "Acquisition", "Content", "InstanceCreation"):
        setattr(ds, f"{what}Date", date)
        setattr(ds, f"{what}Time", clock)
    parent_id = body.get("Parent")
    if parent_id is not None:
        parent = context.index.get(str(parent_id))
        if parent is None or parent.level == INSTANCE:
            raise HttpError(404, "Unknown resource", f"no patient, study or series {parent_id}")
        node: Resource | None = parent
        while node is not None:
            for kw in INHERITED.get(node.level, ()):
                if node.tags.get(kw, ""):
                    values.set_value(ds, kw, node.tags[kw])
            node = context.index.get_by_id(node.parent) if node.parent is not None else None
    content = body.get("Content")
    if content is not None:
        uris = content if isinstance(content, list) else [content]
        decoded = [decode_data_uri(u.get("Content") if isinstance(u, dict) else u)
                   for u in uris]
        if decoded[0][0] == "application/pdf":
            ds.SOPClassUID = ENCAPSULATED_PDF
            ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
            data = decoded[0][1]
            ds.EncapsulatedDocument = data + b"\0" * (len(data) % 2)
        else:
            embed_image(ds, [d for _, d in decoded])
    set_tags(ds, tags)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def install(app: bottle.Bottle, context: ServerContext) -> None:

    @app.post("/tools/create-dicom")
    def create_dicom() -> str:
        body = body_json(kind=dict)
        flag(body, "Force", False)
        if "Parent" in body and not isinstance(body["Parent"], str):
            raise HttpError(400, "Bad request", '"Parent" must be a resource ID')
        ds = build(context, body)
        buf = io.BytesIO()
        try:
            ds.save_as(buf, enforce_file_format=True)
        except (ValueError, TypeError, AttributeError) as e:
            raise HttpError(400, "Bad request", f"cannot write the instance: {e}") from None
        origin = Origin("RestApi", remote_ip=bottle.request.environ.get("REMOTE_ADDR", ""),
                        http_user=remote_user())
        try:
            result = context.store(buf.getvalue(), origin)
        except StoreRefused as e:
            raise store_error(e) from None
        return json_response(store_json(result))
