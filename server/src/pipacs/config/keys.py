"""Orthanc's configuration vocabulary besides the typed keys: the values some keys take, the
keys accepted with a notice, the options of the plugin sections, the plugins pipacs replaces."""

from __future__ import annotations

# Orthanc plugin libraries and the pipacs built-in that takes each one's place.
PLUGIN_EQUIVALENTS = {
    "libServeFolders": "serve-folders",
    "libModalityWorklists": "worklists",
    "libOrthancDicomWeb": "dicom-web",
    "libOrthancWebViewer": "web-viewer",
    "libOrthancOHIF": "ohif",
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


# Keys Orthanc knows that mean nothing to pipacs: accepted with a notice.
ACCEPTED_ORTHANC_KEYS = {
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
    "BuiltinDecoderTranscoderOrder": "",
    "MallocArenaMax": "",
    "ExtraMainDicomTags": "",
    "StorageCommitmentReportsSize": "",
    "OrthancExplorerEnabled": "pipacs has its own welcome page",
    "WebDavEnabled": "",
    "WebDavDeleteAllowed": "",
    "WebDavUploadAllowed": "",
    "RestApiWriteToFileSystemEnabled": "",
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


# The options of the plugin sections pipacs knows (others are named in a notice).
KNOWN_SECTIONS: dict[str, tuple[str, ...]] = {
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
    "OHIF": ("Enable", "Location", "RouterBasename", "DataSource", "Preload"),
}
