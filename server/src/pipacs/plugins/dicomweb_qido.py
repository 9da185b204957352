"""QIDO-RS: searching studies, series and instances, answered from the index."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..context import ServerContext
from ..dicomfile import MAIN_TAGS
from ..ids import INSTANCE, PATIENT, SERIES, STUDY
from ..matching import Matcher, QueryError, exact_value, make_matcher
from ..queries import TAG_LEVEL as _TAG_LEVEL
from ..queries import Match
from .dicomweb_json import element_from_text, hex_tag, keyword_of, tag_of, vr_of_tag

logger = logging.getLogger(__name__)

# Attributes answered at each level (PS3.18 10.6.3.3, as Orthanc's plugin answers them: a level
# also carries the attributes of the levels above it). Those the index does not keep (Timezone
# Offset From UTC, Specific Character Set, Performed Procedure Step dates) are left to
# `includefield`, which reads them from a file; Rows, Columns and Bits Allocated of instances
# come from the instance's metadata.
DEFAULT_FIELDS: dict[int, tuple[str, ...]] = {
    STUDY: (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyID",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    SERIES: (
        "Modality",
        "SeriesDescription",
        "SeriesNumber",
        "SeriesInstanceUID",
        "NumberOfSeriesRelatedInstances",
    ),
    INSTANCE: (
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "BitsAllocated",
        "NumberOfFrames",
    ),
}
# Per level, attributes not kept by the index that the default answer still carries.
FROM_METADATA = {INSTANCE: ("Rows", "Columns", "BitsAllocated")}
COMPUTED = {
    "NumberOfStudyRelatedSeries": STUDY,
    "NumberOfStudyRelatedInstances": STUDY,
    "ModalitiesInStudy": STUDY,
    "NumberOfSeriesRelatedInstances": SERIES,
    "SOPClassUID": INSTANCE,
}
# Parameters of the query that are not attribute constraints.
CONTROL = {"limit", "offset", "includefield", "fuzzymatching", "orderby"}
MAX_LIMIT = 1_000_000
ADDITIONAL_RESULTS = '299 pipacs "There are additional results that can be requested"'
LEVEL_KEY = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*\Z")


class BadQuery(ValueError):
    """A QIDO request that cannot be answered; the message says why (HTTP 400)."""


def valid_uid(uid: str) -> bool:
    return len(uid) <= 64 and _UID.match(uid) is not None


@dataclass
class Query:
    level: int
    scope: dict[int, str]  # level -> UID the results must lie under
    constraints: list[tuple[str, str]] = field(default_factory=list)
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    limit: int = 0
    offset: int = 0


def _int_param(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be an integer, not {raw[:40]!r}") from None
    if not 0 <= value <= MAX_LIMIT:
        raise BadQuery(f"{name} must be between 0 and {MAX_LIMIT}, not {raw[:40]}")
    return value


def parse_query(level: int, scope: dict[int, str], items: list[tuple[str, str]]) -> Query:
    """A Query from the request's (key, value) pairs; raises BadQuery."""
    q = Query(level, scope)
    for key, value in items:
        lower = key.lower()
        if lower == "limit":
            q.limit = _int_param("limit", value)
        elif lower == "offset":
            q.offset = _int_param("offset", value)
        elif lower == "includefield":
            for name in value.split(","):
                name = name.strip()
                if name.lower() == "all":
                    q.include_all = True
                elif name:
                    kw = _keyword(name)
                    if kw is None:
                        raise BadQuery(f"includefield: unknown attribute {name[:40]!r}")
                    q.include.add(kw)
        elif lower == "fuzzymatching":
            if value.lower() not in ("true", "false"):
                raise BadQuery("fuzzymatching must be true or false")
            # Fuzzy matching is optional in PS3.18 and not offered: plain matching applies.
        elif lower in CONTROL or key.startswith("_"):
            continue
        else:
            kw = _keyword(key)
            if kw is None or "." in key:
                raise BadQuery(f"unknown or unsupported query attribute {key[:60]!r}")
            q.constraints.append((kw, value))
    return q


