"""DICOMweb (PS3.18): QIDO-RS, WADO-RS, STOW-RS and WADO-URI, in place of Orthanc's plugin."""

from __future__ import annotations

import io
import json
import logging
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import bottle
from pydicom.dataset import Dataset

from .. import dicomfile, render
from ..archive import UnreadableFile, check_file, read_file
from ..context import Origin, ServerContext, StoreRefused
from ..http.archives import start_stream, unreadable_error
from ..http.auth import remote_user
from ..http.common import int_value
from ..http.errors import HttpError
from ..ids import INSTANCE, SERIES, STUDY
from . import dicomweb_multipart as mp
from .dicomweb_json import ROOT_MARK, hex_tag
from .dicomweb_metadata import InstanceRow, MetadataStore, instance_by_row, instances
from .dicomweb_qido import ADDITIONAL_RESULTS, BadQuery, Qido, parse_query, valid_uid
from .dicomweb_render import (
    FRAME_MEDIA,
    THUMBNAIL_SIZE,
    frame_list,
    image_format,
    render_frame,
    viewport_arg,
    window_arg,
)
from .dicomweb_transcode import negotiate_dicom, transcoded

logger = logging.getLogger(__name__)

NAME = "dicom-web"
SECTION = "dicom_web"

DICOM_JSON = "application/dicom+json"
METADATA_MODES = ("Full", "MainDicomTags", "Extrapolate")
# Failure reasons of STOW-RS (PS3.18 Table 10.5.3-2 and PS3.4 Annex B).
FAILURE = {
    "Failure": 0x0110,  # processing failure
    "Filtered": 0x0124,  # refused by a hook: not authorised
    "Full": 0xA700,  # out of resources
    "BadFile": 0xC000,  # cannot understand
}
# An instance posted to /studies/{uid} of another study. PS3.18 names no reason of its own;
# "the data set does not match" (A900) is the closest.
STUDY_MISMATCH = 0xA900


@dataclass
class Options:
    """The DicomWeb section, with Orthanc's defaults."""

    root: str = "/dicom-web"
    enable_wado: bool = True
    wado_root: str = "/wado"
    host: str = ""
    ssl: bool = False
    qido_case_sensitive: bool = True
    studies_metadata: str = "Full"
    series_metadata: str = "Full"
    metadata_cache: bool = True

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> Options:
        o = cls()
        root = str(section.get("Root", "/dicom-web/"))
        o.root = "/" + root.strip("/") if root.strip("/") else ""
        o.enable_wado = bool(section.get("EnableWado", True))
        o.wado_root = "/" + str(section.get("WadoRoot", "/wado")).strip("/")
        o.host = str(section.get("Host", "") or "")
        o.ssl = bool(section.get("Ssl", False))
        o.qido_case_sensitive = bool(section.get("QidoCaseSensitive", True))
        o.metadata_cache = bool(section.get("EnableMetadataCache", True))
        for key, attr in (("StudiesMetadata", "studies_metadata"),
                          ("SeriesMetadata", "series_metadata")):
            mode = section.get(key, "Full")
            if mode not in METADATA_MODES:
                logger.warning("DicomWeb.%s: %r is not one of %s; using Full", key, mode,
                               ", ".join(METADATA_MODES))
                mode = "Full"
            # "Extrapolate" makes Orthanc guess series-wide tags from a few files; pipacs reads
            # every file once and caches the result, so it answers "Full" at about that cost.
            setattr(o, attr, "MainDicomTags" if mode == "MainDicomTags" else "Full")
        return o


def install(app: bottle.Bottle | None, context: ServerContext) -> None:
    if app is None:
        return
    DicomWeb(context, Options.from_section(context.settings.dicom_web)).install(app)


