"""Orthanc's C-FIND matching rules."""

from __future__ import annotations

import random
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipacs.matching import (
    MAX_PATTERN_LENGTH,
    MAX_WILDCARDS,
    FoldedPrefix,
    Glob,
    PatternRefused,
    QueryError,
    exact_value,
    failure_status,
    fold,
    make_matcher,
)


def matches(keyword: str, query: str, value: str, **kw: bool) -> bool:
    m = make_matcher(keyword, query, **kw)
    return True if m is None else m(value)


@pytest.mark.parametrize("query", ["", "*", "  "])
def test_universal_matching(query: str) -> None:
    assert make_matcher("PatientName", query) is None


def test_person_names_are_case_and_accent_insensitive_by_default() -> None:
    assert matches("PatientName", "doe^john", "DOE^JOHN")
    assert matches("PatientName", "muller*", "Müller^Hans")
    assert not matches("PatientName", "doe^john", "DOE^JOHN", case_sensitive_pn=True)


def test_other_strings_are_case_sensitive() -> None:
    assert matches("StudyDescription", "Chest*", "Chest PA")
    assert not matches("StudyDescription", "chest*", "Chest PA")


def test_wildcards() -> None:
    assert matches("PatientID", "AB?1*", "ABC1xyz")
    assert not matches("PatientID", "AB?1*", "AB1")
    assert matches("AccessionNumber", "*", "anything")
    assert not matches("PatientID", "A*", "BA")


def test_uid_lists_and_no_wildcards_in_uids() -> None:
    assert matches("StudyInstanceUID", "1.2.3\\1.2.4", "1.2.4")
    assert not matches("StudyInstanceUID", "1.2.3\\1.2.4", "1.2.5")
    assert not matches("SOPInstanceUID", "1.2.*", "1.2.3")


def test_value_lists_for_strings() -> None:
    assert matches("Modality", "CT\\MR", "MR")
    assert not matches("Modality", "CT\\MR", "US")


def test_date_ranges() -> None:
    assert matches("StudyDate", "20200101-20201231", "20200615")
    assert not matches("StudyDate", "20200101-20201231", "20210101")
    assert matches("StudyDate", "-20200101", "19991231")
    assert matches("StudyDate", "20200101-", "20250101")
    assert not matches("StudyDate", "20200101-", "")
    assert matches("StudyDate", "20200615", "20200615")
    assert matches("StudyDate", "20200101-20200101\\20210101", "20210101")


def test_time_ranges_compare_as_times() -> None:
    assert matches("StudyTime", "0800-1200", "093015.123")
    assert not matches("StudyTime", "0800-1200", "1201")
    assert matches("StudyTime", "1200-", "235959")


def test_malformed_dates_are_named() -> None:
    with pytest.raises(QueryError, match="StudyDate"):
        make_matcher("StudyDate", "2020-01-01x")
    with pytest.raises(QueryError, match="StudyDate"):
        make_matcher("StudyDate", "yesterday")


@pytest.mark.parametrize(
    ("keyword", "query", "exact"),
    [
        ("AccessionNumber", " A12 ", "A12"),
        ("StudyInstanceUID", "1.2.3", "1.2.3"),
        ("StudyDate", "20200615", "20200615"),
        ("Modality", "CT", "CT"),
        ("ReferringPhysicianName", "DOE^JOHN", None),  # folded: compared case-insensitively
        ("AccessionNumber", "A1*", None),
        ("Modality", "CT\\MR", None),
        ("StudyDate", "20200101-20201231", None),
        ("StudyTime", "0800", None),  # normalised before comparing
        ("AccessionNumber", "*", None),
    ],
)
def test_exact_values_are_the_ones_the_matcher_compares_as_they_are(
    keyword: str, query: str, exact: str | None
) -> None:
    assert exact_value(keyword, query) == exact
    if exact is not None:  # the index may narrow with it: the matcher agrees
        assert matches(keyword, query, exact)
        assert not matches(keyword, query, exact + "X")
    assert exact_value("PatientName", "DOE^JOHN", case_sensitive_pn=True) == "DOE^JOHN"


