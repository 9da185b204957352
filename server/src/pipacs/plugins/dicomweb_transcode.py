"""WADO-RS retrieve in the transfer syntax the client asks for (Accept: ...;
transfer-syntax=), as Orthanc's DICOMweb plugin: files stored in another syntax are
transcoded (pipacs/transcode.py)."""

from __future__ import annotations

import logging

from .. import transcode
from ..context import ServerContext
from ..http.errors import HttpError
from . import dicomweb_multipart as mp
from .dicomweb_metadata import InstanceRow

logger = logging.getLogger(__name__)


def negotiate_dicom(accept: str, rows: list[InstanceRow]) -> list[str]:
    """The syntaxes the client accepts, those pipacs can write first ([]: any, or all the
    files' own: they go out as stored); a file stored in another one is transcoded to the
    first that fits. 406 for a client that accepts no DICOM, or only syntaxes pipacs cannot
    write."""
    if not accept.strip():
        return []
    syntaxes: list[str] = []
    for a in mp.parse_accept(accept):
        if a.media in ("*/*", "multipart/*") or (
            a.media == "multipart/related" and a.inner in ("", "application/dicom", "*/*")
        ) or a.media == "application/dicom":
            ts = a.params.get("transfer-syntax", "*")
            if ts == "*":
                return []
            syntaxes.append(ts)
    if not syntaxes:
        raise HttpError(406, "Not acceptable",
                        'WADO-RS answers multipart/related; type="application/dicom"')
    if all(r.transfer_syntax in syntaxes for r in rows):
        return []
    why = {ts: transcode.cannot_write(ts, allow_lossy=True) for ts in syntaxes}
    writable = [ts for ts in syntaxes if why[ts] is None]
    if not writable:
        raise HttpError(406, "Not acceptable", f"pipacs cannot transcode to "
                        f"{', '.join(syntaxes)}: " + "; ".join(filter(None, why.values())))
    return [*writable, *(ts for ts in syntaxes if ts not in writable)]


def transcoded(context: ServerContext, inst: InstanceRow, data: bytes,
               wanted: list[str]) -> tuple[str, bytes]:
    """(syntax, file) in the first accepted syntax the file can be written in; as stored
    (its syntax named in the part's header) when none fits, logged."""
    quality = context.settings.dicom_lossy_transcoding_quality
    for syntax in wanted:
        if transcode.cannot_write(syntax, allow_lossy=True):
            continue
        try:
            return syntax, transcode.transcode(data, syntax, True, quality)
        except transcode.TranscodeError as e:
            logger.warning("WADO-RS: instance %s not sent as %s: %s", inst.public_id, syntax, e)
    return inst.transfer_syntax, data
