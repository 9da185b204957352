"""Orthanc-style JSON configuration: parsing, validation, environment overrides, defaults."""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ENV_PREFIX = "ORTHANC__"

# Orthanc plugin libraries and the pipacs built-in that takes each one's place.
PLUGIN_EQUIVALENTS = {
    "libServeFolders": "serve-folders",
    "libModalityWorklists": "worklists",
    "libOrthancDicomWeb": "dicom-web",
    "libOrthancWebViewer": "web-viewer",
    "libOrthancPython": "python",
}

DEFAULT_ENCODINGS = (
    "Ascii",
    "Utf8",
    "Latin1",
    "Latin2",
    "Latin3",
    "Latin4",
    "Latin5",
    "Cyrillic",
    "Windows1251",
    "Arabic",
    "Greek",
    "Hebrew",
    "Thai",
    "Japanese",
    "Chinese",
    "JapaneseKanji",
    "Korean",
    "SimplifiedChinese",
)

MANUFACTURERS = (
    "Generic",
    "GenericNoWildcardInDates",
    "GenericNoUniversalWildcard",
    "StoreScp",
    "ClearCanvas",
    "Dcm4Chee",
    "Vitrea",
    "GE",
    "MedInria",
    "SyngoVia",
    "AgfaImpax",
    "EFilm2",
)


class ConfigError(Exception):
    """The configuration cannot be used; `problems` names every bad key."""

    def __init__(self, problems: list[str], notes: list[str] | None = None):
        self.problems = problems
        self.notes = notes or []
        super().__init__("; ".join(problems))


# ---------------------------------------------------------------- comment-tolerant JSON


_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|//[^\n]*|/\*.*?\*/', re.S)


def strip_comments(text: str) -> str:
    """Remove // and /* */ comments outside strings, keeping line numbers."""

    def repl(m: re.Match[str]) -> str:
        s = m.group(0)
        if s.startswith('"'):
            return s
        return "\n" * s.count("\n")

    return _TOKEN.sub(repl, text)


