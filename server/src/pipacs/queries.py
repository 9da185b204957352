"""Finding resources (C-FIND, /tools/find, QIDO-RS): constraints matched against the index,
and the value of any tag for a resource found (main, computed, or read from its file)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from . import dicomfile
from .dicomfile import MAIN_TAGS
from .ids import INSTANCE, PATIENT, SERIES, STUDY
from .index import METADATA_NUMBERS, Index
from .matching import exact_value, make_matcher

logger = logging.getLogger(__name__)

# Where each main tag lives (the lowest level that keeps it).
TAG_LEVEL = {kw: lv for lv in (INSTANCE, SERIES, STUDY, PATIENT) for kw in MAIN_TAGS[lv]}
COMPUTED_TAGS = {
    "NumberOfPatientRelatedStudies": (PATIENT, STUDY),
    "NumberOfPatientRelatedSeries": (PATIENT, SERIES),
    "NumberOfPatientRelatedInstances": (PATIENT, INSTANCE),
    "NumberOfStudyRelatedSeries": (STUDY, SERIES),
    "NumberOfStudyRelatedInstances": (STUDY, INSTANCE),
    "NumberOfSeriesRelatedInstances": (SERIES, INSTANCE),
}


@dataclass
class Match:
    """A resource found by a query, with its ancestors (lists indexed by level)."""

    level: int
    tags: list[dict[str, str]]
    public_ids: list[str]
    rows: list[int]
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def public_id(self) -> str:
        return self.public_ids[self.level]


def find(
    index: Index,
    level: int,
    query: dict[str, str],
    *,
    case_sensitive_pn: bool,
    limit: int,
    value_of: Callable[[Match, str], str],
) -> tuple[list[Match], bool]:
    """Resources at `level` matching every constraint; returns (matches, complete).
    `value_of` gives the tags the index does not keep (see `value_of` below).

    Raises matching.QueryError for a malformed constraint.
    """
    cs_pn = case_sensitive_pn
    plain = []
    special = []
    uid_in: dict[int, list[str]] = {}
    equal: dict[int, dict[str, str]] = {}  # narrows in SQL; the matchers still decide
    for kw, value in query.items():
        m = make_matcher(kw, value, case_sensitive_pn=cs_pn)
        if m is None:
            continue
        lv = TAG_LEVEL.get(kw)
        if kw == "ImageOrientationPatient":
            lv = min(level, INSTANCE)
        if lv is not None and lv <= level:
            plain.append((kw, lv, m))
            if kw == dicomfile.LEVEL_UID[lv] and "*" not in value and "?" not in value:
                uid_in[lv] = [v.strip() for v in value.split("\\") if v.strip()]
            elif (exact := exact_value(kw, value, case_sensitive_pn=cs_pn)) is not None:
                equal.setdefault(lv, {})[kw] = exact
        else:
            special.append((kw, m))
    matches: list[Match] = []
    for tags, pids, rids in index.rows_with_ancestors(level, uid_in, equal):
        if not all(m(tags[lv].get(kw, "")) for kw, lv, m in plain):
            continue
        match = Match(level, tags, pids, rids)
        if special and not all(m_(value_of(match, kw)) for kw, m_ in special):
            continue
        matches.append(match)
        if limit and len(matches) > limit:
            return matches[:limit], False
    return matches, True


def value_of(
    index: Index, match: Match, keyword: str, *, aet: str, read_instance: Callable[[str], bytes]
) -> str:
    """The value of a tag for a found resource: main tags, computed tags, then the file
    (read with `read_instance`, by public ID). `aet` answers RetrieveAETitle."""
    lv = TAG_LEVEL.get(keyword)
    if lv is not None and lv <= match.level:
        return match.tags[lv].get(keyword, "")
    if keyword in match.extra:
        return match.extra[keyword]
    value = _computed(index, match, keyword, aet)
    if value is None:
        value = _from_file(index, match, keyword, read_instance)
    match.extra[keyword] = value
    return value


def _computed(index: Index, match: Match, keyword: str, aet: str) -> str | None:
    rid = match.rows[match.level]
    if keyword in COMPUTED_TAGS:
        at, target = COMPUTED_TAGS[keyword]
        if at != match.level:
            return None
        return str(index.count_descendants(rid, at, target))
    if keyword == "ModalitiesInStudy" and match.level == STUDY:
        return "\\".join(index.descendant_tag_values(rid, STUDY, SERIES, "Modality"))
    if keyword in ("SOPClassUID", "SOPClassesInStudy") and match.level >= STUDY:
        if match.level == INSTANCE and keyword == "SOPClassUID":
            return index.metadata(rid).get(METADATA_NUMBERS["SopClassUid"], "")
        classes = sorted({i[2] for i in index.instances_under(rid, match.level) if i[2]})
        return "\\".join(classes)
    if keyword == "RetrieveAETitle":
        return aet
    if keyword == "InstanceAvailability":
        return "ONLINE"
    if keyword == "QueryRetrieveLevel":
        return ("PATIENT", "STUDY", "SERIES", "IMAGE")[match.level]
    return None


def _from_file(
    index: Index, match: Match, keyword: str, read_instance: Callable[[str], bytes]
) -> str:
    """Read a non-indexed tag from the first instance of the resource."""
    instances = index.instances_under(match.rows[match.level], match.level)
    if not instances:
        return ""
    try:
        ds = dicomfile.read_full(read_instance(instances[0][0]))
    except (OSError, KeyError, ValueError) as e:
        logger.warning("cannot read %s for tag %s: %s", instances[0][0], keyword, e)
        return ""
    return dicomfile.values_of(ds, [keyword]).get(keyword, "")
