"""Query/retrieve SCU: C-FIND and C-MOVE towards a configured modality."""

from __future__ import annotations

import logging
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from ..config import Modality
from ..ids import PATIENT
from ..values import set_value
from .peers import requested_handlers
from .scu import ScuError
from .statuses import PENDING, PENDING_WARNING, SUCCESS, SUCCESS_OR_WARNING

logger = logging.getLogger(__name__)

LEVEL_NAMES = ("PATIENT", "STUDY", "SERIES", "IMAGE")


def _ae(local_aet: str, timeout: int, *contexts: str) -> AE:
    ae = AE(ae_title=local_aet)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    for cx in contexts:
        ae.add_requested_context(cx)
    return ae


def _associate(ae: AE, m: Modality) -> Any:
    assoc = ae.associate(m.host, m.port, ae_title=m.aet,
                         evt_handlers=requested_handlers())
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else \
            "unreachable"
        raise ScuError(f"cannot open an association with {m.name} ({m.aet}@{m.host}:{m.port}):"
                       f" {why}")
    return assoc


def identifier(level: int, query: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = LEVEL_NAMES[level]
    for keyword, value in query.items():
        set_value(ds, keyword, value)
        if not value:
            setattr(ds, keyword, None)
    return ds


def find(local_aet: str, timeout: int, m: Modality, level: int,
         query: dict[str, str], limit: int = 0) -> list[Dataset]:
    """C-FIND in the study root model (patient root for the patient level)."""
    model = PatientRootQueryRetrieveInformationModelFind if level == PATIENT else \
        StudyRootQueryRetrieveInformationModelFind
    ae = _ae(local_aet, timeout, model)
    assoc = _associate(ae, m)
    answers: list[Dataset] = []
    try:
        for status, ds in assoc.send_c_find(identifier(level, query), model):
            if status is None:
                raise ScuError(f"C-FIND to {m.name}: no answer (timeout or abort)")
            code = int(status.Status)
            if code in (PENDING, PENDING_WARNING) and ds is not None:
                answers.append(ds)
                if limit and len(answers) >= limit:
                    break
            elif code != SUCCESS:
                raise ScuError(f"C-FIND to {m.name} failed with status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()
    return answers


def move(local_aet: str, timeout: int, m: Modality, target_aet: str,
         identifiers: list[Dataset]) -> tuple[int, int]:
    """C-MOVE each identifier to `target_aet`; returns (completed, failed) sub-operations."""
    models = (StudyRootQueryRetrieveInformationModelMove,
              PatientRootQueryRetrieveInformationModelMove)
    ae = _ae(local_aet, timeout, *models)
    assoc = _associate(ae, m)
    completed = failed = 0
    try:
        for ident in identifiers:
            model = models[1] if ident.get("QueryRetrieveLevel") == "PATIENT" else models[0]
            last = None
            for status, _ in assoc.send_c_move(ident, target_aet, model):
                if status is None:
                    raise ScuError(f"C-MOVE to {m.name}: no answer (timeout or abort)")
                last = status
            if last is None or int(last.Status) not in SUCCESS_OR_WARNING:
                code = int(last.Status) if last is not None else -1
                raise ScuError(f"C-MOVE from {m.name} failed with status 0x{code:04X}")
            completed += int(last.get("NumberOfCompletedSuboperations", 0) or 0)
            failed += int(last.get("NumberOfFailedSuboperations", 0) or 0)
    finally:
        if assoc.is_established:
            assoc.release()
    return completed, failed
