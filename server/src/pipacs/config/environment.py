"""Orthanc's environment overrides: ORTHANC__KEY and ORTHANC__SECTION__OPTION variables."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .keys import ACCEPTED_ORTHANC_KEYS, KNOWN_SECTIONS
from .settings import FIELDS

ENV_PREFIX = "ORTHANC__"


def _env_key_lookup() -> dict[str, str]:
    return {k.upper(): k for k in [*FIELDS, *ACCEPTED_ORTHANC_KEYS]}


def _env_value(raw: str, key: str) -> Any:
    f = FIELDS.get(key)
    if f is not None and str(f.type) == "str":
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Apply ORTHANC__KEY[__SUBKEY] overrides; return notes about unknown ones."""
    notes = []
    top = _env_key_lookup()
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        parts = name[len(ENV_PREFIX) :].split("__")
        key = top.get(parts[0].replace("_", "").upper())
        if key is None:
            notes.append(f"environment {name}: no configuration key matches it")
            continue
        if len(parts) == 1:
            data[key] = _env_value(raw, key)
            continue
        section = data.setdefault(key, {})
        if not isinstance(section, dict):
            notes.append(f"environment {name}: {key} is not an object")
            continue
        wanted = parts[1].replace("_", "").upper()
        sub = next(
            (k for k in (*KNOWN_SECTIONS.get(key, ()), *section) if k.upper() == wanted), None
        )
        if sub is None:
            notes.append(f"environment {name}: {key} has no option matching it")
            continue
        try:
            section[sub] = json.loads(raw)
        except json.JSONDecodeError:
            section[sub] = raw
    return notes
