"""Orthanc's matching rules for C-FIND and /tools/find: wildcards, ranges, lists."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from typing import Any

Matcher = Callable[[str], bool]

RANGE_VRS = {"DA", "TM", "DT"}
# VRs whose values are compared exactly (no wildcards), as the standard says.
NO_WILDCARD_VRS = {"UI", "SQ", "OB", "OW", "OF", "UN", "US", "UL", "SS", "SL", "FL", "FD", "AT"}


# Limits of one wildcard pattern (a value with * or ?, or one item of a value list). The
# matcher takes linear time whatever the pattern; these keep each candidate's cost small
# on a classroom Pi open to any caller. Orthanc has none; real queries stay far below.
MAX_WILDCARDS = 32  # * and ? together
MAX_PATTERN_LENGTH = 256  # characters, once case-folded


class QueryError(ValueError):
    """A query value that cannot be understood; the message names the tag."""

    @property
    def comment(self) -> str:
        """The message as a C-FIND response's Error Comment (LO: 64 characters at most)."""
        return str(self)[:64]


class PatternRefused(QueryError):
    """A wildcard pattern over one of the limits above: refused (HTTP 400, C-FIND failure)
    rather than answered with no match, so the caller learns why."""

    def __init__(self, keyword: str, what: str, limit: int, found: int):
        super().__init__(f"{keyword}: at most {limit} {what} in a pattern ({found} given)")


def check_pattern(keyword: str, pattern: str) -> None:
    """Raise PatternRefused when a wildcard pattern is over MAX_WILDCARDS or
    MAX_PATTERN_LENGTH."""
    wildcards = pattern.count("*") + pattern.count("?")
    if wildcards > MAX_WILDCARDS:
        raise PatternRefused(keyword, "wildcards", MAX_WILDCARDS, wildcards)
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternRefused(keyword, "characters", MAX_PATTERN_LENGTH, len(pattern))


def failure_status(error: QueryError, code: int) -> Any:
    """A C-FIND failure status (a pydicom Dataset) whose Error Comment says why."""
    from pydicom.dataset import Dataset  # late, as in `vr_of`

    status = Dataset()
    status.Status = code
    status.ErrorComment = error.comment
    return status


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


class _Piece:
    """Text between two stars: literal characters and `?`, so every match has its length."""

    def __init__(self, text: str):
        self.length = len(text)
        self.literal = text if "?" not in text else None
        # No quantifier and no alternation: a try at one position compares at most
        # `length` characters, and a search tries each position once.
        self.rx = None if self.literal is not None else re.compile(
            "".join("." if c == "?" else re.escape(c) for c in text), re.S)

    def at(self, text: str, pos: int) -> bool:
        if self.rx is None:
            return text.startswith(self.literal or "", pos)
        return self.rx.match(text, pos) is not None

    def find(self, text: str, start: int, end: int) -> int:
        """The first position from `start` where the piece matches inside text[:end], or -1."""
        if self.rx is None:
            return text.find(self.literal or "", start, end)
        m = self.rx.search(text, start, end)
        return -1 if m is None else m.start()


class _Line:
    """A wildcard pattern matched by the greedy segment algorithm, without backtracking.

    The pattern is cut at its stars: the first piece must match the start of the text,
    the last its end, and each piece between is taken at its first match after the one
    before. All matches of a piece are equally long, so the first leaves the most room
    for the rest, and no choice is ever revisited: at worst len(text) x len(pattern)
    character comparisons, however many stars (a backtracking regex took
    len(text) ** stars).
    """

    def __init__(self, pattern: str):
        self.pieces = [_Piece(p) for p in pattern.split("*")]
        self.min_length = sum(p.length for p in self.pieces)

    def match(self, text: str) -> bool:
        if len(text) < self.min_length:
            return False
        first = self.pieces[0]
        if len(self.pieces) == 1:
            return len(text) == first.length and first.at(text, 0)
        last = self.pieces[-1]
        end = len(text) - last.length
        if not (first.at(text, 0) and last.at(text, end)):
            return False
        pos = first.length
        for piece in self.pieces[1:-1]:
            found = piece.find(text, pos, end)
            if found < 0:
                return False
            pos = found + piece.length
        return True


class Glob:
    """Orthanc's wildcards: `*` any run of characters, `?` any one character.

    With `newlines` False the wildcards do not match a newline, as the regular expression
    this replaces did for case-sensitive values (compiled without re.S). Then only a
    newline of the pattern matches one of the text: text and pattern must have as many,
    and match line by line.
    """

    def __init__(self, pattern: str, newlines: bool):
        self.newlines = newlines
        self.lines = [_Line(p) for p in ([pattern] if newlines else pattern.split("\n"))]

    def match(self, text: str) -> bool:
        if self.newlines or "\n" not in text:
            return len(self.lines) == 1 and self.lines[0].match(text)
        parts = text.split("\n")
        return len(parts) == len(self.lines) and all(
            line.match(part) for line, part in zip(self.lines, parts, strict=True))


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
        pattern = value if case_sensitive else fold(value)
        check_pattern(keyword, pattern)
        glob = Glob(pattern, newlines=not case_sensitive)
        if case_sensitive:
            return glob.match
        return lambda v: glob.match(fold(v))
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
