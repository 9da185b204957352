"""More networking routes: editing modalities and peers, Orthanc's older C-FIND routes,
worklist queries, child queries of an answer, and sending a request body straight on."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import bottle
import pydicom
from pydicom.dataset import Dataset
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from .. import tagsjson
from ..config import Modality
from ..config.build import _parse_modality, _parse_peer
from ..context import ServerContext
from ..dicom import qrscu
from ..dicom.scu import ScuError
from ..dicomfile import LEVEL_UID, MAIN_TAGS
from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from .common import body_bytes, body_json, parse_level
from .errors import HttpError
from .networking import NETWORK_ERROR, Queries, Query, _peer_request
from .responses import json_response, text_response
from .tools import known_keyword
from .tools_extra import unsupported

# The keys each older find-* route asks for (as Orthanc's find-patient ... find-instance):
# the patient's main tags; for the other levels the identifiers and a few tags (Orthanc's
# find-instance also asks for MediaStorageSOPInstanceUID, a file meta tag: pipacs does not).
FIND_KEYS = {
    PATIENT: list(MAIN_TAGS[PATIENT]),
    STUDY: ["AccessionNumber", "PatientID", "ReferringPhysicianName", "StudyDate",
            "StudyDescription", "StudyID", "StudyInstanceUID", "StudyTime"],
    SERIES: ["AccessionNumber", "BodyPartExamined", "Modality", "OperatorsName", "PatientID",
             "PerformedProcedureStepDescription", "ProtocolName", "SeriesDate",
             "SeriesDescription", "SeriesInstanceUID", "SeriesNumber", "SeriesTime",
             "StudyInstanceUID"],
    INSTANCE: ["AccessionNumber", "InstanceCreationDate", "InstanceCreationTime",
               "InstanceNumber", "PatientID", "SOPInstanceUID", "SeriesInstanceUID",
               "StudyInstanceUID"],
}
CHILD_LEVELS = {"query-studies": STUDY, "query-series": SERIES, "query-instances": INSTANCE}


def _body_query() -> dict[str, str]:
    body = body_json(default={}, kind=dict)
    if not all(isinstance(v, str) for v in body.values()):
        raise HttpError(400, "Bad request", "the body must map DICOM tags to strings")
    return {known_keyword(k): v for k, v in body.items()}


def install(app: bottle.Bottle, context: ServerContext) -> None:
    s = context.settings
    queries: Queries = app.config["pipacs.queries"]

    def modality(name: str) -> Modality:
        m = s.modalities.get(name)
        if m is None:
            raise HttpError(404, "Inexistent item", f"no modality named {name!r}")
        return m

    def c_find(m: Modality, level: int, query: dict[str, str]) -> list[Dataset]:
        keys = {k: "" for k in FIND_KEYS[level]}
        keys.update(query)
        try:
            return qrscu.find(s.dicom_aet, s.dicom_scu_timeout, m, level, keys)
        except ScuError as e:
            raise HttpError(500, NETWORK_ERROR, str(e)) from None

    def simplified(answers: list[Dataset]) -> list[dict[str, Any]]:
        return [tagsjson.to_json(a, tagsjson.SIMPLIFY) for a in answers]

    # ------------------------------------------------------------ editing

    parsers = {"modalities": (_parse_modality, s.modalities, "Inexistent item"),
               "peers": (_parse_peer, s.peers, "Unknown resource")}

    @app.put("/<kind:re:modalities|peers>/<name>")
    def put_remote(kind: str, name: str) -> str:
        parse, known, _ = parsers[kind]
        errors: list[str] = []
        value = parse(name, body_json(kind=(dict, list)), errors)
        if value is None:
            raise HttpError(400, "Bad file format", "; ".join(errors))
        known[name] = value  # type: ignore[index]
        return text_response("")

    @app.delete("/<kind:re:modalities|peers>/<name>")
    def delete_remote(kind: str, name: str) -> str:
        _, known, missing = parsers[kind]
        if known.pop(name, None) is None:  # type: ignore[attr-defined]
            raise HttpError(404, missing, f"no {kind[:-1].replace('ie', 'y')} named {name!r}")
        return text_response("")

    # ------------------------------------------------------------ older C-FIND routes

    @app.post("/modalities/<name>/<route:re:find-patient|find-study|find-series|find-instance>")
    def find_level(name: str, route: str) -> str:
        m = modality(name)
        level = parse_level(route[5:])
        query = _body_query()
        needed = [LEVEL_UID[lv] for lv in range(PATIENT, level)]  # the parents' identifiers
        if any(key not in query for key in needed):
            raise HttpError(400, "Bad request", f"{route} needs {', '.join(needed)}")
        return json_response(simplified(c_find(m, level, query)))

    @app.post("/modalities/<name>/find")
    def find_tree(name: str) -> str:
        """Patients, each with its "Studies", each with its "Series" (Orthanc's /find)."""
        m = modality(name)
        patients = simplified(c_find(m, PATIENT, _body_query()))
        for patient in patients:
            pid = {"PatientID": patient.get("PatientID", "")}
            studies = simplified(c_find(m, STUDY, pid))
            for study in studies:
                keys = {**pid, "StudyInstanceUID": study.get("StudyInstanceUID", "")}
                study["Series"] = simplified(c_find(m, SERIES, keys))
            patient["Studies"] = studies
        return json_response(patients)

    @app.post("/modalities/<name>/find-worklist")
    def find_worklist(name: str) -> str:
        m = modality(name)
        body = body_json(default={}, kind=dict)
        raw = body.get("Query", body if "Query" not in body else {})
        if not isinstance(raw, dict):
            raise HttpError(400, "Bad request", '"Query" must be a JSON object')
        ident = Dataset()
        for key, value in raw.items():
            if isinstance(value, str):
                setattr(ident, known_keyword(key), value or None)
        mode = tagsjson.FULL if body.get("Full") else tagsjson.SHORT if body.get("Short") \
            else tagsjson.SIMPLIFY
        ae = qrscu._ae(s.dicom_aet, s.dicom_scu_timeout, ModalityWorklistInformationFind)
        assoc = qrscu._associate(ae, m)
        answers = []
        try:
            for status, ds in assoc.send_c_find(ident, ModalityWorklistInformationFind):
                if status is None:
                    raise HttpError(500, NETWORK_ERROR, f"C-FIND to {m.name}: no answer")
                if int(status.Status) in (0xFF00, 0xFF01) and ds is not None:
                    answers.append(tagsjson.to_json(ds, mode))
        except ScuError as e:
            raise HttpError(500, NETWORK_ERROR, str(e)) from None
        finally:
            if assoc.is_established:
                assoc.release()
        return json_response(answers)

    # ------------------------------------------------------------ child queries

    @app.post("/queries/<qid>/answers/<n:int>/<route:re:query-studies|query-series|"
              "query-instances>")
    def child_query(qid: str, n: int, route: str) -> str:
        parent = queries.get(qid)
        if not 0 <= n < len(parent.answers):
            raise HttpError(404, "Inexistent item", f"query {qid} has no answer {n}")
        level = CHILD_LEVELS[route]
        if level <= parent.level:
            raise HttpError(404, "Inexistent item", f"no {route} below a {parent.level} query")
        answer = parent.answers[n]
        body = body_json(default={}, kind=dict)
        raw = body.get("Query", {})
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise HttpError(400, "Bad request", '"Query" must map tags to strings')
        q = {known_keyword(k): v for k, v in raw.items()}
        for lv in range(PATIENT if parent.level == PATIENT else STUDY, level + 1):
            uid = LEVEL_UID[lv]
            q.setdefault(uid, str(answer.get(uid, "")) if lv <= parent.level else "")
        try:
            found = qrscu.find(s.dicom_aet, s.dicom_scu_timeout,
                               modality(parent.modality), level, q)
        except ScuError as e:
            raise HttpError(500, NETWORK_ERROR, str(e)) from None
        item = Query(str(uuid.uuid4()), parent.modality, level, q, found)
        queries.add(item)
        return json_response({"ID": item.id, "Path": f"/queries/{item.id}"})

    # ------------------------------------------------------------ straight sends

    @app.post("/modalities/<name>/store-straight")
    def store_straight(name: str) -> str:
        m = modality(name)
        raw = body_bytes()
        try:
            ds = pydicom.dcmread(io.BytesIO(raw), force=True)
            sop_class, sop_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
            syntax = str(ds.file_meta.TransferSyntaxUID)
        except Exception as e:  # anything pydicom raises on a body that is not DICOM
            raise HttpError(400, "Bad file format", f"the body is not a DICOM file: {e}"
                            ) from None
        ae = qrscu._ae(s.dicom_aet, s.dicom_scu_timeout)
        ae.add_requested_context(sop_class, [syntax])
        assoc = qrscu._associate(ae, m)
        try:
            status = assoc.send_c_store(ds)
        except (ValueError, AttributeError, OSError) as e:
            raise HttpError(500, NETWORK_ERROR, f"C-STORE to {m.name} failed: {e}") from None
        finally:
            if assoc.is_established:
                assoc.release()
        code = int(status.Status) if status else -1
        if code not in (0, 0xB000, 0xB007, 0xB006):
            raise HttpError(500, NETWORK_ERROR, f"C-STORE to {m.name} failed with status "
                            f"0x{code & 0xFFFF:04X}")
        return json_response({"SOPClassUID": sop_class, "SOPInstanceUID": sop_uid})

    @app.post("/peers/<name>/store-straight")
    def peer_store_straight(name: str) -> str:
        p = s.peers.get(name)
        if p is None:
            raise HttpError(404, "Unknown resource", f"no Orthanc peer named {name!r}")
        data = _peer_request(context, p, "POST", "instances", body_bytes(), "application/dicom")
        try:
            return json_response(json.loads(data))
        except ValueError:
            raise HttpError(500, NETWORK_ERROR, f"peer {name} answered no JSON") from None

    # ------------------------------------------------------------ not offered

    why_commitment = "pipacs has no storage commitment SCU or SCP"

    @app.post("/modalities/<name>/storage-commitment")
    def storage_commitment(name: str) -> str:
        modality(name)
        raise unsupported("storage commitment", why_commitment)

    @app.get("/storage-commitment/<sid>")
    @app.post("/storage-commitment/<sid>/remove")
    def storage_commitment_report(sid: str) -> str:
        # no report can exist: Orthanc's 404 for an unknown one, saying why
        raise HttpError(404, "Unknown resource", f"no storage commitment report {sid[:40]!r} "
                        f"(not supported: storage commitment; {why_commitment})")
