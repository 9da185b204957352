"""Building the typed settings from raw configuration data, naming every bad key; loading."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .environment import apply_environment
from .errors import ConfigError
from .jsonc import read_files
from .keys import ACCEPTED_ORTHANC_KEYS, KNOWN_SECTIONS, MANUFACTURERS, PLUGIN_EQUIVALENTS
from .roles import access_problems
from .settings import FIELDS, Modality, Peer, Settings, aet_problem, known_keys, port_problem


def _type_name(t: Any) -> str:
    s = str(t)
    return {"str": "a string", "int": "an integer", "bool": "true or false"}.get(
        s, "an array" if s.startswith("list") else "an object" if s.startswith("dict") else s
    )


def _check_type(value: Any, t: Any) -> bool:
    s = str(t)
    if s == "bool":
        return isinstance(value, bool)
    if s == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if s == "str":
        return isinstance(value, str)
    if s.startswith("list"):
        return isinstance(value, list)
    if s.startswith("dict"):
        return isinstance(value, dict)
    return True


def _suggest(key: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _parse_modality(name: str, value: Any, errors: list[str]) -> Modality | None:
    where = f"DicomModalities.{name}"
    if isinstance(value, list):
        if not 3 <= len(value) <= 4:
            errors.append(f'{where}: expected ["AET", "host", port] or an object')
            return None
        value = dict(zip(("AET", "Host", "Port", "Manufacturer"), value, strict=False))
    if not isinstance(value, dict):
        errors.append(f"{where}: expected an array or an object")
        return None
    aet, host, port = value.get("AET"), value.get("Host"), value.get("Port")
    if not isinstance(aet, str) or aet_problem(aet):
        errors.append(
            f"{where}: AET {aet!r} "
            + (aet_problem(aet) or "" if isinstance(aet, str) else "must be a string")
        )
        return None
    if not isinstance(host, str) or not host:
        errors.append(f"{where}: Host must be a non-empty string")
        return None
    if isinstance(port, str) and port.isdigit():
        port = int(port)
    if not isinstance(port, int) or isinstance(port, bool) or port_problem(port):
        errors.append(f"{where}: Port {port!r} must be a TCP port between 1 and 65535")
        return None
    manufacturer = value.get("Manufacturer", "Generic")
    if manufacturer not in MANUFACTURERS:
        errors.append(
            f"{where}: Manufacturer {manufacturer!r} is not one of {', '.join(MANUFACTURERS)}"
        )
        return None
    flags = {}
    for k in ("AllowEcho", "AllowFind", "AllowGet", "AllowMove", "AllowStore", "AllowTranscoding"):
        v = value.get(k, True)
        if not isinstance(v, bool):
            errors.append(f"{where}: {k} must be true or false")
            return None
        flags["allow_" + k[5:].lower()] = v
    return Modality(name, aet, host, port, manufacturer, **flags)


def _parse_peer(name: str, value: Any, errors: list[str]) -> Peer | None:
    where = f"OrthancPeers.{name}"
    if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
        url, user, pw = ([*value, None, None])[:3]
    elif isinstance(value, dict) and isinstance(value.get("Url"), str):
        url, user, pw = value["Url"], value.get("Username"), value.get("Password")
    else:
        errors.append(
            f'{where}: expected ["http://host:port/", "user", "password"] or an object with "Url"'
        )
        return None
    if not re.match(r"^https?://", url):
        errors.append(f"{where}: URL {url!r} must start with http:// or https://")
        return None
    return Peer(name, url if url.endswith("/") else url + "/", user, pw)


def _resolve(p: str, base: Path) -> str:
    if not p:
        return p
    q = Path(os.path.expanduser(p))
    return str(q if q.is_absolute() else (base / q))


def _folder_problem(folder: Path) -> str | None:
    """Why pipacs could not write in `folder` (making it when missing), or None. Checking
    makes nothing: the folder is made when first used."""
    if folder.exists():
        if not folder.is_dir():
            return "is not a folder"
        if not os.access(folder, os.W_OK | os.X_OK):
            return "is not writable"
        return None
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be made: {parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot be made: {parent} is not writable"
    return None


def build_settings(data: dict[str, Any], base: Path) -> tuple[Settings, list[str]]:
    """Turn raw configuration data into Settings; return it and the notices to log.

    Raises ConfigError naming every key with a wrong type or impossible value.
    """
    errors: list[str] = []
    notes: list[str] = []
    values: dict[str, Any] = {}
    for key, value in data.items():
        f = FIELDS.get(key)
        if f is None:
            if key in ACCEPTED_ORTHANC_KEYS:
                why = ACCEPTED_ORTHANC_KEYS[key]
                notes.append(
                    f"{key}: accepted but not used by pipacs" + (f" ({why})" if why else "")
                )
            else:
                notes.append(
                    f"{key}: unknown configuration key, ignored" + _suggest(key, known_keys())
                )
            continue
        if not _check_type(value, f.type):
            errors.append(f"{key}: must be {_type_name(f.type)}, not {json.dumps(value)}")
            continue
        check = f.metadata["check"]
        problem = check(value) if check else None
        if problem:
            errors.append(f"{key}: {json.dumps(value)} {problem}")
            continue
        if f.metadata["ignored"] and value != f.default and value != []:
            notes.append(f"{key}: accepted but not used ({f.metadata['ignored']})")
        values[f.name] = value

    settings = Settings(**values)
    settings.config_dir = str(base)
    for f in dataclasses.fields(Settings):
        if f.metadata.get("path"):
            v = getattr(settings, f.name)
            if isinstance(v, list):
                if not all(isinstance(x, str) for x in v):
                    errors.append(f"{f.metadata['key']}: must be an array of strings")
                    continue
                setattr(settings, f.name, [_resolve(x, base) for x in v])
            else:
                setattr(settings, f.name, _resolve(v, base))

    if settings.temporary_directory:
        problem = _folder_problem(Path(settings.temporary_directory))
        if problem:
            errors.append(f"TemporaryDirectory: {settings.temporary_directory} {problem}")
    for name, value in settings.dicom_modalities.items():
        m = _parse_modality(name, value, errors)
        if m:
            settings.modalities[name] = m
    for name, value in settings.orthanc_peers.items():
        p = _parse_peer(name, value, errors)
        if p:
            settings.peers[name] = p
    for user, pw in settings.registered_users.items():
        if not isinstance(pw, str):
            errors.append(f"RegisteredUsers.{user}: the password must be a string")
    errors.extend(access_problems(settings))
    if (
        settings.authentication_enabled
        and not settings.registered_users
        and settings.remote_access_allowed
    ):
        notes.append(
            "AuthenticationEnabled is true but RegisteredUsers is empty: "
            "remote HTTP clients will be refused"
        )
    for section, meta in (
        ("UserMetadata", settings.user_metadata),
        ("UserContentType", settings.user_content_type),
    ):
        seen: set[int] = set()
        for n, v in meta.items():
            num = v[0] if isinstance(v, list) and v else v
            if not isinstance(num, int) or isinstance(num, bool) or not 1024 <= num <= 65535:
                errors.append(f"{section}.{n}: must be a number between 1024 and 65535")
            elif num in seen:
                errors.append(f"{section}.{n}: number {num} is used twice")
            else:
                seen.add(num)
    for tag, entry in settings.dictionary.items():
        if not re.fullmatch(r"[0-9A-Fa-f]{4},[0-9A-Fa-f]{4}", tag):
            errors.append(f'Dictionary.{tag}: the tag must be written "gggg,eeee"')
        elif not (
            isinstance(entry, list)
            and len(entry) >= 2
            and isinstance(entry[0], str)
            and re.fullmatch(r"[A-Z]{2}", entry[0])
            and isinstance(entry[1], str)
        ):
            errors.append(f'Dictionary.{tag}: expected ["VR", "Name", min, max]')

    _check_sections(settings, errors, notes, base)
    settings.builtin_plugins = _map_plugins(settings, notes)
    if errors:
        raise ConfigError(errors, notes)
    return settings, notes


def _check_sections(settings: Settings, errors: list[str], notes: list[str], base: Path) -> None:
    for key in ("DicomWeb", "Worklists", "WebViewer", "OHIF"):
        section = getattr(settings, FIELDS[key].name)
        for sub in section:
            if sub not in KNOWN_SECTIONS[key]:
                notes.append(
                    f"{key}.{sub}: unknown option, ignored"
                    + _suggest(sub, list(KNOWN_SECTIONS[key]))
                )
    dw = settings.dicom_web
    for sub, t in (
        ("Enable", bool),
        ("EnableWado", bool),
        ("Ssl", bool),
        ("QidoCaseSensitive", bool),
        ("Root", str),
        ("WadoRoot", str),
        ("Host", str),
    ):
        if sub in dw and not isinstance(dw[sub], t):
            errors.append(f"DicomWeb.{sub}: must be {_type_name(t.__name__)}")
    for sub in ("Root", "WadoRoot"):
        if isinstance(dw.get(sub), str) and not dw[sub].startswith("/"):
            errors.append(f'DicomWeb.{sub}: {dw[sub]!r} must start with "/"')
    wl = settings.worklists
    if "Enable" in wl and not isinstance(wl["Enable"], bool):
        errors.append("Worklists.Enable: must be true or false")
    if "Database" in wl:
        if not isinstance(wl["Database"], str):
            errors.append("Worklists.Database: must be a string")
        else:
            wl["Database"] = _resolve(wl["Database"], base)
    if "LimitAnswers" in wl and (not isinstance(wl["LimitAnswers"], int) or wl["LimitAnswers"] < 0):
        errors.append("Worklists.LimitAnswers: must be an integer, 0 or more")
    sf = settings.serve_folders
    folders = sf.get("Folders", {}) if isinstance(sf.get("Folders"), dict) else {}
    plain = {k: v for k, v in sf.items() if k.startswith("/")}
    for k, _v in sf.items():
        if not k.startswith("/") and k not in KNOWN_SECTIONS["ServeFolders"]:
            errors.append(f'ServeFolders.{k}: a served URI must start with "/"')
    for uri, folder in {**plain, **folders}.items():
        if not isinstance(folder, str):
            errors.append(f"ServeFolders.{uri}: the folder must be a string")
            continue
        resolved = _resolve(folder, base)
        (folders if uri in folders else sf)[uri] = resolved
    if (settings.lua_scripts or settings.execute_lua_enabled) and not _lua_available():
        errors.append("LuaScripts/ExecuteLuaEnabled: Lua needs the lupa package, which is not "
                      "installed (pip install lupa; the server's locks carry it where a wheel "
                      "exists): remove the key or install lupa")
    ohif = settings.ohif
    for sub in ("Location", "RouterBasename", "DataSource"):
        if sub in ohif and not isinstance(ohif[sub], str):
            errors.append(f"OHIF.{sub}: must be a string")
    if isinstance(ohif.get("Location"), str) and ohif["Location"]:
        ohif["Location"] = _resolve(ohif["Location"], base)
    if isinstance(ohif.get("RouterBasename"), str) and not ohif["RouterBasename"].startswith("/"):
        errors.append(f'OHIF.RouterBasename: {ohif["RouterBasename"]!r} must start with "/"')
    if ohif.get("DataSource", "dicom-web") != "dicom-web":
        errors.append(f'OHIF.DataSource: {ohif["DataSource"]!r}: pipacs serves OHIF its '
                      'DICOMweb only ("dicom-web")')


def _lua_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lupa") is not None


def _map_plugins(settings: Settings, notes: list[str]) -> list[str]:
    builtins = []
    for p in settings.plugins:
        stem = Path(p).name.split(".")[0]
        builtin = PLUGIN_EQUIVALENTS.get(stem)
        if builtin:
            builtins.append(builtin)
            notes.append(f"Plugins: {Path(p).name} is served by pipacs' built-in {builtin}")
        elif Path(p).is_dir() or p.endswith(("/", "plugins")):
            # Orthanc scans plugin folders; the known libraries inside map as above.
            found = (
                [PLUGIN_EQUIVALENTS[n] for n in PLUGIN_EQUIVALENTS if any(Path(p).glob(n + ".so*"))]
                if Path(p).is_dir()
                else []
            )
            builtins.extend(found)
            if not found:
                notes.append(f"Plugins: folder {p} holds no plugin pipacs knows")
        else:
            notes.append(f"Plugins: {p} is not a plugin pipacs knows; ignored (WARNING)")
    return sorted(set(builtins))


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> tuple[Settings, list[str]]:
    """Read, override from the environment, and validate a configuration."""
    data, base = read_files(Path(path))
    notes = apply_environment(data, os.environ if environ is None else environ)
    try:
        settings, more = build_settings(data, base.resolve())
    except ConfigError as e:
        raise ConfigError(e.problems, notes + e.notes) from None
    return settings, notes + more


def load_or_default(
    path: str | Path | None, environ: Mapping[str, str] | None = None
) -> tuple[Settings, list[str]]:
    if path is None:
        data: dict[str, Any] = {}
        notes = apply_environment(data, os.environ if environ is None else environ)
        settings, more = build_settings(data, Path.cwd())
        return settings, notes + more
    return load(path, environ)