class DicomWeb:
    def __init__(self, context: ServerContext, options: Options):
        self.context = context
        self.options = options
        self.metadata = MetadataStore(context, options.metadata_cache)
        self.qido = Qido(context, options.qido_case_sensitive, self._instance_extra)

    # ------------------------------------------------------------ routes

    def install(self, app: bottle.Bottle) -> None:
        r = self.options.root
        st, se, sop = "<study>", "<series>", "<sop>"
        inst = f"{r}/studies/{st}/series/{se}/instances/{sop}"
        get = app.get
        get(f"{r}/studies")(lambda: self.search(STUDY))
        get(f"{r}/series")(lambda: self.search(SERIES))
        get(f"{r}/instances")(lambda: self.search(INSTANCE))
        get(f"{r}/studies/{st}/series")(lambda study: self.search(SERIES, study))
        get(f"{r}/studies/{st}/instances")(lambda study: self.search(INSTANCE, study))
        get(f"{r}/studies/{st}/series/{se}/instances")(
            lambda study, series: self.search(INSTANCE, study, series))
        get(f"{r}/studies/{st}")(self.retrieve)
        get(f"{r}/studies/{st}/series/{se}")(self.retrieve)
        get(inst)(self.retrieve)
        get(f"{r}/studies/{st}/metadata")(self.retrieve_metadata)
        get(f"{r}/studies/{st}/series/{se}/metadata")(self.retrieve_metadata)
        get(f"{inst}/metadata")(self.retrieve_metadata)
        get(f"{inst}/frames/<frames>")(self.retrieve_frames)
        get(f"{inst}/bulk/<path:path>")(self.retrieve_bulk)
        for kind in ("rendered", "thumbnail"):
            for prefix in (f"{r}/studies/{st}", f"{r}/studies/{st}/series/{se}", inst):
                get(f"{prefix}/{kind}")(self._rendered_route(kind))
            get(f"{inst}/frames/<frames>/{kind}")(self._rendered_route(kind))
        app.post(f"{r}/studies")(self.store)
        app.post(f"{r}/studies/{st}")(self.store)
        if self.options.enable_wado:
            get(self.options.wado_root)(self.wado_uri)

    def _rendered_route(self, kind: str) -> Any:
        def route(study: str, series: str | None = None, sop: str | None = None,
                  frames: str | None = None) -> bytes:
            return self.rendered(kind, study, series, sop, frames)
        return route

    # ------------------------------------------------------------ helpers

    def base_url(self) -> str:
        """The root URL clients reach us at: DicomWeb.Host/Ssl, else what the request says."""
        req = bottle.request
        scheme = "https" if self.options.ssl else req.urlparts.scheme or "http"
        host = self.options.host or req.headers.get("Host", "")
        forwarded = req.headers.get("Forwarded", "")
        if forwarded and not self.options.host:
            for item in forwarded.split(",")[0].split(";"):
                k, _, v = item.strip().partition("=")
                if k.lower() == "host" and v:
                    host = v.strip('"')
                elif k.lower() == "proto" and v in ("http", "https"):
                    scheme = v
        if not host:
            host = f"127.0.0.1:{self.context.settings.http_port}"
        elif not self.options.host and not forwarded and ":" not in host.rpartition("]")[2]:
            # Some clients (dicomweb-client) send Host without the port; Orthanc then answers
            # URLs that point at port 80. Without a proxy in between, the port is ours.
            port = str(req.environ.get("SERVER_PORT", ""))
            if port and port != ("443" if scheme == "https" else "80"):
                host = f"{host}:{port}"
        return f"{scheme}://{host}{self.options.root}/"

    @staticmethod
    def _check_uids(*uids: str | None) -> None:
        for uid in uids:
            if uid is not None and not valid_uid(uid):
                raise HttpError(400, "Bad request", f"{uid[:80]!r} is not a valid DICOM UID")

    def _instances(self, study: str, series: str | None = None,
                   sop: str | None = None) -> list[InstanceRow]:
        self._check_uids(study, series, sop)
        rows = instances(self.context, study, series, sop)
        if not rows:
            what = "instance" if sop else "series" if series else "study"
            raise HttpError(404, "Unknown resource", f"no {what} with this UID")
        return rows

    def _instance_extra(self, rid: int, public_id: str) -> dict[str, Any]:
        """Full metadata of one instance (QIDO attributes the index does not keep)."""
        inst = instance_by_row(self.context, rid)
        if inst is None:
            return {}
        try:
            return self.metadata.full_json(inst)
        except (KeyError, OSError, ValueError, EOFError, AttributeError, TypeError):
            return {}

    def _read(self, inst: InstanceRow) -> bytes:
        """The instance's file. One that is missing (404), unreadable or damaged (500) is an
        "Inexistent file" naming the instance, logged once; a deleted instance a 404."""
        try:
            data = read_file(self.context, inst.public_id, inst.sop_uid)
        except UnreadableFile as e:
            logger.error("%s %s: %s: refused", bottle.request.method, bottle.request.path,
                         e.details)
            raise unreadable_error(e) from None
        if data is None:
            raise HttpError(404, "Unknown resource", "the instance has been deleted")
        return data

    def _dataset(self, inst: InstanceRow) -> Dataset:
        data = self._read(inst)
        try:
            return dicomfile.read_full(data)
        except (ValueError, EOFError, AttributeError, TypeError) as e:
            raise HttpError(500, "Bad file format", f"the stored file is unreadable: {e}"
                            ) from None

    # ------------------------------------------------------------ QIDO-RS

    def search(self, level: int, study: str | None = None, series: str | None = None) -> str:
        self._check_uids(study, series)
        scope = {}
        if study is not None:
            scope[STUDY] = study
        if series is not None:
            scope[SERIES] = series
        try:
            q = parse_query(level, scope, list(bottle.request.query.allitems()))
            answer, more = self.qido.search(q, self.base_url())
        except BadQuery as e:
            raise HttpError(400, "Bad request", str(e)) from None
        if more:
            bottle.response.set_header("Warning", ADDITIONAL_RESULTS)
        bottle.response.content_type = DICOM_JSON
        return json.dumps(answer, separators=(",", ":"))

    # ------------------------------------------------------------ WADO-RS

    def retrieve(self, study: str, series: str | None = None, sop: str | None = None) -> Any:
        """The instances as multipart/related, streamed. Every file is checked first: a
        missing (404) or unreadable (500) one is an "Inexistent file" naming the instance,
        before the first byte; one failing once streaming has started cuts the transfer, never a
        well-formed answer without it. An instance deleted meanwhile is left out."""
        rows = self._instances(study, series, sop)
        wanted = negotiate_dicom(bottle.request.headers.get("Accept", ""), rows)
        what = f"WADO-RS {bottle.request.method} {bottle.request.path}"
        context = self.context
        try:
            for inst in rows:
                check_file(context, inst.public_id, inst.file_uuid, inst.sop_uid)
        except UnreadableFile as e:
            logger.error("%s: %s: refused", what, e.details)
            raise unreadable_error(e) from None

        def parts() -> Iterator[tuple[str, bytes, dict[str, str]]]:
            for inst in rows:
                data = read_file(context, inst.public_id, inst.sop_uid)
                if data is None:
                    continue
                syntax = inst.transfer_syntax
                if wanted and syntax not in wanted:  # transcoded, as Orthanc's plugin does
                    syntax, data = transcoded(context, inst, data, wanted)
                ctype = "application/dicom"
                if syntax:
                    ctype += f"; transfer-syntax={syntax}"
                yield ctype, data, {}


        boundary = mp.new_boundary()
        answer = start_stream(mp.stream(parts(), boundary), what)
        bottle.response.content_type = mp.content_type("application/dicom", boundary)
        return answer

    def retrieve_metadata(self, study: str, series: str | None = None,
                          sop: str | None = None) -> str:
        rows = self._instances(study, series, sop)
        mode = "Full"
        if sop is None:
            mode = self.options.series_metadata if series else self.options.studies_metadata
        text = "[" + ",".join(self.metadata.answer(rows, mode, whole=sop is None)) + "]"
        bottle.response.content_type = DICOM_JSON
        return text.replace(ROOT_MARK, self.base_url())

    def retrieve_frames(self, study: str, series: str, sop: str, frames: str) -> Any:
        numbers = frame_list(frames)
        inst = self._instances(study, series, sop)[0]
        ds = self._dataset(inst)
        try:
            data = [render.raw_frame(ds, n - 1) for n in numbers]
        except IndexError as e:
            raise HttpError(404, "Inexistent item", str(e)) from None
        except render.RenderError as e:
            raise HttpError(400, "Bad request", str(e)) from None
        media = FRAME_MEDIA.get(inst.transfer_syntax, "application/octet-stream")
        ctype = media if media == "application/octet-stream" else \
            f"{media}; transfer-syntax={inst.transfer_syntax}"
        boundary = mp.new_boundary()
        bottle.response.content_type = mp.content_type(media, boundary)
        return b"".join(mp.stream(((ctype, d, {}) for d in data), boundary))

    def retrieve_bulk(self, study: str, series: str, sop: str, path: str) -> bytes:
        inst = self._instances(study, series, sop)[0]
        ds: Any = self._dataset(inst)
        steps = path.strip("/").split("/")
        if len(steps) % 2 == 0:
            raise HttpError(400, "Bad request", f"bad bulk data path {path[:80]!r}")
        try:
            for i, step in enumerate(steps):
                if i % 2 == 0:
                    tag = int(step, 16)
                    if len(step) != 8 or tag not in ds:
                        raise KeyError(step)
                    elem = ds[tag]
                else:
                    ds = elem.value[int(step) - 1]
        except (ValueError, KeyError, IndexError, TypeError):
            raise HttpError(404, "Inexistent item", f"no bulk data at {path[:80]!r}") from None
        value = elem.value
        if not isinstance(value, bytes | bytearray):
            raise HttpError(404, "Inexistent item", "this element holds no binary value")
        boundary = mp.new_boundary()
        bottle.response.content_type = mp.content_type("application/octet-stream", boundary)
        return b"".join(mp.stream([("application/octet-stream", bytes(value), {})], boundary))

    # ------------------------------------------------------------ rendered resources

    def rendered(self, kind: str, study: str, series: str | None, sop: str | None,
                 frames: str | None) -> bytes:
        rows = self._instances(study, series, sop)
        inst = rows[0]
        frame = frame_list(frames)[0] - 1 if frames else 0
        q = bottle.request.query
        fmt = image_format(bottle.request.headers.get("Accept", ""))
        quality = int_value(q.get("quality"), "quality", 90, 1, 100)
        window = window_arg(q.get("window"))
        viewport = viewport_arg(q.get("viewport"))
        if kind == "thumbnail" and viewport is None:
            viewport = (THUMBNAIL_SIZE, THUMBNAIL_SIZE, None)
        ds = self._dataset(inst)
        data = render_frame(ds, frame, fmt, quality, window, viewport)
        bottle.response.content_type = f"image/{fmt}"
        return data

    # ------------------------------------------------------------ STOW-RS

    def store(self, study: str | None = None) -> str:
        self._check_uids(study)
        header = bottle.request.headers.get("Content-Type", "")
        media, params = mp.parse_media_type(header)
        if media != "multipart/related":
            raise HttpError(415, "Unsupported media type",
                            'STOW-RS takes multipart/related; type="application/dicom"')
        inner = params.get("type", "application/dicom").lower()
        if inner != "application/dicom":
            raise HttpError(415, "Unsupported media type",
                            f"parts of type {inner!r} are not supported: send application/dicom")
        body = bottle.request.body
        data: bytes | mmap.mmap
        mapped = None
        try:
            if isinstance(body, io.BytesIO):
                data = body.getvalue()
            else:
                body.seek(0, 2)
                if body.tell() == 0:
                    data = b""
                else:
                    mapped = data = mmap.mmap(body.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                parts = mp.split_parts(data, params.get("boundary", ""))
            except mp.MultipartError as e:
                raise HttpError(400, "Bad request", f"malformed multipart body: {e}") from None
            if not parts:
                raise HttpError(400, "Bad request", "the multipart body holds no part")
            return self._store_parts(data, parts, study)
        finally:
            if mapped is not None:
                mapped.close()

    def _store_parts(self, data: bytes | mmap.mmap, parts: list[mp.Part],
                     study: str | None) -> str:
        origin = Origin(kind="RestApi", remote_ip=bottle.request.remote_addr or "",
                        http_user=remote_user())
        base = self.base_url()
        stored: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        studies: set[str] = set()
        for part in parts:
            ptype, _ = mp.parse_media_type(part.content_type or "application/dicom")
            if ptype != "application/dicom":
                failed.append(_sop_item("", "", FAILURE["BadFile"]))
                continue
            raw = data[part.start:part.end]
            try:
                parsed = dicomfile.parse(raw, self.context.settings.default_encoding)
            except dicomfile.DicomParseError as e:
                logger.info("STOW-RS: a part is not DICOM: %s", e)
                failed.append(_sop_item("", "", FAILURE["BadFile"]))
                continue
            uids = parsed.uids
            if study is not None and uids[STUDY] != study:
                failed.append(_sop_item(parsed.sop_class_uid, uids[INSTANCE], STUDY_MISMATCH))
                continue
            try:
                self.context.store(raw, origin)
            except StoreRefused as e:
                logger.info("STOW-RS: %s refused: %s", uids[INSTANCE], e.message)
                failed.append(_sop_item(parsed.sop_class_uid, uids[INSTANCE],
                                        FAILURE.get(e.reason, 0x0110)))
                continue
            item = _sop_item(parsed.sop_class_uid, uids[INSTANCE])
            item["00081190"] = {"vr": "UR", "Value": [
                f"{base}studies/{uids[STUDY]}/series/{uids[SERIES]}/instances/{uids[INSTANCE]}"]}
            stored.append(item)
            studies.add(uids[STUDY])
        answer: dict[str, Any] = {}
        target = study or (next(iter(studies)) if len(studies) == 1 else None)
        if target:
            answer["00081190"] = {"vr": "UR", "Value": [f"{base}studies/{target}"]}
        if failed:
            answer["00081198"] = {"vr": "SQ", "Value": failed}
        answer["00081199"] = {"vr": "SQ", "Value": stored} if stored else {"vr": "SQ"}
        # PS3.18 10.5.3: 200 when all were stored, 202 when some were, 409 when none was.
        bottle.response.status = 200 if not failed else 202 if stored else 409
        bottle.response.content_type = DICOM_JSON
        return json.dumps(answer, separators=(",", ":"))

    # ------------------------------------------------------------ WADO-URI

    def wado_uri(self) -> bytes:
        q = bottle.request.query
        if q.get("requestType", "") != "WADO":
            raise HttpError(400, "Bad request", 'WADO-URI needs requestType=WADO')
        study, series, sop = q.get("studyUID"), q.get("seriesUID"), q.get("objectUID")
        if not sop:
            raise HttpError(400, "Bad request", "WADO-URI needs objectUID")
        self._check_uids(study, series, sop)
        rows = self._wado_instance(study, series, sop)
        inst = rows[0]
        wanted = [c.split(";")[0].strip().lower()
                  for c in q.get("contentType", "image/jpeg").split(",") if c.strip()]
        for ctype in wanted:
            if ctype in ("application/dicom", "*/*"):
                data = self._read(inst)
                bottle.response.content_type = "application/dicom"
                return data
            if ctype in ("image/jpeg", "image/png", "image/*"):
                fmt = "png" if ctype == "image/png" else "jpeg"
                frame = int_value(q.get("frameNumber"), "frameNumber", 1, 1, 1 << 30) - 1
                quality = int_value(q.get("imageQuality"), "imageQuality", 90, 1, 100)
                rows_, cols = (int_value(q.get(k), k, 0, 0, 1 << 16) for k in ("rows", "columns"))
                window = None
                if q.get("windowCenter") or q.get("windowWidth"):
                    window = window_arg(f"{q.get('windowCenter', '')},{q.get('windowWidth', '')}")
                viewport = (cols, rows_, None) if rows_ or cols else None
                data = render_frame(self._dataset(inst), frame, fmt, quality, window, viewport)
                bottle.response.content_type = f"image/{fmt}"
                return data
        raise HttpError(406, "Not acceptable",
                        "contentType must be application/dicom, image/jpeg or image/png")

    def _wado_instance(self, study: str | None, series: str | None,
                       sop: str) -> list[InstanceRow]:
        uids = self.context.index.instance_parent_uids(sop, study, series)
        if uids is None:
            raise HttpError(404, "Unknown resource", "no instance with these UIDs")
        return self._instances(uids[0], uids[1], sop)


def _sop_item(sop_class: str, sop_uid: str, reason: int | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if sop_class:
        item["00081150"] = {"vr": "UI", "Value": [sop_class]}
    if sop_uid:
        item["00081155"] = {"vr": "UI", "Value": [sop_uid]}
    if reason is not None:
        item[hex_tag(0x00081197)] = {"vr": "US", "Value": [reason]}
    return item