@pytest.mark.parametrize(
    ("query", "prefix", "prefix_cs"),
    [
        ("DOE*", "DOE", "DOE"),
        ("doe^j*", "DOE^J", "DOE^J"),
        ("do?e*", "DO", "DO"),
        ("Müller*", "MULLER", "MULLER"),
        ("straß*", "STRASS", "STRASS"),
        (" doe^john ", "DOE^JOHN", "doe^john"),  # compared whole (folded or not)
        ("\uff24\uff2f\uff25*", "DOE", "DOE"),  # full-width letters fold to ASCII
        ("A\uff0aB*", "A", "A*B"),  # a full-width star is a wildcard once folded, not before
        ("A\uff0aB", "A*B", "A\uff0aB"),  # ... but without a wildcard in the query it is compared
        ("*DOE", None, None),  # a wildcard first: every name is read
        ("?OE*", None, None),
        ("\u0301*", None, None),  # only an accent before the wildcard: nothing is left
        ("DOE*\\SMITH*", None, None),  # lists are not narrowed
        ("*", None, None),
    ],
)
def test_patient_name_prefixes_are_the_start_of_every_match_folded(
    query: str, prefix: str | None, prefix_cs: str | None
) -> None:
    names = ["Doe^John", "DOE^JOHN", "doe^john", "Döe^Jürgen", "DOE", "Müller^Hans", "MULLER",
             "Straße", "STRASSE", "A*B", "A\uff0aB", "AXB", "ÁB", "\u0301", "Smith", "",
             "\uff24\uff2f\uff25^W"]
    for cs, want in ((False, prefix), (True, prefix_cs)):
        got = exact_value("PatientName", query, case_sensitive_pn=cs)
        if want is None:
            assert got is None, (query, cs)
            continue
        if cs and "*" not in query and "?" not in query:
            assert got == want and not isinstance(got, FoldedPrefix)  # compared as it is
            start = fold(got)  # the index compares the folded names too
        else:
            assert isinstance(got, FoldedPrefix) and got == want, (query, cs, got)
            start = got
        for name in names:  # the index may narrow with it: every match starts with it
            if matches("PatientName", query, name, case_sensitive_pn=cs):
                assert fold(name).startswith(start), (query, cs, name)


def test_fold_keeps_prefixes() -> None:
    # The index narrows case-sensitive patterns on fold(prefix): fold(a + b) must start
    # with fold(a). Letters, accents (combining marks reorder in NFKD), compatibility
    # characters, ligatures and case mappings that grow (ß, ŉ, ﬃ).
    rng = random.Random(4)
    pool = [chr(c) for c in range(0x20, 0x250)] + [
        "\u0301", "\u0308", "\u0327", "\u031b", "\u0345", "\u05b0", "ß", "ŉ", "ﬃ", "ǅ",
        "ΐ", "ǰ", "\uff24\uff2f\uff25", "\uff0a", "﹖", "ﾊﾟ", "가", "日本", "\U0010ffff", "\u1e9e",
    ]
    for _ in range(20000):
        a = "".join(rng.choice(pool) for _ in range(rng.randrange(4)))
        b = "".join(rng.choice(pool) for _ in range(rng.randrange(4)))
        assert fold(a + b) == fold(a) + fold(b), (a, b)


# ---------------------------------------------------------------- wildcards without backtracking


def old_wildcard_regex(pattern: str, case_sensitive: bool) -> re.Pattern[str]:
    """The backtracking matcher Glob replaced, kept here as the oracle of its semantics."""
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(out) + r"\Z", 0 if case_sensitive else re.S)


def old_matches(keyword: str, query: str, value: str, case_sensitive: bool) -> bool:
    """make_matcher's wildcard branch as it was (PatientName folded, others as they are)."""
    if case_sensitive:
        return old_wildcard_regex(query, True).match(value) is not None
    return old_wildcard_regex(fold(query), False).match(fold(value)) is not None


# Mostly two letters and wildcards, so that pieces recur; newlines, which only the
# case-insensitive (folded) comparison let the wildcards match; a regex metacharacter;
# letters that fold (é, a full-width star that folds to a wildcard).
PATTERN = st.text(st.sampled_from([*"aaabb***??", "\n", ".", "é", "\uff0a"]), max_size=12)
TEXT = st.text(st.sampled_from([*"aaaabbb", "\n", ".", "é", "E", "*"]), max_size=14)


