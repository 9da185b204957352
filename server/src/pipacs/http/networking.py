"""Networking routes: DICOM modalities (echo, store, query/retrieve, move) and HTTP peers."""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import urllib.error
import urllib.request
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import bottle
from pydicom.dataset import Dataset

from .. import tagsjson
from ..archive import instances_of
from ..config import Modality, Peer
from ..context import ServerContext
from ..dicom import qrscu
from ..dicom.scu import ScuError
from ..dicomfile import LEVEL_UID
from ..errorcodes import NETWORK_PROTOCOL
from ..ids import LEVEL_NAMES, PATIENT
from ..index import DatabaseError, Resource
from ..jobs import Job, JobFailed, disk_full
from ..services import ScuPool
from ..transcode import TranscodeError, transcode
from .archives import transcode_arg
from .auth import basic_header
from .common import (
    JSON_BODY_LIMIT,
    body_bytes,
    body_json,
    int_field,
    parse_level,
    query_flag,
    resources_of_body,
)
from .errors import HttpError
from .jobs import run
from .responses import json_response
from .tools import known_keyword

logger = logging.getLogger(__name__)

NETWORK_ERROR = NETWORK_PROTOCOL


@dataclass
class Query:
    """A C-FIND sent to a modality and its answers, kept for /queries."""

    id: str
    modality: str
    level: int
    query: dict[str, str]
    answers: list[Dataset] = field(default_factory=list)


class Queries:
    """The last QueryRetrieveSize queries."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, Query] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, q: Query) -> None:
        with self._lock:
            self._items[q.id] = q
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def get(self, qid: str) -> Query:
        with self._lock:
            q = self._items.get(qid)
        if q is None:
            raise HttpError(404, "Unknown resource", f"no query with ID {qid}")
        return q

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def remove(self, qid: str) -> None:
        with self._lock:
            if self._items.pop(qid, None) is None:
                raise HttpError(404, "Unknown resource", f"no query with ID {qid}")


def scu_of(context: ServerContext) -> ScuPool:
    """The context's DICOM SCU (association pool), built by the Server at start."""
    if context.scu is None:
        raise HttpError(500, NETWORK_ERROR, "the DICOM SCU is not running")
    return context.scu


def _log_exports(context: ServerContext, items: list[Resource], target: str) -> None:
    """Record what was sent (LogExportedResources). Called once the images are sent: a
    record that cannot be written (a full index disk) is a warning, not a failed send."""
    if not context.settings.log_exported_resources:
        return
    for n, res in enumerate(items):
        try:
            uids = []
            r: Resource | None = res
            chain = []
            while r is not None:
                chain.append(r)
                r = context.index.get_by_id(r.parent) if r.parent is not None else None
            for anc in reversed(chain):
                uids.append(anc.tags.get(LEVEL_UID[anc.level], anc.uid))
            context.index.log_export(res.level, res.public_id, target, uids)
        except (DatabaseError, OSError) as e:
            why = disk_full(context, e) or f"{type(e).__name__}: {e}"
            logger.warning("sent to %s, but the export of %s could not be recorded: %s",
                           target, ", ".join(x.public_id for x in items[n:]), why)
            return


# One Orthanc ID, or a DICOM UID, sent as the whole body without JSON quotes (as Orthanc
# takes it: `curl -d 9c648398-... /modalities/x/store`, and Lua's SendToModality).
BARE_ID = re.compile(rb"\s*([0-9a-f]{8}(?:-[0-9a-f]{8}){4}|[0-9]+(?:\.[0-9]+)+)\s*")


def _store_body(context: ServerContext) -> tuple[dict[str, Any], list[Resource]]:
    bare = BARE_ID.fullmatch(body_bytes(JSON_BODY_LIMIT))
    raw = bare.group(1).decode() if bare else body_json(kind=(dict, list, str))
    body = raw if isinstance(raw, dict) else {"Resources": raw}
    if "Resources" not in body:  # as Orthanc: an object must name what to send
        raise HttpError(400, "Bad request", 'the body needs "Resources"')
    items = resources_of_body(context, body)
    return body, items


