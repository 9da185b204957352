"""Tag names from DCMTK's dictionaries as Orthanc shows them: private tags, retired tags.

The table (data/private-dictionary.tsv) is generated from Debian's dcmtk
(/usr/share/libdcmtk17/private.dic) by ``python -m pipacs.privatetags [DCMTK_FOLDER]``: one
line per entry, "group<TAB>creator<TAB>element<TAB>VR<TAB>name", where group is "gggg" or a range
"gggg-o-gggg" / "gggg-e-gggg" (odd or even groups) and element is the low byte "ee" (or
a whole element "eeee"). data/retired-tags.txt lists the public tags dicom.dic calls
RETIRED_<name>.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path

TABLE = Path(__file__).resolve().parent / "data" / "private-dictionary.tsv"
# Public tags DCMTK names RETIRED_<name> (Orthanc shows that name), from its dicom.dic.
RETIRED = Path(__file__).resolve().parent / "data" / "retired-tags.txt"
_RETIRED_ENTRY = re.compile(r"^\(([0-9a-fA-F]{4}),([0-9a-fA-F]{4})\)\t\S+\tRETIRED_")
_ENTRY = re.compile(r'^\(([0-9a-fA-F]{4}(?:-[oeu]-[0-9a-fA-F]{4})?),"([^"]*)",'
                    r"([0-9a-fA-F]{2}|[0-9a-fA-F]{4})\)\t(\S+)\t([^\t]+)")


@functools.cache
def _tables() -> tuple[dict[tuple[int, str, int], str], list[tuple[int, int, int, str, int, str]]]:
    exact: dict[tuple[int, str, int], str] = {}
    ranges: list[tuple[int, int, int, str, int, str]] = []
    try:
        lines = TABLE.read_text(encoding="utf-8").splitlines()
    except OSError:
        return exact, ranges
    for line in lines:
        group, creator, element, _vr, name = line.split("\t")
        elem = int(element, 16)
        if "-" in group:
            low, parity, high = group.split("-")
            step = 1 if parity == "u" else 2
            ranges.append((int(low, 16), int(high, 16), step, creator, elem, name))
        else:
            exact.setdefault((int(group, 16), creator, elem), name)  # the first, as DCMTK
    return exact, ranges


def private_name(group: int, element: int, creator: str) -> str | None:
    """DCMTK's name of a private tag with its creator, or None when it has none."""
    exact, ranges = _tables()
    creator = creator.strip()
    for elem in (element & 0xFF, element):
        name = exact.get((group, creator, elem))
        if name is not None:
            return name
    for low, high, step, who, elem, name in ranges:
        if who == creator and low <= group <= high and (group - low) % step == 0 \
                and elem in (element & 0xFF, element):
            return name
    return None


@functools.cache
def retired_tags() -> frozenset[int]:
    try:
        return frozenset(int(t, 16) for t in RETIRED.read_text().split())
    except OSError:
        return frozenset()


def generate_retired(dic: Path, out: Path) -> int:
    """Write the tags DCMTK's dicom.dic names RETIRED_..., one "ggggeeee" per line."""
    tags = []
    for line in dic.read_text(encoding="latin-1").splitlines():
        m = _RETIRED_ENTRY.match(line)
        if m:
            tags.append((m.group(1) + m.group(2)).lower())
    out.write_text("\n".join(tags) + "\n")
    return len(tags)


def generate(dic: Path, out: Path) -> int:
    """Write the table from a DCMTK private.dic; returns the number of entries."""
    rows = []
    for line in dic.read_text(encoding="latin-1").splitlines():
        m = _ENTRY.match(line)
        if m:  # a name with spaces ("End NumberForBaseline") is read without them
            *keys, name = m.groups()
            rows.append("\t".join([*keys, name.replace(" ", "")]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return len(rows)


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/libdcmtk17")
    print(f"{generate(folder / 'private.dic', TABLE)} entries written to {TABLE}")
    print(f"{generate_retired(folder / 'dicom.dic', RETIRED)} written to {RETIRED}")