@settings(max_examples=1000, deadline=None)
@given(pattern=PATTERN, text=TEXT, case_sensitive=st.booleans())
def test_glob_agrees_with_the_old_regex(pattern: str, text: str, case_sensitive: bool) -> None:
    want = old_wildcard_regex(pattern, case_sensitive).match(text) is not None
    assert Glob(pattern, newlines=not case_sensitive).match(text) == want


@settings(max_examples=1000, deadline=None)
@given(query=PATTERN, value=TEXT)
def test_wildcard_matchers_agree_with_the_old_ones(query: str, value: str) -> None:
    query = query.strip()
    if ("*" not in query and "?" not in query) or query == "*":
        return  # not the wildcard branch
    for keyword, cs in (("PatientName", False), ("StudyDescription", True)):
        got = matches(keyword, query, value)
        assert got == old_matches(keyword, query, value, cs), (keyword, query, value)


def test_glob_edges() -> None:
    assert Glob("a*b*c", True).match("abc") and Glob("a*b*c", True).match("aXbYbZc")
    assert not Glob("a*b*c", True).match("ac")
    assert not Glob("ab*ba", True).match("aba")  # prefix and suffix may not overlap
    assert Glob("*a?b*", True).match("xxaXbyy") and not Glob("*a?b*", True).match("xxabyy")
    assert Glob("**", True).match("") and Glob("?*?", True).match("ab")
    assert not Glob("a*", False).match("a\nb") and Glob("a*", True).match("a\nb")
    assert Glob("a*\n*b", False).match("axx\nyyb") and not Glob("a*b", False).match("a\nb")


ADVERSARIAL = [
    ("*A" * 9 + "*B", "A" * 64),
    ("*A" * 15 + "*B*", "A" * 64),
    ("*" + "?" * 20 + "*B", "A" * 64),
    ("*AAAAAAAAAAAAAAAAB*" * 4, "A" * 64),
    ("*" + "A?" * 15 + "B", "A" * 64),
]


@pytest.mark.parametrize(("query", "value"), ADVERSARIAL)
def test_adversarial_patterns_answer_at_once(query: str, value: str) -> None:
    # Each * more multiplied the old regex's time by about 10 (the first case took minutes).
    # A generous bound, so that a busy machine does not fail it: the old code is far above.
    for keyword in ("PatientName", "PatientID"):
        m = make_matcher(keyword, query)
        assert m is not None
        t0 = time.perf_counter()
        for _ in range(100):
            assert not m(value)
        assert time.perf_counter() - t0 < 1.0, (keyword, query)


def test_patterns_over_the_limits_are_refused_naming_tag_and_limit() -> None:
    ok = "*A" * MAX_WILDCARDS
    assert make_matcher("PatientName", ok) is not None
    with pytest.raises(PatternRefused, match=f"PatientName: at most {MAX_WILDCARDS} wildcards"):
        make_matcher("PatientName", ok + "?")
    with pytest.raises(PatternRefused, match="StudyDescription: at most 32 wildcards"):
        make_matcher("StudyDescription", "CT\\" + "?" * 40)  # in a value list too
    long = "A" * (MAX_PATTERN_LENGTH - 1) + "*"
    assert make_matcher("PatientID", long) is not None
    with pytest.raises(PatternRefused, match=f"PatientID: at most {MAX_PATTERN_LENGTH} char"):
        make_matcher("PatientID", "A" + long)
    with pytest.raises(PatternRefused, match="PatientName: at most 256 characters"):
        make_matcher("PatientName", "ß" * 128 + "*")  # counted folded: SS
    assert make_matcher("PatientID", "A" * 10000) is not None  # no wildcard: compared as is
    assert issubclass(PatternRefused, QueryError)


def test_failure_status_carries_the_reason() -> None:
    with pytest.raises(QueryError) as e:
        make_matcher("ScheduledProcedureStepDescription", "?" * 99)
    status = failure_status(e.value, 0xC001)
    assert status.Status == 0xC001
    assert status.ErrorComment.startswith("ScheduledProcedureStepDescription: at most 32 wildc")
    assert len(status.ErrorComment) <= 64
