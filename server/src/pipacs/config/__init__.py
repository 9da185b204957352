"""Orthanc-style JSON configuration: parsing, validation, environment overrides, defaults.

The package's parts: `jsonc` (JSON with comments, folders of files), `keys` (Orthanc's
vocabulary), `settings` (the typed `Settings`, one field a key), `environment` (ORTHANC__
overrides), `build` (validation into `Settings`, and `load`).
"""

from __future__ import annotations

from .build import build_settings, load, load_or_default
from .environment import ENV_PREFIX, apply_environment
from .errors import ConfigError
from .jsonc import load_json_with_comments, read_files, strip_comments
from .keys import (
    ACCEPTED_ORTHANC_KEYS,
    DEFAULT_ENCODINGS,
    KNOWN_SECTIONS,
    MANUFACTURERS,
    PLUGIN_EQUIVALENTS,
)
from .settings import (
    FIELDS,
    Modality,
    Peer,
    Settings,
    aet_problem,
    default_configuration_text,
    known_keys,
    port_problem,
)

__all__ = [
    "ACCEPTED_ORTHANC_KEYS",
    "DEFAULT_ENCODINGS",
    "ENV_PREFIX",
    "FIELDS",
    "KNOWN_SECTIONS",
    "MANUFACTURERS",
    "PLUGIN_EQUIVALENTS",
    "ConfigError",
    "Modality",
    "Peer",
    "Settings",
    "aet_problem",
    "apply_environment",
    "build_settings",
    "default_configuration_text",
    "known_keys",
    "load",
    "load_json_with_comments",
    "load_or_default",
    "port_problem",
    "read_files",
    "strip_comments",
]
