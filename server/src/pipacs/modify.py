"""Modification and anonymization of stored resources (Orthanc's /modify and /anonymize)."""

from __future__ import annotations

import errno
import io
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from . import __version__, dicomfile, transcode
from .context import Origin, ServerContext, StoreRefused
from .ids import INSTANCE, LEVEL_NAMES, LEVEL_PLURALS, PATIENT, STUDY
from .index import METADATA_NUMBERS, DatabaseError, Resource
from .jsondataset import clip
from .storage import StorageFullError
from .values import is_multi

logger = logging.getLogger(__name__)

IDENTIFIERS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
DEIDENTIFICATION = f"pipacs {__version__} - PS 3.15 Table E.1-1 Basic Profile"

# PS3.15 Table E.1-1 basic profile, the attributes found in everyday images: the first set
# is emptied (Z and D actions), the second removed (X actions). UIDs are replaced (U).
EMPTIED = (
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "ContentCreatorName",
    "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest",
    "ContrastBolusAgent",
    "VerifyingObserverName",
    "PersonName",
    "ContentDate",
    "ContentTime",
)
REMOVED = (
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "OperatorsName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientIDs",
    "OtherPatientNames",
    "OtherPatientIDsSequence",
    "PatientBirthName",
    "PatientMotherBirthName",
    "MilitaryRank",
    "BranchOfService",
    "EthnicGroup",
    "Occupation",
    "AdditionalPatientHistory",
    "PatientComments",
    "MedicalRecordLocator",
    "DeviceSerialNumber",
    "StudyDescription",
    "SeriesDescription",
    "ImageComments",
    "RequestAttributesSequence",
    "SeriesDate",
    "SeriesTime",
    "AcquisitionDate",
    "AcquisitionTime",
    "AcquisitionDateTime",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "ProtocolName",
    "PerformedProcedureStepDescription",
    "PerformedProcedureStepID",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestedProcedureDescription",
    "RequestedProcedureID",
    "ScheduledProcedureStepID",
    "ReferencedPatientSequence",
    "ReferencedStudySequence",
    "ReferencedPerformedProcedureStepSequence",
    "IssuerOfPatientID",
    "CountryOfResidence",
    "RegionOfResidence",
    "PatientReligiousPreference",
    "SmokingStatus",
    "AdmittingDiagnosesDescription",
    "PatientState",
    "MedicalAlerts",
    "Allergies",
    "CurrentPatientLocation",
    "PatientInstitutionResidence",
    "ResponsiblePerson",
    "ResponsibleOrganization",
    "OverlayComments",
    "OverlayData",
    "TextComments",
    "DerivationDescription",
    "AcquisitionComments",
    "ReasonForStudy",
    "RequestedContrastAgent",
    "StudyComments",
    "InterpretationRecorder",
    "InterpretationTranscriber",
    "InterpretationAuthor",
    "InterpretationApproverSequence",
    "PhysiciansOfRecordIdentificationSequence",
    "PerformingPhysicianIdentificationSequence",
    "ReferringPhysicianIdentificationSequence",
    "InstitutionCodeSequence",
    "ModifiedAttributesSequence",
    "OriginalAttributesSequence",
    "DigitalSignaturesSequence",
    "DataSetTrailingPadding",
    "InstanceCreatorUID",
    "StorageMediaFileSetUID",
    "DetectorID",
    "GantryID",
    "TimezoneOffsetFromUTC",
)
# UI attributes that name a kind of thing, not one thing: never replaced.
KEPT_UIDS = {
    "SOPClassUID",
    "ReferencedSOPClassUID",
    "TransferSyntaxUID",
    "ImplementationClassUID",
    "MediaStorageSOPClassUID",
    "CodingSchemeUID",
    "ContextGroupExtensionCreatorUID",
    "PrivateInformationCreatorUID",
    "ReferencedSOPClassUIDInFile",
    "AffectedSOPClassUID",
    "RequestedSOPClassUID",
    "MappingResourceUID",
}


class ModifyError(ValueError):
    """The request cannot be applied; the message says why (a 400 for the client)."""


def tag_of(key: str) -> int:
    text = str(key).strip()
    if len(text) == 9 and text[4] in ",-|":
        try:
            return int(text[:4] + text[5:], 16)
        except ValueError:
            pass
    tag = tag_for_keyword(text)
    if tag is None:
        raise ModifyError(f"unknown DICOM tag {clip(repr(key))}")
    return int(tag)


