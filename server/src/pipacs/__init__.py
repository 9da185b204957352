"""pipacs: a lightweight mini-PACS for classroom Raspberry Pis."""

__version__ = "0.1.0"
ORTHANC_API_VERSION = "1.10.1"
