"""JSON with comments and trailing commas, as Orthanc reads it: one file, or a folder."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .errors import ConfigError

_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.S)


def strip_comments(text: str) -> str:
    """Remove // and /* */ comments outside strings, keeping line numbers."""

    def repl(m: re.Match[str]) -> str:
        s = m.group(0)
        if s.startswith('"'):
            return s
        return "\n" * s.count("\n")

    return _TOKEN.sub(repl, text)


# A string, a comment, or a comma that jsoncpp 1.9 (Debian 12's Orthanc 1.10.1) lets close a
# list: before "}" after spaces and comments, before "]" after spaces only (measured:
# `[1, // x\n]` is refused by Orthanc, `{"a": 1, // x\n}` is read).
_SPACE_OR_COMMENT = r"(?:\s|//[^\n]*|/\*.*?\*/)*"
_TRAILING = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/|,(?=' + _SPACE_OR_COMMENT
                       + r"\})|,(?=\s*\])", re.S)


def strip_trailing_commas(text: str) -> str:
    """Drop the commas jsoncpp accepts before "}" or "]" (staff who comment out the last
    entry of a list leave one behind); strings and comments are left as they are."""
    def repl(m: re.Match[str]) -> str:
        if m.group(0) != ",":
            return m.group(0)
        before = text[:m.start()].rstrip()
        return m.group(0) if before.endswith(("[", "{", ",")) else " "  # "[,]" stays bad

    return _TRAILING.sub(repl, text)


def relaxed_json(text: str) -> Any:
    """JSON as Orthanc's jsoncpp reads a configuration: comments and trailing commas."""
    return json.loads(strip_comments(strip_trailing_commas(text)))


def load_json_with_comments(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read ({e.strerror})"]) from e
    try:
        data = relaxed_json(text)
    except json.JSONDecodeError as e:
        raise ConfigError([f"{path}: line {e.lineno} column {e.colno}: {e.msg}"]) from e
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the configuration must be a JSON object"])
    return data


def read_files(path: Path) -> tuple[dict[str, Any], Path]:
    """Read a configuration file or a folder of *.json files (merged, no duplicate keys)."""
    if path.is_dir():
        merged: dict[str, Any] = {}
        origin: dict[str, Path] = {}
        problems = []
        for p in sorted(path.glob("*.json")):
            for k, v in load_json_with_comments(p).items():
                if k in merged:
                    problems.append(f"{k}: set in both {origin[k].name} and {p.name}")
                merged[k] = v
                origin[k] = p
        if problems:
            raise ConfigError(problems)
        return merged, path
    if not path.exists():
        raise ConfigError([f"{path}: no such configuration file or folder"])
    return load_json_with_comments(path), path.parent
