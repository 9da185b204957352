"""Orthanc's matching rules for C-FIND and /tools/find: wildcards, ranges, lists."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache

Matcher = Callable[[str], bool]

RANGE_VRS = {"DA", "TM", "DT"}
# VRs whose values are compared exactly (no wildcards), as the standard says.
NO_WILDCARD_VRS = {"UI", "SQ", "OB", "OW", "OF", "UN", "US", "UL", "SS", "SL", "FL", "FD", "AT"}


class QueryError(ValueError):
    """A query value that cannot be understood; the message names the tag."""


@lru_cache(maxsize=1024)
def vr_of(keyword: str) -> str:
    # imported here: the index imports `fold`, and `pipacs --schema` should not load pydicom
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        return ""
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return ""


def fold(s: str) -> str:
    """Case- and accent-insensitive form, as Orthanc compares names.

    It keeps prefixes: fold(a + b) == fold(a) + fold(b). NFKD decomposes character by
    character and reorders only combining marks, which are dropped; upper() maps character
    by character. So a name starting with P has a folded form starting with fold(P).
    """
    decomposed = unicodedata.normalize("NFKD", s)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).upper()


def _wildcard_regex(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(out) + r"\Z", 0 if case_sensitive else re.S)


def _normalise_time(t: str) -> str:
    t = t.replace(":", "")
    if "." in t:
        whole, frac = t.split(".", 1)
        return whole.ljust(6, "0") + "." + frac
    return t.ljust(6, "0")


def make_matcher(keyword: str, value: str, *, case_sensitive_pn: bool = False) -> Matcher | None:
    """A predicate for one query constraint, or None for a universal match."""
    value = value.strip()
    if value in ("", "*"):
        return None
    vr = vr_of(keyword)
    case_sensitive = not (vr == "PN" and not case_sensitive_pn)
    if "\\" in value:
        wanted = [w.strip() for w in value.split("\\") if w.strip()]
        if vr == "UI":
            uids = set(wanted)
            return lambda v: v in uids
        subs = [make_matcher(keyword, w, case_sensitive_pn=case_sensitive_pn) for w in wanted]
        if any(m is None for m in subs):
            return None
        return lambda v: any(m(v) for m in subs if m is not None)
    if vr in RANGE_VRS and "-" in value and not ("*" in value or "?" in value):
        lo, _, hi = value.partition("-")
        lo, hi = lo.strip(), hi.strip()
        if vr == "TM":
            lo = _normalise_time(lo) if lo else ""
            hi = _normalise_time(hi) if hi else ""
        norm: Callable[[str], str] = _normalise_time if vr == "TM" else str.strip

        if vr == "DA" and not all(re.fullmatch(r"\d{8}", x) for x in (lo, hi) if x):
            raise QueryError(f"{keyword}: {value!r} is not a date range (YYYYMMDD-YYYYMMDD)")

        def in_range(v: str) -> bool:
            if not v:
                return False
            nv = norm(v)
            if lo and nv < lo:
                return False
            return not (hi and nv[: len(hi)] > hi)

        return in_range
    if vr == "DA" and not ("*" in value or "?" in value) and not re.fullmatch(r"\d{8}", value):
        raise QueryError(f"{keyword}: {value!r} is not a date (YYYYMMDD)")
    if vr not in NO_WILDCARD_VRS and ("*" in value or "?" in value):
        rx = _wildcard_regex(value if case_sensitive else fold(value), case_sensitive)
        if case_sensitive:
            return lambda v: rx.match(v) is not None
        return lambda v: rx.match(fold(v)) is not None
    if vr == "TM":
        want = _normalise_time(value)
        return lambda v: bool(v) and _normalise_time(v) == want
    if case_sensitive:
        return lambda v: v == value
    folded = fold(value)
    return lambda v: fold(v) == folded


class FoldedPrefix(str):
    """What `exact_value` gives for a PatientName that is not compared as it is: the start
    that the folded form (`fold`) of every matching name has. The index keeps patients'
    folded names in an indexed column and narrows on it with a range."""


def _literal_prefix(pattern: str) -> str:
    """The characters before the first wildcard."""
    return re.split(r"[*?]", pattern, maxsplit=1)[0]


def exact_value(keyword: str, value: str, *, case_sensitive_pn: bool = False) -> str | None:
    """The value a tag must equal when `make_matcher` would compare it as it is (no
    wildcard, list, range, time normalising or case folding), else None. The index can then
    narrow with an equality before the matcher runs.

    For a PatientName compared folded or with a wildcard after some literal characters
    (doe^john, DOE*, do?e^j*): a FoldedPrefix, which the index narrows on with a range. A
    pattern that starts with a wildcard (*DOE, ?OE*) has none: every name is read.
    """
    value = value.strip()
    if value in ("", "*") or "\\" in value:
        return None
    vr = vr_of(keyword)
    wildcard = "*" in value or "?" in value
    if keyword == "PatientName" and (wildcard or not case_sensitive_pn):
        if case_sensitive_pn:
            # the name starts with the pattern's literal prefix, so its folded form starts
            # with the folded prefix (see `fold`)
            prefix = fold(_literal_prefix(value))
        else:
            # `make_matcher` folds the pattern, then reads its wildcards (if the query had
            # any before folding; else it compares the folded forms whole)
            prefix = _literal_prefix(fold(value)) if wildcard else fold(value)
        return FoldedPrefix(prefix) if prefix else None
    if vr == "TM" or (vr == "PN" and not case_sensitive_pn):
        return None
    if vr in RANGE_VRS and "-" in value:
        return None
    if vr not in NO_WILDCARD_VRS and wildcard:
        return None
    return value