def load_json_with_comments(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read ({e.strerror})"]) from e
    try:
        data = json.loads(strip_comments(text))
    except json.JSONDecodeError as e:
        raise ConfigError([f"{path}: line {e.lineno} column {e.colno}: {e.msg}"]) from e
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the configuration must be a JSON object"])
    return data


# ---------------------------------------------------------------- typed values


@dataclass(frozen=True)
class Modality:
    """A DICOM peer from DicomModalities."""

    name: str
    aet: str
    host: str
    port: int
    manufacturer: str = "Generic"
    allow_echo: bool = True
    allow_find: bool = True
    allow_get: bool = True
    allow_move: bool = True
    allow_store: bool = True

    def as_orthanc(self) -> dict[str, Any]:
        return {
            "AET": self.aet,
            "Host": self.host,
            "Port": self.port,
            "Manufacturer": self.manufacturer,
            "AllowEcho": self.allow_echo,
            "AllowFind": self.allow_find,
            "AllowGet": self.allow_get,
            "AllowMove": self.allow_move,
            "AllowStore": self.allow_store,
        }


@dataclass(frozen=True)
class Peer:
    """Another Orthanc-compatible HTTP server from OrthancPeers."""

    name: str
    url: str
    username: str | None = None
    password: str | None = None


def _opt(
    key: str,
    default: Any,
    doc: str,
    *,
    check: Callable[[Any], str | None] | None = None,
    path: bool = False,
    ignored: str = "",
    factory: bool = False,
) -> Any:
    """Declare a setting: its Orthanc key, default, one-line doc and optional check."""
    meta = {"key": key, "doc": doc, "check": check, "path": path, "ignored": ignored}
    if factory:
        return field(default_factory=lambda: json.loads(json.dumps(default)), metadata=meta)
    return field(default=default, metadata=meta)


def _port(v: int) -> str | None:
    return None if 1 <= v <= 65535 else "must be a TCP port between 1 and 65535"


def _non_negative(v: int) -> str | None:
    return None if v >= 0 else "must be 0 or more"


def _positive(v: int) -> str | None:
    return None if v > 0 else "must be more than 0"


def aet_problem(v: str) -> str | None:
    if not 1 <= len(v) <= 16:
        return "must be 1 to 16 characters"
    if not v.isascii() or "\\" in v or any(ord(c) < 32 for c in v):
        return "must be printable ASCII without backslash"
    if v.strip() == "":
        return "must not be only spaces"
    return None


def _pdu(v: int) -> str | None:
    return None if 4096 <= v <= 131072 else "must be between 4096 and 131072"


def _encoding(v: str) -> str | None:
    return None if v in DEFAULT_ENCODINGS else f"must be one of {', '.join(DEFAULT_ENCODINGS)}"


def _storage_mode(v: str) -> str | None:
    return None if v in ("Recycle", "Reject") else 'must be "Recycle" or "Reject"'


@dataclass
class Settings:
    """Every configuration key pipacs knows, typed, with Orthanc's names in the metadata."""

    name: str = _opt("Name", "PiPACS", "Name shown at /system and on the welcome page")
    storage_directory: str = _opt(
        "StorageDirectory", "PiPACSStorage", "Folder for the DICOM files", path=True
    )
    index_directory: str = _opt(
        "IndexDirectory", "", "Folder for the SQLite index (default: StorageDirectory)", path=True
    )
    temporary_directory: str = _opt(
        "TemporaryDirectory",
        "",
        "Folder for temporary files: archive jobs, DICOMDIR media (default: the system's, "
        "often a RAM tmpfs)",
        path=True,
    )
    storage_compression: bool = _opt("StorageCompression", False, "Compress stored files with zlib")
    maximum_storage_size: int = _opt(
        "MaximumStorageSize", 0, "Maximum storage size in MB (0: no limit)", check=_non_negative
    )
    maximum_patient_count: int = _opt(
        "MaximumPatientCount", 0, "Maximum number of patients (0: no limit)", check=_non_negative
    )
    maximum_storage_mode: str = _opt(
        "MaximumStorageMode",
        "Recycle",
        'When full: "Recycle" the oldest unprotected patients or "Reject" new ones',
        check=_storage_mode,
    )
    lua_scripts: list[str] = _opt(
        "LuaScripts",
        [],
        "Lua scripts (not supported: use PythonScripts)",
        factory=True,
        path=True,
        ignored="pipacs runs Python hooks (PythonScripts), not Lua",
    )
    python_scripts: list[str] = _opt(
        "PythonScripts", [], "Python modules with event hooks", factory=True, path=True
    )
    plugins: list[str] = _opt(
        "Plugins",
        [],
        "Orthanc plugin libraries; known ones map to pipacs built-ins",
        factory=True,
        path=True,
    )
    http_server_enabled: bool = _opt("HttpServerEnabled", True, "Start the HTTP server")
    http_port: int = _opt("HttpPort", 8042, "HTTP port of the REST API", check=_port)
    http_describe_errors: bool = _opt(
        "HttpDescribeErrors", True, "Put a JSON description in HTTP error answers"
    )
    http_compression_enabled: bool = _opt(
        "HttpCompressionEnabled", True, "gzip JSON answers when the client accepts it"
    )
    dicom_server_enabled: bool = _opt("DicomServerEnabled", True, "Start the DICOM server")
    dicom_aet: str = _opt("DicomAet", "PIPACS", "Our DICOM AE title", check=aet_problem)
    dicom_check_called_aet: bool = _opt(
        "DicomCheckCalledAet", False, "Refuse associations not addressed to DicomAet"
    )
    dicom_port: int = _opt("DicomPort", 4242, "DICOM port", check=_port)
    default_encoding: str = _opt(
        "DefaultEncoding",
        "Latin1",
        "Encoding of files without SpecificCharacterSet",
        check=_encoding,
    )
    deflated_transfer_syntax_accepted: bool = _opt(
        "DeflatedTransferSyntaxAccepted", True, "Accept Deflated Explicit VR Little Endian"
    )
    jpeg_transfer_syntax_accepted: bool = _opt(
        "JpegTransferSyntaxAccepted", True, "Accept JPEG baseline and extended"
    )
    jpeg2000_transfer_syntax_accepted: bool = _opt(
        "Jpeg2000TransferSyntaxAccepted", True, "Accept JPEG 2000"
    )
    jpeg_lossless_transfer_syntax_accepted: bool = _opt(
        "JpegLosslessTransferSyntaxAccepted", True, "Accept JPEG lossless"
    )
    jpip_transfer_syntax_accepted: bool = _opt(
        "JpipTransferSyntaxAccepted",
        False,
        "Accept JPIP referenced syntaxes (pixel data by URL)",
        ignored="JPIP needs a JPIP server, which pipacs does not run; JPIP syntaxes are refused",
    )
    jpegls_transfer_syntax_accepted: bool = _opt(
        "JpegLosslessLsTransferSyntaxAccepted", True, "Accept JPEG-LS"
    )
    mpeg2_transfer_syntax_accepted: bool = _opt(
        "Mpeg2TransferSyntaxAccepted", True, "Accept MPEG-2 video"
    )
    mpeg4_transfer_syntax_accepted: bool = _opt(
        "Mpeg4TransferSyntaxAccepted", True, "Accept MPEG-4 video"
    )
    h265_transfer_syntax_accepted: bool = _opt(
        "H265TransferSyntaxAccepted", True, "Accept HEVC/H.265 video"
    )
    rle_transfer_syntax_accepted: bool = _opt(
        "RleTransferSyntaxAccepted", True, "Accept RLE lossless"
    )
    unknown_sop_class_accepted: bool = _opt(
        "UnknownSopClassAccepted", False, "Accept C-STORE of any SOP class (promiscuous mode)"
    )
    dicom_scp_timeout: int = _opt(
        "DicomScpTimeout",
        30,
        "Seconds of DIMSE inactivity before dropping an association",
        check=_non_negative,
    )
    dicom_scu_timeout: int = _opt(
        "DicomScuTimeout", 10, "Seconds to wait for a remote modality", check=_positive
    )
    remote_access_allowed: bool = _opt(
        "RemoteAccessAllowed", False, "Allow HTTP clients other than this machine"
    )
    ssl_enabled: bool = _opt("SslEnabled", False, "Serve HTTPS")
    ssl_certificate: str = _opt(
        "SslCertificate", "certificate.pem", "PEM file with certificate and key", path=True
    )
    authentication_enabled: bool = _opt(
        "AuthenticationEnabled", True, "Require HTTP Basic authentication"
    )
    registered_users: dict[str, str] = _opt(
        "RegisteredUsers", {}, "HTTP users and their passwords", factory=True
    )
    dicom_modalities: dict[str, Any] = _opt(
        "DicomModalities", {}, 'Known DICOM peers: "name": ["AET", "host", port]', factory=True
    )
    dicom_modalities_in_database: bool = _opt(
        "DicomModalitiesInDatabase",
        False,
        "Keep modalities in the index",
        ignored="modalities always come from the configuration",
    )
    orthanc_peers: dict[str, Any] = _opt(
        "OrthancPeers",
        {},
        'Known HTTP peers: "name": ["http://host:8042/", "user", "pass"]',
        factory=True,
    )
    orthanc_peers_in_database: bool = _opt(
        "OrthancPeersInDatabase",
        False,
        "Keep peers in the index",
        ignored="peers always come from the configuration",
    )
    http_proxy: str = _opt("HttpProxy", "", "Proxy for outgoing HTTP requests")
    http_verbose: bool = _opt("HttpVerbose", False, "Log outgoing HTTP requests")
    http_timeout: int = _opt(
        "HttpTimeout", 60, "Seconds before an outgoing HTTP request fails", check=_non_negative
    )
    https_verify_peers: bool = _opt("HttpsVerifyPeers", True, "Verify HTTPS peers' certificates")
    https_ca_certificates: str = _opt(
        "HttpsCACertificates", "", "CA bundle for HTTPS peers", path=True
    )
    user_metadata: dict[str, int] = _opt(
        "UserMetadata", {}, "Names of user metadata (numbers 1024-65535)", factory=True
    )
    user_content_type: dict[str, Any] = _opt(
        "UserContentType", {}, "Names of user attachment types (numbers 1024-65535)", factory=True
    )
    stable_age: int = _opt(
        "StableAge", 60, "Seconds without new instances before a series is stable", check=_positive
    )
    strict_aet_comparison: bool = _opt(
        "StrictAetComparison", False, "Compare AE titles case-sensitively"
    )
    store_md5_for_attachments: bool = _opt(
        "StoreMD5ForAttachments", True, "Keep the MD5 of each stored file"
    )
    limit_find_results: int = _opt(
        "LimitFindResults",
        0,
        "Most C-FIND answers at patient/study/series level (0: none)",
        check=_non_negative,
    )
    limit_find_instances: int = _opt(
        "LimitFindInstances",
        0,
        "Most C-FIND answers at instance level (0: none)",
        check=_non_negative,
    )
    limit_jobs: int = _opt("LimitJobs", 10, "Most jobs waiting at once", check=_non_negative)
    concurrent_jobs: int = _opt("ConcurrentJobs", 2, "Jobs run in parallel", check=_positive)
    log_exported_resources: bool = _opt("LogExportedResources", False, "Record exports at /exports")
    keep_alive: bool = _opt("KeepAlive", True, "HTTP keep-alive")
    tcp_no_delay: bool = _opt("TcpNoDelay", True, "Disable Nagle's algorithm on HTTP sockets")
    http_threads_count: int = _opt("HttpThreadsCount", 8, "HTTP worker threads", check=_positive)
    http_request_timeout: int = _opt(
        "HttpRequestTimeout",
        30,
        "Seconds before an idle HTTP connection is closed",
        check=_positive,
    )
    store_dicom: bool = _opt("StoreDicom", True, "Keep DICOM files (false: index only)")
    dicom_association_close_delay: int = _opt(
        "DicomAssociationCloseDelay",
        5,
        "Seconds an idle outgoing association stays open",
        check=_non_negative,
    )
    query_retrieve_size: int = _opt(
        "QueryRetrieveSize", 100, "Remote query answers kept for /queries", check=_positive
    )
    case_sensitive_pn: bool = _opt(
        "CaseSensitivePN", False, "Match person names case-sensitively in C-FIND"
    )
    dictionary: dict[str, Any] = _opt(
        "Dictionary",
        {},
        'Extra tags: "0014,1020": ["DA", "ValidationExpiryDate", 1, 1]',
        factory=True,
    )
    load_private_dictionary: bool = _opt("LoadPrivateDictionary", True, "Know private tags' names")
    dicom_always_allow_echo: bool = _opt(
        "DicomAlwaysAllowEcho", True, "Answer C-ECHO from unknown peers"
    )
    dicom_always_allow_store: bool = _opt(
        "DicomAlwaysAllowStore", True, "Accept C-STORE from unknown peers"
    )
    dicom_always_allow_find: bool = _opt(
        "DicomAlwaysAllowFind", False, "Answer C-FIND from unknown peers"
    )
    dicom_always_allow_get: bool = _opt(
        "DicomAlwaysAllowGet", False, "Answer C-GET from unknown peers"
    )
    dicom_always_allow_move: bool = _opt(
        "DicomAlwaysAllowMove", False, "Answer C-MOVE from unknown peers"
    )
    dicom_check_modality_host: bool = _opt(
        "DicomCheckModalityHost", False, "Check a known peer's IP address as well as its AET"
    )
    # Orthanc's default is 16384; 131072 lets a CT slice arrive in 4 PDUs instead of 32, which
    # is what large-file ingest pays for in Python (bench/README.md). Senders may send less.
    maximum_pdu_length: int = _opt(
        "MaximumPduLength", 131072, "Largest PDU we receive, in bytes", check=_pdu
    )
    overwrite_instances: bool = _opt(
        "OverwriteInstances", False, "Replace an instance received again"
    )
    sync_storage_area: bool = _opt(
        "SyncStorageArea", True, "fsync files and the index before acknowledging"
    )
    fast_paths: bool = _opt(
        "FastPaths", True, "pipacs only: patch pynetdicom and waitress for speed (tested releases)"
    )
    dicom_web: dict[str, Any] = _opt("DicomWeb", {}, "DICOMweb plugin options", factory=True)
    worklists: dict[str, Any] = _opt("Worklists", {}, "Worklists plugin options", factory=True)
    serve_folders: dict[str, Any] = _opt(
        "ServeFolders", {}, 'Served folders: "/web": "folder"', factory=True
    )
    web_viewer: dict[str, Any] = _opt("WebViewer", {}, "Web viewer options", factory=True)

    # Derived values (not keys): filled by `load`.
    config_dir: str = field(default=".", metadata={})
    modalities: dict[str, Modality] = field(default_factory=dict, metadata={})
    peers: dict[str, Peer] = field(default_factory=dict, metadata={})
    builtin_plugins: list[str] = field(default_factory=list, metadata={})

    @property
    def index_dir(self) -> str:
        return self.index_directory or self.storage_directory


# Keys Orthanc knows that mean nothing to pipacs: accepted with a notice.
ACCEPTED_ORTHANC_KEYS = {
    "ExecuteLuaEnabled": "Lua is not supported",
    "HttpsClientCertificate": "client certificates are not used",
    "SaveJobs": "jobs are not persisted across restarts",
    "JobsHistorySize": "",
    "MediaArchiveSize": "",
    "StorageAccessOnFind": "C-FIND answers come from the index",
    "MetricsEnabled": "",
    "DicomTlsEnabled": "DICOM TLS is not supported",
    "DeidentifyLogs": "",
    "DeidentifyLogsDicomVersion": "",
    "CheckRevisions": "",
    "SynchronousCMove": "C-MOVE is always synchronous",
    "ZipLoaderThreads": "",
    "Warnings": "",
    "DicomEchoChecksFind": "",
    "DicomLossyTranscodingQuality": "pipacs does not transcode",
    "IngestTranscoding": "pipacs stores what it receives",
    "BuiltinDecoderTranscoderOrder": "",
    "MallocArenaMax": "",
    "ExtraMainDicomTags": "",
    "StorageCommitmentReportsSize": "",
    "TranscodeDicomProtocol": "pipacs does not transcode",
    "OrthancExplorerEnabled": "pipacs has its own welcome page",
    "WebDavEnabled": "",
    "WebDavDeleteAllowed": "",
    "WebDavUploadAllowed": "",
    "RestApiWriteToFileSystemEnabled": "",
    "DicomScuPreferredTransferSyntax": "pipacs sends files as stored",
    "AcceptedTransferSyntaxes": "use the *TransferSyntaxAccepted keys",
    "HttpServerEnabledWarning": "",
    "UnknownSopClassAcceptedWarning": "",
    "Gdcm": "",
    "Transfers": "",
    "PostgreSQL": "",
    "MySQL": "",
    "Odbc": "",
    "OverwriteInstancesWarning": "",
    "DatabaseServerIdentifier": "",
    "LimitFindResultsWarning": "",
    "PythonVerbose": "",
    "PythonScript": "use PythonScripts (a list)",
    "StableAgeWarning": "",
}

_FIELDS = {f.metadata["key"]: f for f in dataclasses.fields(Settings) if f.metadata.get("key")}
_KNOWN_SECTIONS: dict[str, tuple[str, ...]] = {
    "DicomWeb": (
        "Enable",
        "Root",
        "EnableWado",
        "WadoRoot",
        "Host",
        "Ssl",
        "QidoCaseSensitive",
        "StudiesMetadata",
        "SeriesMetadata",
        "PublicRoot",
        "EnableMetadataCache",
        "MetadataWorkerThreadsCount",
        "Servers",
    ),
    "Worklists": ("Enable", "Database", "FilterIssuerAet", "LimitAnswers"),
    "ServeFolders": ("AllowCache", "GenerateETag", "Extensions", "Folders"),
    "WebViewer": (
        "Enable",
        "CachePath",
        "CacheSize",
        "Threads",
        "EnableGdcm",
        "RestrictTransferSyntaxes",
    ),
}


def known_keys() -> list[str]:
    return sorted([*_FIELDS, *ACCEPTED_ORTHANC_KEYS])


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


# ---------------------------------------------------------------- loading


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


def _env_key_lookup() -> dict[str, str]:
    return {k.upper(): k for k in [*_FIELDS, *ACCEPTED_ORTHANC_KEYS]}


def _env_value(raw: str, key: str) -> Any:
    f = _FIELDS.get(key)
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
            (k for k in (*_KNOWN_SECTIONS.get(key, ()), *section) if k.upper() == wanted), None
        )
        if sub is None:
            notes.append(f"environment {name}: {key} has no option matching it")
            continue
        try:
            section[sub] = json.loads(raw)
        except json.JSONDecodeError:
            section[sub] = raw
    return notes


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
    if not isinstance(port, int) or isinstance(port, bool) or _port(port):
        errors.append(f"{where}: Port {port!r} must be a TCP port between 1 and 65535")
        return None
    manufacturer = value.get("Manufacturer", "Generic")
    if manufacturer not in MANUFACTURERS:
        errors.append(
            f"{where}: Manufacturer {manufacturer!r} is not one of {', '.join(MANUFACTURERS)}"
        )
        return None
    flags = {}
    for k in ("AllowEcho", "AllowFind", "AllowGet", "AllowMove", "AllowStore"):
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
        f = _FIELDS.get(key)
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
    for key in ("DicomWeb", "Worklists", "WebViewer"):
        section = getattr(settings, _FIELDS[key].name)
        for sub in section:
            if sub not in _KNOWN_SECTIONS[key]:
                notes.append(
                    f"{key}.{sub}: unknown option, ignored"
                    + _suggest(sub, list(_KNOWN_SECTIONS[key]))
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
        if not k.startswith("/") and k not in _KNOWN_SECTIONS["ServeFolders"]:
            errors.append(f'ServeFolders.{k}: a served URI must start with "/"')
    for uri, folder in {**plain, **folders}.items():
        if not isinstance(folder, str):
            errors.append(f"ServeFolders.{uri}: the folder must be a string")
            continue
        resolved = _resolve(folder, base)
        (folders if uri in folders else sf)[uri] = resolved


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


def default_configuration_text() -> str:
    """A commented configuration with every key pipacs uses at its default value."""
    lines = [
        "{",
        "  // pipacs configuration: Orthanc's format and key names; // and /* */ comments",
        "  // are allowed. Relative paths are relative to this file's folder.",
        "",
    ]
    entries = []
    for f in dataclasses.fields(Settings):
        key = f.metadata.get("key")
        if not key or f.metadata.get("ignored"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        if key == "DicomWeb":
            default = {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": True,
                "WadoRoot": "/wado",
                "Ssl": False,
            }
        elif key == "Worklists":
            default = {
                "Enable": False,
                "Database": "WorklistsDatabase",
                "FilterIssuerAet": False,
                "LimitAnswers": 0,
            }
        elif key == "RegisteredUsers":
            default = {"admin": "change-me"}
        entries.append((f.metadata["doc"], key, default))
    for i, (doc, key, default) in enumerate(entries):
        comma = "," if i < len(entries) - 1 else ""
        body = json.dumps(default, indent=2).replace("\n", "\n  ")
        lines.append(f"  // {doc}")
        lines.append(f"  {json.dumps(key)}: {body}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"