# ---------------------------------------------------------------- HTTP peers


def _peer_request(context: ServerContext, peer: Peer, method: str, path: str,
                  data: bytes | None = None, content_type: str = "") -> bytes:
    s = context.settings
    req = urllib.request.Request(peer.url + path.lstrip("/"), data=data, method=method)
    if content_type:
        req.add_header("Content-Type", content_type)
    if peer.username is not None:
        req.add_header("Authorization", basic_header(peer.username, peer.password or ""))
    handlers: list[Any] = []
    if s.http_proxy:
        handlers.append(urllib.request.ProxyHandler({"http": s.http_proxy,
                                                     "https": s.http_proxy}))
    else:
        handlers.append(urllib.request.ProxyHandler({}))
    if peer.url.startswith("https"):
        tls = ssl.create_default_context(cafile=s.https_ca_certificates or None)
        if not s.https_verify_peers:
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        handlers.append(urllib.request.HTTPSHandler(context=tls))
    opener = urllib.request.build_opener(*handlers)
    if s.http_verbose:
        logger.info("HTTP %s %s", method, req.full_url)
    try:
        with opener.open(req, timeout=s.http_timeout or None) as answer:
            return bytes(answer.read())
    except urllib.error.HTTPError as e:
        raise HttpError(500, NETWORK_ERROR,
                        f"peer {peer.name} answered {e.code} to {method} {path}") from None
    except (urllib.error.URLError, OSError) as e:
        raise HttpError(500, NETWORK_ERROR, f"cannot reach peer {peer.name}: {e}") from None


