"""Orthanc's C-FIND matching rules."""

from __future__ import annotations

import random

import pytest

from pipacs.matching import FoldedPrefix, QueryError, exact_value, fold, make_matcher


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