def _keyword(name: str) -> str | None:
    tag = tag_of(name)
    if tag is None:
        return None
    return keyword_of(tag) or None


class Qido:
    """Runs QIDO queries against the index through the server context."""

    def __init__(
        self,
        context: ServerContext,
        case_sensitive: bool,
        instance_extra: Callable[[int, str], dict[str, Any]],
    ):
        self.context = context
        self.case_sensitive = case_sensitive
        # (instance row id, public id) -> DICOM JSON elements of its metadata (from files)
        self.instance_extra = instance_extra

    # ------------------------------------------------------------ matching

    def _rows(self, q: Query) -> Iterator[tuple[list[dict[str, str]], list[str], list[int]]]:
        """The index's rows for the query's level, narrowed by the URL's scope and by the
        level's own UID list when it has one."""
        uid_in = {lv: [uid] for lv, uid in q.scope.items()}
        own = [v for k, v in q.constraints if k == LEVEL_KEY[q.level]]
        if len(own) == 1 and "*" not in own[0] and "?" not in own[0]:
            uids = [u.strip() for u in re.split(r"[,\\]", own[0]) if u.strip()]
            if q.level in uid_in:
                uids = [u for u in uids if u in uid_in[q.level]]
            uid_in[q.level] = uids
        equal: dict[int, dict[str, str]] = {}  # narrows in SQL; the matchers still decide
        for kw, value in q.constraints:
            lv = _TAG_LEVEL.get(kw)
            if lv is None or lv > q.level or kw == "ImageOrientationPatient" or lv in uid_in:
                continue
            if element_vr(kw) == "UI":  # as in _matchers: a comma separates UIDs too
                value = value.replace(",", "\\")
            exact = exact_value(kw, value, case_sensitive_pn=self.case_sensitive)
            if exact is None:
                continue
            if kw == LEVEL_KEY[lv]:  # a PatientID (or a UID above the level): its index
                uid_in[lv] = [exact]
            else:
                equal.setdefault(lv, {})[kw] = exact
        return self.context.index.rows_with_ancestors(q.level, uid_in, equal)

    def _matchers(self, q: Query) -> tuple[list[Any], list[Any]]:
        plain, special = [], []
        for kw, value in q.constraints:
            tag = tag_of(kw)
            assert tag is not None
            if element_vr(kw) == "UI":
                value = value.replace(",", "\\")
            try:
                m = make_matcher(kw, value, case_sensitive_pn=self.case_sensitive)
            except QueryError as e:
                raise BadQuery(str(e)) from None
            if m is None:
                continue
            lv = _TAG_LEVEL.get(kw)
            if kw == "ImageOrientationPatient":
                lv = min(q.level, INSTANCE)
            if lv is not None and lv <= q.level:
                plain.append((kw, lv, m))
            else:
                special.append((kw, _any_value(m)))
        return plain, special

    def search(self, q: Query, base: str) -> tuple[list[dict[str, Any]], bool]:
        """The answer's datasets and whether more results lie beyond the limit."""
        plain, special = self._matchers(q)
        found: list[Match] = []
        wanted = q.offset + q.limit if q.limit else 0
        more = False
        skipped = 0
        for tags, pids, rids in self._rows(q):
            if not all(m(tags[lv].get(kw, "")) for kw, lv, m in plain):
                continue
            match = Match(q.level, tags, pids, rids)
            if special and not all(m(self._value(match, kw)) for kw, m in special):
                continue
            if skipped < q.offset:
                skipped += 1
                continue
            if wanted and len(found) >= q.limit:
                more = True
                break
            found.append(match)
        return self._answer(q, found, base), more

    def _value(self, match: Match, kw: str) -> str:
        if kw in match.extra:
            return match.extra[kw]
        if kw == "SOPClassUID" and match.level == INSTANCE:
            rid = match.rows[INSTANCE]
            value = self.context.index.sop_classes([rid]).get(rid, "")
            match.extra[kw] = value
            return value
        return self.context.value_of(match, kw)

    # ------------------------------------------------------------ answering

    def _fields(self, q: Query) -> list[str]:
        names: list[str] = []
        for lv in range(STUDY, q.level + 1):
            names += DEFAULT_FIELDS[lv]
        if q.include_all:
            for lv in range(PATIENT, q.level + 1):
                names += MAIN_TAGS[lv]
            names += [k for k, lv in COMPUTED.items() if lv <= q.level]
        names += sorted(q.include)
        seen: dict[str, None] = {}
        for n in names:
            seen.setdefault(n, None)
        return list(seen)

    def _answer(self, q: Query, found: list[Match], base: str) -> list[dict[str, Any]]:
        if not found:
            return []
        level = q.level
        computed = self._computed(level, found)
        fields = self._fields(q)
        out = []
        for match in found:
            computed_here = computed.get(match.rows[level], {})
            extra: dict[str, Any] | None = None
            items: dict[str, Any] = {}
            for kw in fields:
                tag = tag_of(kw)
                if tag is None:
                    continue
                lv = _TAG_LEVEL.get(kw)
                if kw == "ImageOrientationPatient":
                    lv = level
                if lv is not None and lv <= level:
                    value = match.tags[lv].get(kw)
                    if value is None:
                        continue
                    items[hex_tag(tag)] = element_from_text(tag, value)
                elif kw in computed_here:
                    items[hex_tag(tag)] = element_from_text(tag, computed_here[kw])
                elif level == INSTANCE and (
                    kw in FROM_METADATA[INSTANCE] or (kw in q.include and COMPUTED.get(kw) is None)
                ):
                    if extra is None:
                        extra = self.instance_extra(match.rows[INSTANCE], match.public_id)
                    if hex_tag(tag) in extra:
                        items[hex_tag(tag)] = extra[hex_tag(tag)]
                elif kw in q.include or q.include_all:
                    value = self._value(match, kw)
                    if value or kw in q.include:
                        items[hex_tag(tag)] = element_from_text(tag, value)
            items["00081190"] = {"vr": "UR", "Value": [base + self._path(match)]}
            out.append(dict(sorted(items.items())))
        return out

    @staticmethod
    def _path(match: Match) -> str:
        uids = [match.tags[lv].get(LEVEL_KEY[lv], "") for lv in range(STUDY, match.level + 1)]
        words = ("studies", "series", "instances")
        return "/".join(f"{w}/{u}" for w, u in zip(words, uids, strict=False))

    def _computed(self, level: int, found: list[Match]) -> dict[int, dict[str, str]]:
        """Computed attributes of every result at once (one query per chunk of results)."""
        rids = [m.rows[level] for m in found]
        out: dict[int, dict[str, str]] = {r: {} for r in rids}
        index = self.context.index
        if level == STUDY:
            for rid, (nseries, ninst, mods) in index.study_summaries(rids).items():
                out[rid].update(
                    NumberOfStudyRelatedSeries=str(nseries),
                    NumberOfStudyRelatedInstances=str(ninst),
                    ModalitiesInStudy="\\".join(mods),
                )
        elif level == SERIES:
            counts = index.child_counts(rids)
            for rid in rids:
                out[rid]["NumberOfSeriesRelatedInstances"] = str(counts.get(rid, 0))
        elif level == INSTANCE:
            for rid, sop_class in index.sop_classes(rids).items():
                out[rid]["SOPClassUID"] = sop_class
        return out


def element_vr(keyword: str) -> str:
    tag = tag_of(keyword)
    return vr_of_tag(tag) if tag is not None else ""


def _any_value(m: Matcher) -> Matcher:
    """A multi-valued attribute matches when one of its values does (ModalitiesInStudy)."""

    def match(value: str) -> bool:
        if m(value):
            return True
        return "\\" in value and any(m(v) for v in value.split("\\"))

    return match