@dataclass
class Request:
    """A parsed /modify or /anonymize body."""

    level: int
    anonymize: bool
    replace: dict[int, Any] = field(default_factory=dict)
    remove: set[int] = field(default_factory=set)
    keep: set[int] = field(default_factory=set)
    remove_private: bool = False
    keep_source: bool = True
    force: bool = False
    uid_map: dict[str, str] = field(default_factory=dict)
    patient_map: dict[str, str] = field(default_factory=dict)
    transcode: str = ""  # "Transcode": the transfer syntax of the new instances


def parse_request(body: dict[str, Any], level: int, anonymize: bool) -> Request:
    req = Request(level, anonymize)
    replace = body.get("Replace", {})
    if not isinstance(replace, dict):
        raise ModifyError('"Replace" must be a JSON object')
    for key, value in replace.items():
        if not isinstance(value, str | int | float):
            raise ModifyError(f"the new value of {clip(key)} must be a string")
        req.replace[tag_of(key)] = str(value)
    for name, target in (("Remove", req.remove), ("Keep", req.keep)):
        items = body.get(name, [])
        if not isinstance(items, list):
            raise ModifyError(f'"{name}" must be a list of tags')
        target.update(tag_of(k) for k in items)
    for name in ("Force", "KeepSource", "RemovePrivateTags", "KeepPrivateTags"):
        if name in body and not isinstance(body[name], bool):
            raise ModifyError(f"{name} must be true or false")
    syntax = body.get("Transcode", "")
    if not isinstance(syntax, str):
        raise ModifyError('"Transcode" must be a transfer syntax UID')
    why = transcode.cannot_write(syntax, allow_lossy=True) if syntax else None
    if why:
        raise ModifyError(f'"Transcode": {why}')
    req.transcode = syntax
    req.force = body.get("Force", False)
    req.keep_source = body.get("KeepSource", True)
    if anonymize:
        req.remove_private = not body.get("KeepPrivateTags", False)
    else:
        req.remove_private = body.get("RemovePrivateTags", False)
    ids = {int(tag_for_keyword(k)): lv for lv, k in enumerate(IDENTIFIERS)}  # type: ignore[arg-type]
    touched = set(req.replace) | set(req.remove) | set(req.keep)
    if not anonymize:
        for tag, lv in ids.items():
            if tag in touched and not req.force and not (lv == PATIENT and level == PATIENT):
                raise ModifyError(f"modifying {IDENTIFIERS[lv]} needs \"Force\": true")
        if level == PATIENT and int(tag_for_keyword("PatientID")) not in req.replace:  # type: ignore[arg-type]
            raise ModifyError("modifying a patient needs a new PatientID in \"Replace\"")
    return req


def _new_uid(req: Request, old: str) -> str:
    if old not in req.uid_map:
        req.uid_map[old] = generate_uid()
    return req.uid_map[old]


def _set(ds: Dataset, tag: int, value: Any) -> None:
    if tag in ds:
        ds[tag].value = value
        return
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = "LO"
    ds.add_new(tag, vr.split(" ")[0], value)


def _remap_uids(ds: Dataset, req: Request) -> None:
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                _remap_uids(item, req)
        elif elem.VR == "UI" and elem.value and elem.keyword not in KEPT_UIDS \
                and elem.tag not in req.keep:
            if is_multi(elem.value):
                elem.value = [_new_uid(req, str(v)) for v in elem.value]
            else:
                elem.value = _new_uid(req, str(elem.value))


def apply(ds: Dataset, req: Request) -> Dataset:
    """Change one dataset as the request says (in place) and return it."""
    if req.anonymize:
        old_patient = str(ds.get("PatientID", ""))
        new_patient = req.patient_map.setdefault(old_patient, str(uuid.uuid4()))
        for kw in REMOVED:
            tag = tag_for_keyword(kw)
            if tag is not None and tag in ds and tag not in req.keep:
                del ds[tag]
        for kw in EMPTIED:
            tag = tag_for_keyword(kw)
            if tag is not None and tag in ds and tag not in req.keep:
                ds[tag].value = None
        for elem in list(ds):  # curve data and overlay data (X)
            group = elem.tag.group
            if (0x5000 <= group <= 0x50FF or (0x6000 <= group <= 0x60FF
                                              and elem.tag.element == 0x3000)) \
                    and elem.tag not in req.keep:
                del ds[elem.tag]
        _remap_uids(ds, req)
        if int(tag_for_keyword("PatientID")) not in req.keep:  # type: ignore[arg-type]
            ds.PatientID = new_patient
        if int(tag_for_keyword("PatientName")) not in req.keep:  # type: ignore[arg-type]
            ds.PatientName = "Anonymized"
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = DEIDENTIFICATION
    else:
        for lv in range(max(req.level, STUDY), INSTANCE + 1):
            tag = int(tag_for_keyword(IDENTIFIERS[lv]))  # type: ignore[arg-type]
            if tag in ds and tag not in req.keep and tag not in req.replace:
                ds[tag].value = _new_uid(req, str(ds[tag].value))
    if req.remove_private:
        ds.remove_private_tags()
    for tag in req.remove:
        if tag in ds:
            del ds[tag]
    for tag, value in req.replace.items():
        _set(ds, tag, value)
    if "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = pydicom.uid.UID(dicomfile.IMPLEMENTATION_CLASS_UID)
    ds.file_meta.ImplementationVersionName = dicomfile.IMPLEMENTATION_VERSION
    return ds


