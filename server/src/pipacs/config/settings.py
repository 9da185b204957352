"""The typed settings: every key pipacs knows, with its Orthanc name, default, doc and check."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .keys import ACCEPTED_ORTHANC_KEYS, DEFAULT_ENCODINGS


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
    allow_transcoding: bool = True

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
            "AllowTranscoding": self.allow_transcoding,
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


def _syntax(name: str, what: str, *, default: bool = True, ignored: str = "") -> Any:
    """Orthanc's `<name>TransferSyntaxAccepted` key: whether `what` is accepted."""
    return _opt(f"{name}TransferSyntaxAccepted", default, f"Accept {what}", ignored=ignored)


def _unknown_peers(service: str, default: bool, doc: str) -> Any:
    """Orthanc's `DicomAlwaysAllow<service>` key: `doc` for peers not in DicomModalities."""
    return _opt(f"DicomAlwaysAllow{service}", default, f"{doc} from unknown peers")


def _limit(key: str, default: int, doc: str, check: Any = None) -> Any:
    """A pipacs-only limit against hostile clients: a number, 0 meaning no cap unless
    `check` says otherwise."""
    return _opt(key, default, f"pipacs only: {doc}" + ("" if check else " (0: no cap)"),
                check=check or _non_negative)


def port_problem(v: int) -> str | None:
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


