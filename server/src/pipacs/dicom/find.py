"""C-FIND SCP: the patient and study root models from the index, the worklist model from
the worklists plugin."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt

from .. import fastpaths
from ..context import ServerContext
from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from ..matching import QueryError, failure_status
from ..values import element_text
from .contexts import WORKLIST_FIND
from .fastrsp import Answer
from .peers import allowed
from .statuses import (
    CANCEL,
    IDENTIFIER_MISMATCH,
    NOT_AUTHORIZED,
    PENDING,
    SUCCESS,
    UNABLE_TO_PROCESS,
)

logger = logging.getLogger(__name__)

LEVELS = {"PATIENT": PATIENT, "STUDY": STUDY, "SERIES": SERIES, "IMAGE": INSTANCE}


def query_of(identifier: Dataset) -> tuple[str | None, dict[str, str], list[Any]]:
    """(QueryRetrieveLevel, {keyword: value} to match, the keys to answer: keywords, or
    tags for elements without one)."""
    level = None
    query: dict[str, str] = {}
    requested: list[Any] = []
    for elem in identifier:
        kw = elem.keyword
        if kw == "QueryRetrieveLevel":
            level = str(elem.value or "").strip().upper()
            continue
        if kw == "SpecificCharacterSet":
            continue
        requested.append(kw if kw else elem.tag)
        if kw and elem.VR != "SQ":
            query[kw] = element_text(elem)
    return level, query, requested


def answered(what: str, answers: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
    """A C-FIND handler's answers; a bad query or a failure ends them with UNABLE_TO_PROCESS
    (a handler never raises into pynetdicom). Also used by the worklists plugin."""
    try:
        yield from answers
    except QueryError as e:
        logger.error("%s: %s", what, e)
        yield failure_status(e, UNABLE_TO_PROCESS), None
    except Exception:
        logger.exception("%s failed", what)
        yield UNABLE_TO_PROCESS, None


def handle_find(event: evt.Event, ctx: ServerContext) -> Iterator[tuple[int, Any]]:
    yield from answered("C-FIND", _answers(event, ctx))


def _answers(event: evt.Event, ctx: ServerContext) -> Iterator[tuple[int, Any]]:
    if not allowed(event, ctx, "find"):
        yield NOT_AUTHORIZED, None
        return
    identifier = event.identifier
    model = str(event.request.AffectedSOPClassUID)
    if model == WORKLIST_FIND:
        yield from worklist_find(event, ctx, identifier)
        return
    level_name, query, requested = query_of(identifier)
    if level_name not in LEVELS:
        logger.error("C-FIND: bad QueryRetrieveLevel %r", level_name)
        yield IDENTIFIER_MISMATCH, None
        return
    level = LEVELS[level_name]
    s = ctx.settings
    limit = s.limit_find_instances if level == INSTANCE else s.limit_find_results
    matches, complete = ctx.find(level, query, limit=limit)
    encoded = fastpaths.installed("fast-responses")  # else pynetdicom encodes Datasets
    for match in matches:
        if event.is_cancelled:
            yield CANCEL, None
            return
        answer = Answer()
        answer.set("SpecificCharacterSet", "ISO_IR 192")
        answer.set("QueryRetrieveLevel", level_name)
        for key in requested:
            if isinstance(key, str):
                answer.set(key, ctx.value_of(match, key))
            else:
                answer.set_tag(key, identifier[key].VR)
        answer.set("RetrieveAETitle", s.dicom_aet)
        yield PENDING, answer if encoded else answer.to_dataset()
    if not complete:
        logger.warning("C-FIND answers cut at %d (LimitFindResults/LimitFindInstances)", limit)
    yield SUCCESS, None


def worklist_find(
    event: evt.Event, ctx: ServerContext, identifier: Dataset
) -> Iterator[tuple[int, Dataset | None]]:
    """Modality worklist queries are answered by the worklists plugin when it is enabled."""
    provider = ctx.plugins.worklist_provider
    if provider is None:
        logger.warning("C-FIND on the worklist model, but the worklists plugin is off")
        yield IDENTIFIER_MISMATCH, None
        return
    yield from provider(event, identifier)