def install(app: bottle.Bottle, context: ServerContext) -> None:
    s = context.settings
    queries = Queries(s.query_retrieve_size)
    app.config["pipacs.queries"] = queries  # child queries (networking_extra.py)

    def modality(name: str) -> Modality:
        m = s.modalities.get(name)
        if m is None:
            raise HttpError(404, "Inexistent item", f"no modality named {name!r}")
        return m

    def peer(name: str) -> Peer:
        p = s.peers.get(name)
        if p is None:
            raise HttpError(404, "Unknown resource", f"no Orthanc peer named {name!r}")
        return p

    # ------------------------------------------------------------ modalities

    @app.get("/modalities")
    def modalities() -> str:
        if query_flag("expand"):
            return json_response({n: m.as_orthanc() for n, m in s.modalities.items()})
        return json_response(sorted(s.modalities))  # Orthanc lists them sorted

    @app.get("/modalities/<name>")
    def modality_operations(name: str) -> str:
        modality(name)
        return json_response(["configuration", "echo", "move", "query", "store"])

    @app.get("/modalities/<name>/configuration")
    def modality_configuration(name: str) -> str:
        return json_response(modality(name).as_orthanc())

    @app.post("/modalities/<name>/echo")
    def echo(name: str) -> str:
        m = modality(name)
        try:
            scu_of(context).echo(m)
        except ScuError as e:
            raise HttpError(500, NETWORK_ERROR, str(e)) from None
        return json_response({})

    @app.post("/modalities/<name>/store")
    def store(name: str) -> str:
        m = modality(name)
        body, items = _store_body(context)
        ids = [i.public_id for i in instances_of(context, items)]

        def work(job: Job) -> dict[str, Any]:
            sent = failed = 0
            batch = 16
            for start in range(0, len(ids), batch):
                job.check_cancelled()
                job.set_progress(start, len(ids))
                try:
                    report = scu_of(context).store(m, ids[start:start + batch])
                except ScuError as e:
                    raise JobFailed(NETWORK_ERROR, 500, str(e)) from e
                sent += report.sent
                failed += len(report.failed)
            if failed and not sent:
                raise JobFailed(NETWORK_ERROR, 500,
                                f"C-STORE to {m.name} failed for all {failed} instances")
            _log_exports(context, items, m.name)
            return {"Description": "REST API", "FailedInstancesCount": failed,
                    "InstancesCount": len(ids), "LocalAet": s.dicom_aet,
                    "ParentResources": [r.public_id for r in items], "RemoteAet": m.aet}

        return run(context, body, Job("DicomModalityStore", work))

    @app.post("/modalities/<name>/query")
    def query(name: str) -> str:
        m = modality(name)
        body = body_json(kind=dict)
        level = parse_level(body.get("Level", ""))
        raw = body.get("Query", {})
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise HttpError(400, "Bad request", '"Query" must map tags to strings')
        q = {known_keyword(k): v for k, v in raw.items()}
        for lv in range(PATIENT if level == PATIENT else 1, level + 1):
            q.setdefault(LEVEL_UID[lv], "")
        limit = int_field(body, "Limit", 0)
        try:
            answers = qrscu.find(s.dicom_aet, s.dicom_scu_timeout, m, level, q, limit)
        except ScuError as e:
            raise HttpError(500, NETWORK_ERROR, str(e)) from None
        item = Query(str(uuid.uuid4()), name, level, q, answers)
        queries.add(item)
        return json_response({"ID": item.id, "Path": f"/queries/{item.id}"})

    @app.post("/modalities/<name>/move")
    def move_route(name: str) -> str:
        m = modality(name)
        body = body_json(kind=dict)
        level = parse_level(body.get("Level", ""))
        resources = body.get("Resources", [])
        if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
            raise HttpError(400, "Bad request", '"Resources" must be a list of objects')
        target = body.get("TargetAet", s.dicom_aet)
        if not isinstance(target, str) or not target.strip():
            raise HttpError(400, "Bad request", "TargetAet must be an AE title (a string)")
        idents = [qrscu.identifier(level, {known_keyword(k): str(v) for k, v in r.items()})
                  for r in resources]
        return run(context, body, _move_job(context, m, target, idents, level))

    # ------------------------------------------------------------ query answers

    @app.get("/queries")
    def list_queries() -> str:
        return json_response(queries.ids())

    @app.get("/queries/<qid>")
    def query_operations(qid: str) -> str:
        queries.get(qid)
        return json_response(["answers", "level", "modality", "query", "retrieve"])

    @app.delete("/queries/<qid>")
    def delete_query(qid: str) -> str:
        queries.remove(qid)
        return json_response({})

    @app.get("/queries/<qid>/answers")
    def answers(qid: str) -> str:
        q = queries.get(qid)
        if query_flag("expand"):
            mode = tagsjson.mode_of(bottle.request.query)
            return json_response([tagsjson.to_json(a, mode) for a in q.answers])
        return json_response([str(i) for i in range(len(q.answers))])

    def _answer(qid: str, n: int) -> tuple[Query, Dataset]:
        q = queries.get(qid)
        if not 0 <= n < len(q.answers):
            raise HttpError(404, "Inexistent item", f"query {qid} has no answer {n}")
        return q, q.answers[n]

    @app.get("/queries/<qid>/answers/<n:int>")
    def answer_operations(qid: str, n: int) -> str:
        _answer(qid, n)
        return json_response(["content", "retrieve"])

    @app.get("/queries/<qid>/answers/<n:int>/content")
    def answer_content(qid: str, n: int) -> str:
        _, ds = _answer(qid, n)
        return json_response(tagsjson.to_json(ds, tagsjson.mode_of(bottle.request.query)))

    @app.get("/queries/<qid>/<key:re:level|modality|query>")
    def query_property(qid: str, key: str) -> Any:
        q = queries.get(qid)
        if key == "query":
            return json_response(q.query)
        bottle.response.content_type = "text/plain"
        return LEVEL_NAMES[q.level] if key == "level" else q.modality

    def _retrieve(q: Query, chosen: list[Dataset]) -> str:
        text = body_bytes().decode("utf-8", "replace").strip()
        if text.startswith("{") or text.startswith('"'):
            try:
                raw = json.loads(text)
            except ValueError:
                raise HttpError(400, "Bad request", "the body is not valid JSON") from None
        else:
            raw = text  # Orthanc also takes the target AET as plain text
        if not isinstance(raw, dict | str):
            raise HttpError(400, "Bad request", "expected a target AET or a JSON object")
        body = {"TargetAet": raw} if isinstance(raw, str) else raw
        target = body.get("TargetAet") or s.dicom_aet
        if not isinstance(target, str):
            raise HttpError(400, "Bad request", "TargetAet must be a string")
        idents = []
        for ans in chosen:
            keys = {kw: str(ans.get(kw, "")) for kw in LEVEL_UID[: q.level + 1]
                    if str(ans.get(kw, ""))}
            idents.append(qrscu.identifier(q.level, keys))
        return run(context, body, _move_job(context, modality(q.modality), target, idents,
                                            q.level))

    @app.post("/queries/<qid>/retrieve")
    def retrieve_all(qid: str) -> str:
        q = queries.get(qid)
        return _retrieve(q, q.answers)

    @app.post("/queries/<qid>/answers/<n:int>/retrieve")
    def retrieve_one(qid: str, n: int) -> str:
        q, ds = _answer(qid, n)
        return _retrieve(q, [ds])

    # ------------------------------------------------------------ peers

    @app.get("/peers")
    def peers() -> str:
        if query_flag("expand"):
            return json_response({n: _peer_json(p) for n, p in s.peers.items()})
        return json_response(sorted(s.peers))

    @app.get("/peers/<name>")
    def peer_operations(name: str) -> str:
        peer(name)
        return json_response(["configuration", "store", "system"])

    @app.get("/peers/<name>/configuration")
    def peer_configuration(name: str) -> str:
        return json_response(_peer_json(peer(name)))

    @app.get("/peers/<name>/system")
    def peer_system(name: str) -> str:
        data = _peer_request(context, peer(name), "GET", "system")
        try:
            return json_response(json.loads(data))
        except ValueError:
            raise HttpError(500, NETWORK_ERROR, f"peer {name} answered no JSON") from None

    @app.post("/peers/<name>/store")
    def peer_store(name: str) -> str:
        p = peer(name)
        body, items = _store_body(context)
        instances = instances_of(context, items)
        syntax = transcode_arg(body.get("Transcode"))  # Orthanc 1.7+

        def work(job: Job) -> dict[str, Any]:
            size = 0
            for n, inst in enumerate(instances):
                job.check_cancelled()
                job.set_progress(n, len(instances))
                data = context.read_instance(inst.public_id)
                try:
                    if syntax:
                        data = transcode(data, syntax, True, s.dicom_lossy_transcoding_quality)
                    _peer_request(context, p, "POST", "instances", data, "application/dicom")
                except TranscodeError as e:
                    raise JobFailed("Cannot transcode", 500, str(e)) from e
                except HttpError as e:
                    raise JobFailed(NETWORK_ERROR, 500, e.details) from e
                size += len(data)
            _log_exports(context, items, p.name)
            return {"Compress": False, "Description": "REST API", "FailedInstancesCount": 0,
                    "InstancesCount": len(instances),
                    "ParentResources": [r.public_id for r in items], "Peer": [p.url],
                    "Size": str(size), "SizeMB": size // (1024 * 1024)}

        return run(context, body, Job("OrthancPeerStore", work))


def _peer_json(p: Peer) -> dict[str, Any]:
    out: dict[str, Any] = {"HttpHeaders": [], "Pkcs11": False, "Timeout": 0, "Url": p.url}
    if p.username is not None:
        out["Username"] = p.username
    return out


def _move_job(context: ServerContext, m: Modality, target: str, idents: list[Dataset],
              level: int) -> Job:
    s = context.settings

    def work(job: Job) -> dict[str, Any]:
        try:
            qrscu.move(s.dicom_aet, s.dicom_scu_timeout, m, target, idents)
        except ScuError as e:
            raise JobFailed(NETWORK_ERROR, 500, str(e)) from e
        return {"Description": "REST API", "LocalAet": s.dicom_aet,
                "Query": [tagsjson.to_json(i, tagsjson.SHORT) for i in idents],
                "RemoteAet": m.aet, "TargetAet": target}

    return Job("DicomMoveScu", work)