def _syntax_uid(v: str) -> str | None:
    """A transfer syntax pipacs can write ("" for none, where the key allows it)."""
    if not v:
        return None
    from ..transcode import cannot_write

    return cannot_write(v, allow_lossy=True)


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
        "LuaScripts", [], "Lua scripts with Orthanc's callbacks (needs lupa)", factory=True,
        path=True,
    )
    execute_lua_enabled: bool = _opt(
        "ExecuteLuaEnabled", False, "Allow POST /tools/execute-script (Lua sent over REST)"
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
    http_port: int = _opt("HttpPort", 8042, "HTTP port of the REST API", check=port_problem)
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
    dicom_port: int = _opt("DicomPort", 4242, "DICOM port", check=port_problem)
    default_encoding: str = _opt(
        "DefaultEncoding",
        "Latin1",
        "Encoding of files without SpecificCharacterSet",
        check=_encoding,
    )
    # Orthanc's <Name>TransferSyntaxAccepted keys (dicom/scp.py has their syntaxes' UIDs).
    deflated_transfer_syntax_accepted: bool = _syntax(
        "Deflated", "Deflated Explicit VR Little Endian"
    )
    jpeg_transfer_syntax_accepted: bool = _syntax("Jpeg", "JPEG baseline and extended")
    jpeg2000_transfer_syntax_accepted: bool = _syntax("Jpeg2000", "JPEG 2000")
    jpeg_lossless_transfer_syntax_accepted: bool = _syntax("JpegLossless", "JPEG lossless")
    jpip_transfer_syntax_accepted: bool = _syntax(
        "Jpip",
        "JPIP referenced syntaxes (pixel data by URL)",
        default=False,
        ignored="JPIP needs a JPIP server, which pipacs does not run; JPIP syntaxes are refused",
    )
    jpegls_transfer_syntax_accepted: bool = _syntax("JpegLosslessLs", "JPEG-LS")
    mpeg2_transfer_syntax_accepted: bool = _syntax("Mpeg2", "MPEG-2 video")
    mpeg4_transfer_syntax_accepted: bool = _syntax("Mpeg4", "MPEG-4 video")
    h265_transfer_syntax_accepted: bool = _syntax("H265", "HEVC/H.265 video")
    rle_transfer_syntax_accepted: bool = _syntax("Rle", "RLE lossless")
    unknown_sop_class_accepted: bool = _opt(
        "UnknownSopClassAccepted", False, "Accept C-STORE of any SOP class (promiscuous mode)"
    )
    # Transcoding (transcode.py): for DICOM peers, at ingest.
    transcode_dicom_protocol: bool = _opt(
        "TranscodeDicomProtocol", True, "Transcode for DICOM peers that refuse the stored syntax"
    )
    dicom_scu_preferred_transfer_syntax: str = _opt(
        "DicomScuPreferredTransferSyntax", "1.2.840.10008.1.2.1",
        "The syntax to transcode to for a DICOM peer, when it accepts it", check=_syntax_uid
    )
    dicom_lossy_transcoding_quality: int = _opt(
        "DicomLossyTranscodingQuality", 90, "Quality (1-100) of lossy transcoding",
        check=lambda v: None if 1 <= v <= 100 else "must be between 1 and 100",
    )
    ingest_transcoding: str = _opt(
        "IngestTranscoding", "", "Store received instances in this syntax", check=_syntax_uid
    )
    ingest_transcoding_of_uncompressed: bool = _opt(
        "IngestTranscodingOfUncompressed", True, "IngestTranscoding applies to uncompressed"
    )
    ingest_transcoding_of_compressed: bool = _opt(
        "IngestTranscodingOfCompressed", True, "IngestTranscoding applies to compressed"
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
    user_roles: dict[str, str] = _opt(
        "UserRoles", {}, 'pipacs only: the role of a RegisteredUsers user, "admin" (the '
        'default), "teacher" or "student"', factory=True
    )
    anonymous_role: str = _opt(
        "AnonymousRole", "", 'pipacs only: what a client without credentials may do when '
        'AuthenticationEnabled is true: "" nothing (401), "student" read-only'
    )
    anonymous_networks: list[str] = _opt(
        "AnonymousNetworks", [], "pipacs only: the networks AnonymousRole applies to "
        '(e.g. ["10.42.0.0/24"]); [] = every client', factory=True
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
    # pipacs only: limits against careless and hostile clients (issue 13, README)
    dicom_association_request_timeout: int = _limit(
        "DicomAssociationRequestTimeout", 5, "seconds a DICOM connection has to send its "
        "A-ASSOCIATE-RQ", _positive)
    dicom_associations_per_address: int = _limit(
        "DicomAssociationsPerAddress", 16, "most DICOM connections from one IP address")
    http_connections_per_address: int = _limit(
        "HttpConnectionsPerAddress", 32, "most HTTP connections from one IP address")
    http_header_timeout: int = _limit(
        "HttpHeaderTimeout", 10, "seconds an HTTP client has to send a request's headers",
        _positive)
    http_maximum_body_size: int = _limit(
        "HttpMaximumBodySize", 1024, "largest HTTP request body in MB (413 beyond)", _positive)
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
    # Orthanc's DicomAlwaysAllow<Service> keys.
    dicom_always_allow_echo: bool = _unknown_peers("Echo", True, "Answer C-ECHO")
    dicom_always_allow_store: bool = _unknown_peers("Store", True, "Accept C-STORE")
    dicom_always_allow_find: bool = _unknown_peers("Find", False, "Answer C-FIND")
    dicom_always_allow_get: bool = _unknown_peers("Get", False, "Answer C-GET")
    dicom_always_allow_move: bool = _unknown_peers("Move", False, "Answer C-MOVE")
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
    ohif: dict[str, Any] = _opt("OHIF", {}, "OHIF viewer options (Location of its build)",
                                factory=True)

    # Derived values (not keys): filled by `load`.
    config_dir: str = field(default=".", metadata={})
    modalities: dict[str, Modality] = field(default_factory=dict, metadata={})
    peers: dict[str, Peer] = field(default_factory=dict, metadata={})
    builtin_plugins: list[str] = field(default_factory=list, metadata={})

    @property
    def index_dir(self) -> str:
        return self.index_directory or self.storage_directory


FIELDS = {f.metadata["key"]: f for f in dataclasses.fields(Settings) if f.metadata.get("key")}


def known_keys() -> list[str]:
    return sorted([*FIELDS, *ACCEPTED_ORTHANC_KEYS])


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
