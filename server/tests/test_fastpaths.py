"""The hand-written encodings used on the C-STORE path match pynetdicom's and pydicom's."""

from __future__ import annotations

import io

import pydicom
import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from pipacs.dicom.fastrsp import encode_store_response
from pipacs.dicom.reactor import encode_pdata
from pipacs.dicomfile import IMPLEMENTATION_CLASS_UID, part10_header


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC000, 0x0124])
@pytest.mark.parametrize("sop_uid", ["1.2.3.4", "1.2.3.45", "2.25.1234567890123456789"])
def test_store_response_matches_pynetdicom(status: int, sop_uid: str) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 7
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rsp.AffectedSOPInstanceUID = sop_uid
    rsp.Status = status
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    expected = b"".join(p.presentation_data_value_list[0][1][1:] for p in msg.encode_msg(1, 16384))
    assert encode_store_response(rsp) == expected


@pytest.mark.parametrize("aet", ["", "STORESCU", "ODD"])
def test_part10_header_reads_back(aet: str) -> None:
    header = part10_header("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", "1.2.840.10008.1.2", aet)
    meta = pydicom.dcmread(io.BytesIO(header), force=True).file_meta
    assert meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
    assert meta.MediaStorageSOPInstanceUID == "1.2.3.45"
    assert meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.get("SourceApplicationEntityTitle", "") == aet
    # group length is what pydicom computes for the same elements
    ref = create_file_meta(
        sop_class_uid=meta.MediaStorageSOPClassUID,
        sop_instance_uid=meta.MediaStorageSOPInstanceUID,
        transfer_syntax=meta.TransferSyntaxUID,
        implementation_uid=IMPLEMENTATION_CLASS_UID,
        implementation_version="PIPACS_01",
    )
    if aet:
        ref.SourceApplicationEntityTitle = aet
    assert header[132:] == encode_file_meta(ref)


@pytest.mark.parametrize("implicit", [True, False])
def test_find_answer_matches_pydicom(implicit: bool) -> None:
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import encode

    from pipacs.dicom.fastrsp import Answer

    values = {
        "SpecificCharacterSet": "ISO_IR 192",
        "QueryRetrieveLevel": "STUDY",
        "PatientName": "Müller^Jürgen",
        "PatientID": "P1",
        "StudyDate": "20200101",
        "StudyInstanceUID": "1.2.3",
        "ModalitiesInStudy": "CT\\MR",
        "NumberOfStudyRelatedInstances": "20",
        "ReferringPhysicianName": "",
        "RetrieveAETitle": "PIPACS",
        "NumberOfSlices": "12",
        "StudyDescription": "odd",
    }
    answer = Answer()
    ds = Dataset()
    for kw, v in values.items():
        answer.set(kw, v)
        if kw == "NumberOfSlices":
            ds.NumberOfSlices = int(v)
        elif "\\" in v:
            setattr(ds, kw, v.split("\\"))
        else:
            setattr(ds, kw, v or None)
    ds.ReferencedStudySequence = []
    answer.set("ReferencedStudySequence", "")
    assert answer.encode(implicit) == encode(ds, implicit, True)


def test_find_response_command_matches_pynetdicom() -> None:
    from io import BytesIO

    from pynetdicom.dimse_messages import C_FIND_RSP
    from pynetdicom.dimse_primitives import C_FIND

    from pipacs.dicom.fastrsp import encode_find_response

    for status, identifier in ((0xFF00, b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY "), (0x0000, None)):
        rsp = C_FIND()
        rsp.MessageIDBeingRespondedTo = 3
        rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.1"
        rsp.Status = status
        rsp.Identifier = BytesIO(identifier) if identifier else None
        msg = C_FIND_RSP()
        msg.primitive_to_message(rsp)
        pdvs = [p.presentation_data_value_list[0][1] for p in msg.encode_msg(1, 16384)]
        command, data = encode_find_response(rsp)
        assert command == b"".join(p[1:] for p in pdvs if p[0] & 1)
        assert data == b"".join(p[1:] for p in pdvs if not p[0] & 1)


@pytest.mark.parametrize("context_id", [1, 3, 255])
@pytest.mark.parametrize("size", [0, 1, 101, 16378])
def test_pdata_pdu_matches_pynetdicom(context_id: int, size: int) -> None:
    """The P-DATA-TF PDUs a C-STORE response is sent in from the association thread."""
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_primitives import P_DATA

    pdv = b"\x03" + bytes(range(256)) * (size // 256) + bytes(size % 256)
    primitive = P_DATA()
    primitive.presentation_data_value_list.append((context_id, pdv))
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    assert encode_pdata(context_id, pdv) == pdu.encode()
