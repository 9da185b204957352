"""Operations on many resources at once (bulk-*), splitting and merging studies, dicom-echo."""

from __future__ import annotations

import logging
from typing import Any

import bottle
from pydicom.datadict import tag_for_keyword
from pydicom.uid import generate_uid

from .. import browse, modify
from ..config import Modality
from ..context import ServerContext
from ..dicom.scu import ScuError
from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from ..index import Resource
from ..jobs import Job, JobFailed
from .common import body_json, flag, parse_level, resource
from .errors import HttpError
from .jobs import run
from .networking import NETWORK_ERROR, scu_of
from .responses import json_response, text_response

logger = logging.getLogger(__name__)

# What a merged series takes from its new study (Orthanc copies the patient's and the
# study's main tags, so that the moved series agree with their new parents).
MERGED_TAGS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex",
               "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "StudyDescription",
               "AccessionNumber", "ReferringPhysicianName")


def _ids(body: dict[str, Any], key: str = "Resources", required: bool = True) -> list[str]:
    if required and key not in body:
        raise HttpError(400, "Bad request", f'the body needs "{key}"')
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise HttpError(400, "Bad request", f'"{key}" must be a list of resource IDs')
    return [v.strip() for v in value]


def _known(context: ServerContext, ids: list[str]) -> list[Resource]:
    """The resources of these IDs; unknown IDs are skipped, as Orthanc does."""
    out = []
    for pid in ids:
        res = context.index.get(pid)
        if res is not None:
            out.append(res)
    return out


def at_level(context: ServerContext, items: list[Resource], level: int) -> list[Resource]:
    """Each resource taken up or down to `level`, once each, in order."""
    out: dict[str, Resource] = {}
    for res in items:
        if res.level == level:
            found = [res]
        elif res.level < level:
            found = browse.descendants(context, res, level)
        else:
            parent = browse.ancestor(context, res, level)
            found = [parent] if parent is not None else []
        for r in found:
            out.setdefault(r.public_id, r)
    return list(out.values())


def _modify_each(context: ServerContext, job: Job,
                 items: list[tuple[Resource, modify.Request]]) -> list[dict[str, Any]]:
    """modify.run on each resource in turn (a job's work): the results, in order."""
    results = []
    for n, (res, req) in enumerate(items):
        job.check_cancelled()
        job.set_progress(n, len(items))
        try:
            instances = [res] if res.level == INSTANCE else \
                browse.descendants(context, res, INSTANCE)
            results.append(modify.run(context, res, req, instances))
        except modify.ModifyError as e:
            raise JobFailed("Cannot modify the resource", 500, str(e)) from e
    return results


def _counts(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Description": "REST API",
            "FailedInstancesCount": sum(r["FailedInstancesCount"] for r in results),
            "InstancesCount": sum(r["InstancesCount"] for r in results)}


def _modify_job(context: ServerContext, jobs: list[tuple[Resource, modify.Request]],
                anonymize: bool) -> Job:
    def work(job: Job) -> dict[str, Any]:
        results = _modify_each(context, job, jobs)
        # every resource made, instances first, then series, studies, patients (as Orthanc)
        made: list[dict[str, Resource]] = [{}, {}, {}, {}]
        for result in results:
            res = context.index.get(result["ID"])
            if res is None:
                continue
            for inst in browse.descendants(context, res, INSTANCE) if res.level < INSTANCE \
                    else [res]:
                node: Resource | None = inst
                while node is not None:
                    made[node.level].setdefault(node.public_id, node)
                    node = context.index.get_by_id(node.parent) if node.parent is not None \
                        else None
        done = [browse.short_json(r) for level in reversed(range(4))
                for r in made[level].values()]
        return {**_counts(results), "IsAnonymization": anonymize, "Resources": done}

    return Job("ResourceModification", work)


