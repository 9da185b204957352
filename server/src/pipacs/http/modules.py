"""A resource's DICOM module (/module, /module-patient) and its instances' tags
(/instances-tags), with Orthanc's ?short and ?simplify."""

from __future__ import annotations

from typing import Any

import bottle
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from .. import browse, dicomfile, tagsjson
from ..context import ServerContext
from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from ..index import Resource
from .common import LEVEL_ROUTE, PLURALS, resource
from .errors import HttpError
from .responses import json_response

# The attributes of each level's module, as DICOM PS3.3 lists them: Patient (C.7.1.1),
# General Study (C.7.2.1), General Series (C.7.3.1) and SOP Common (C.12.1).
MODULES = {
    PATIENT: """PatientName PatientID IssuerOfPatientID IssuerOfPatientIDQualifiersSequence
        TypeOfPatientID PatientBirthDate PatientBirthTime PatientSex QualityControlSubject
        ReferencedPatientSequence ReferencedPatientPhotoSequence OtherPatientIDs
        OtherPatientIDsSequence OtherPatientNames EthnicGroup PatientComments
        PatientSpeciesDescription PatientSpeciesCodeSequence PatientBreedDescription
        PatientBreedCodeSequence BreedRegistrationSequence ResponsiblePerson
        ResponsiblePersonRole ResponsibleOrganization PatientIdentityRemoved
        DeidentificationMethod DeidentificationMethodCodeSequence""",
    STUDY: """StudyInstanceUID StudyDate StudyTime ReferringPhysicianName
        ReferringPhysicianIdentificationSequence ConsultingPhysicianName StudyID
        AccessionNumber IssuerOfAccessionNumberSequence StudyDescription PhysiciansOfRecord
        PhysiciansOfRecordIdentificationSequence NameOfPhysiciansReadingStudy
        PhysiciansReadingStudyIdentificationSequence RequestingServiceCodeSequence
        ReferencedStudySequence ProcedureCodeSequence
        ReasonForPerformedProcedureCodeSequence""",
    SERIES: """Modality SeriesInstanceUID SeriesNumber Laterality SeriesDate SeriesTime
        PerformingPhysicianName PerformingPhysicianIdentificationSequence ProtocolName
        SeriesDescription SeriesDescriptionCodeSequence OperatorsName
        OperatorIdentificationSequence ReferencedPerformedProcedureStepSequence
        RelatedSeriesSequence AnatomicalOrientationType BodyPartExamined PatientPosition
        SmallestPixelValueInSeries LargestPixelValueInSeries RequestAttributesSequence
        PerformedProcedureStepID PerformedProcedureStepStartDate
        PerformedProcedureStepStartTime PerformedProcedureStepEndDate
        PerformedProcedureStepEndTime PerformedProcedureStepDescription
        PerformedProtocolCodeSequence CommentsOnThePerformedProcedureStep
        TreatmentSessionUID""",
    INSTANCE: """SpecificCharacterSet InstanceCreationDate InstanceCreationTime
        InstanceCreatorUID SOPClassUID SOPInstanceUID RelatedGeneralSOPClassUID
        OriginalSpecializedSOPClassUID CodingSchemeIdentificationSequence
        TimezoneOffsetFromUTC ContributingEquipmentSequence InstanceNumber SOPInstanceStatus
        SOPAuthorizationDateTime SOPAuthorizationComment
        AuthorizationEquipmentCertificationNumber EncryptedAttributesSequence
        OriginalAttributesSequence HL7StructuredDocumentReferenceSequence
        LongitudinalTemporalInformationModified""",
}
MODULE_TAGS = {level: {int(tag_for_keyword(k)) for k in words.split()  # type: ignore[arg-type]
                       if tag_for_keyword(k) is not None}
               for level, words in MODULES.items()}


def read_dataset(context: ServerContext, inst: Resource) -> Dataset:
    try:
        return dicomfile.read_full(context.read_instance(inst.public_id))
    except (KeyError, FileNotFoundError):
        raise HttpError(404, "Inexistent file", f"instance {inst.public_id} has no file") from None


def module_json(context: ServerContext, res: Resource, level: int) -> dict[str, Any]:
    """The `level` module's tags, read from one instance of `res` (as Orthanc does)."""
    instances = browse.descendants(context, res, INSTANCE) if res.level < INSTANCE else [res]
    if not instances:
        raise HttpError(404, "Unknown resource", f"{res.public_id} has no instance")
    ds = read_dataset(context, instances[0])
    kept = Dataset()
    for elem in ds:
        if int(elem.tag) in MODULE_TAGS[level]:
            kept.add(elem)
    return tagsjson.to_json(kept, tagsjson.mode_of(bottle.request.query))


def install(app: bottle.Bottle, context: ServerContext) -> None:

    @app.get(f"/{LEVEL_ROUTE}/<pid>/module")
    def module(plural: str, pid: str) -> str:
        level = PLURALS[plural]
        return json_response(module_json(context, resource(context, level, pid), level))

    @app.get("/studies/<pid>/module-patient")
    def module_patient(pid: str) -> str:
        return json_response(module_json(context, resource(context, STUDY, pid), PATIENT))

    @app.get("/<plural:re:patients|studies|series>/<pid>/instances-tags")
    def instances_tags(plural: str, pid: str) -> str:
        res = resource(context, PLURALS[plural], pid)
        mode = tagsjson.mode_of(bottle.request.query)
        return json_response({inst.public_id: tagsjson.to_json(read_dataset(context, inst), mode)
                              for inst in browse.descendants(context, res, INSTANCE)})