def modified_bytes(context: ServerContext, public_id: str, req: Request) -> bytes:
    ds = dicomfile.read_full(context.read_instance(public_id))
    apply(ds, req)
    if req.transcode:
        quality = context.settings.dicom_lossy_transcoding_quality
        return transcode.to_bytes(transcode.transcode_dataset(ds, req.transcode, True, quality))
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def run(context: ServerContext, res: Resource, req: Request, instances: list[Resource],
        progress: Any = None) -> dict[str, Any]:
    """Modify every instance under `res`, storing the results; Orthanc's job Content.

    A full disk (a store refused as "Full", an index write refused) stops the run: the
    instances it stored are deleted again, the source is kept, and the error is raised
    (StorageFullError for a refused store) for the job to fail with."""
    new_ids: tuple[str, ...] | None = None
    failed = 0
    meta_key = METADATA_NUMBERS["AnonymizedFrom" if req.anonymize else "ModifiedFrom"]
    marked: set[str] = set()
    made: list[str] = []  # instances this run created (not ones it found already stored)
    try:
        for n, inst in enumerate(instances):
            if progress is not None:
                progress(n, len(instances))
            try:
                data = modified_bytes(context, inst.public_id, req)
                result = context.store(data, Origin("RestApi"))
            except StoreRefused as e:
                if e.reason == "Full":
                    raise StorageFullError(errno.ENOSPC, e.message) from e
                logger.error("cannot modify instance %s: %s", inst.public_id, e)
                failed += 1
                continue
            except (OSError, KeyError, ValueError, pydicom.errors.InvalidDicomError) as e:
                logger.error("cannot modify instance %s: %s", inst.public_id, e)
                failed += 1
                continue
            if result.status == "Success" and not context.settings.overwrite_instances:
                made.append(result.ids[INSTANCE])
            new_ids = result.ids
            sources = _sources(context, inst)
            for lv in range(PATIENT, INSTANCE + 1):
                pid = result.ids[lv]
                if pid in marked or (lv < req.level and not req.anonymize):
                    continue
                target = context.index.get(pid, lv)
                if target is not None and sources[lv]:
                    context.index.set_metadata(target.id, lv, pid, meta_key, sources[lv])
                    marked.add(pid)
    except (OSError, DatabaseError):
        _undo(context, made)
        raise
    if not req.keep_source and failed == 0:
        context.delete(res.public_id)
    if new_ids is None:
        raise ModifyError("no instance could be modified")
    level = res.level
    return {"Description": "REST API", "FailedInstancesCount": failed,
            "ID": new_ids[level], "InstancesCount": len(instances) - failed,
            "IsAnonymization": req.anonymize, "Path": f"/{LEVEL_PLURALS[level]}/{new_ids[level]}",
            "PatientID": new_ids[PATIENT], "Type": LEVEL_NAMES[level]}


def _undo(context: ServerContext, made: list[str]) -> None:
    """Delete the instances an unfinished run stored (deleting works on a full disk)."""
    for public_id in reversed(made):
        try:
            context.delete(public_id)
        except (OSError, DatabaseError) as e:
            logger.error("cannot delete instance %s, stored by a modification that "
                         "could not finish: %s", public_id, e)


def _sources(context: ServerContext, inst: Resource) -> list[str]:
    out = [""] * 4
    r: Resource | None = inst
    while r is not None:
        out[r.level] = r.public_id
        r = context.index.get_by_id(r.parent) if r.parent is not None else None
    return out