def install(app: bottle.Bottle, context: ServerContext) -> None:

    @app.post("/tools/bulk-content")
    def bulk_content() -> str:
        body = body_json(kind=dict)
        items = _known(context, _ids(body))
        if "Level" in body:
            items = at_level(context, items, parse_level(body["Level"]))
        metadata = flag(body, "Metadata", True)
        out = []
        for res in items:
            entry = browse.resource_json(context, res)
            if metadata:
                entry["Metadata"] = browse.named_metadata(context, res.id)
            out.append(entry)
        return json_response(out)

    @app.post("/tools/bulk-delete")
    def bulk_delete() -> str:
        body = body_json(kind=dict)
        for res in _known(context, _ids(body)):
            if context.index.get(res.public_id) is not None:  # not gone with a parent
                context.delete(res.public_id)
        return text_response("")

    @app.post("/tools/<kind:re:bulk-modify|bulk-anonymize>")
    def bulk_modify(kind: str) -> str:
        body = body_json(kind=dict)
        anonymize = kind == "bulk-anonymize"
        # Without "Level", Orthanc modifies each instance on its own (new SOPInstanceUIDs
        # only); with it, each resource at that level, as /{level}/{id}/modify does.
        level = parse_level(body["Level"]) if "Level" in body else INSTANCE
        items = at_level(context, _known(context, _ids(body)), level)
        options = {k: v for k, v in body.items() if k not in ("Resources", "Level")}
        try:
            req = modify.parse_request(options, level, anonymize)  # one UID map for all
        except modify.ModifyError as e:
            raise HttpError(400, "Bad request", str(e)) from None
        return run(context, body, _modify_job(context, [(r, req) for r in items], anonymize))

    @app.post("/studies/<pid>/split")
    def split(pid: str) -> str:
        study = resource(context, STUDY, pid)
        body = body_json(kind=dict)
        chosen = [resource(context, SERIES, i) for i in _ids(body, "Series", False)] + \
            [resource(context, INSTANCE, i) for i in _ids(body, "Instances", False)]
        if not chosen:
            raise HttpError(400, "Bad request", 'give "Series" or "Instances" to split off')
        for res in chosen:
            parent = browse.ancestor(context, res, STUDY)
            if parent is None or parent.public_id != study.public_id:
                raise HttpError(400, "Bad request", f"{res.public_id} is not in study {pid}")
        target_uid = str(generate_uid())
        req = _restructure_request(body, {"StudyInstanceUID": target_uid})
        return run(context, body, _restructure_job(context, chosen, req, "TargetStudyUID",
                                                   target_uid))

    @app.post("/studies/<pid>/merge")
    def merge(pid: str) -> str:
        study = resource(context, STUDY, pid)
        body = body_json(kind=dict)
        chosen = [_series_or_instance(context, i) for i in _ids(body)]
        if not chosen:
            raise HttpError(400, "Bad request", '"Resources" lists no series or instance')
        patient = browse.ancestor(context, study, PATIENT)
        tags = {**(patient.tags if patient else {}), **study.tags}
        values = {k: tags.get(k, "") for k in MERGED_TAGS}
        values["StudyInstanceUID"] = study.uid
        req = _restructure_request(body, values)
        return run(context, body, _restructure_job(context, chosen, req, "TargetStudy",
                                                   pid))

    @app.post("/tools/dicom-echo")
    def dicom_echo() -> str:
        body = body_json(kind=(dict, str))
        if isinstance(body, str):
            m = context.settings.modalities.get(body)
            if m is None:
                raise HttpError(404, "Inexistent item", f"no modality named {body!r}")
        else:
            try:
                m = Modality("(dicom-echo)", str(body["AET"]), str(body["Host"]),
                             int(body["Port"]))
            except (KeyError, ValueError, TypeError):
                raise HttpError(400, "Bad request",
                                'the body needs "AET", "Host" and "Port"') from None
        try:
            scu_of(context).echo(m)
        except ScuError as e:
            raise HttpError(500, NETWORK_ERROR, str(e)) from None
        return json_response({})


def _series_or_instance(context: ServerContext, pid: str) -> Resource:
    res = context.index.get(pid)
    if res is None or res.level not in (SERIES, INSTANCE):
        raise HttpError(404, "Unknown resource", f"no series or instance with ID {pid}")
    return res


def _restructure_request(body: dict[str, Any], values: dict[str, str]) -> modify.Request:
    """New series and instance UIDs, these values set; "Replace" and "Remove" of the body
    apply too; the sources are deleted unless "KeepSource" (Orthanc's split and merge)."""
    req = modify.Request(SERIES, False, force=True, keep_source=flag(body, "KeepSource", False))
    try:
        extra = modify.parse_request({k: body[k] for k in ("Replace", "Remove") if k in body},
                                     SERIES, True)
    except modify.ModifyError as e:
        raise HttpError(400, "Bad request", str(e)) from None
    req.replace.update(extra.replace)
    req.remove.update(extra.remove)
    for keyword, value in values.items():
        req.replace[int(tag_for_keyword(keyword))] = value  # type: ignore[arg-type]
    return req


def _restructure_job(context: ServerContext, chosen: list[Resource], req: modify.Request,
                     key: str, value: str) -> Job:
    def work(job: Job) -> dict[str, Any]:
        results = _modify_each(context, job, [(res, req) for res in chosen])
        target = ""
        for result in results:
            new = context.index.get(result["ID"])
            parent = browse.ancestor(context, new, STUDY) if new is not None else None
            target = parent.public_id if parent is not None else target
        return {**_counts(results), "TargetStudy": target, key: value}

    return Job("ResourceModification", work)
