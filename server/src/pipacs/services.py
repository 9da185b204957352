"""The server context's collaborators: the plugins' services and the SCU's interface.

The DICOM layer builds the SCU and imports the context, so the context knows the SCU by
the interface below (no import circle)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.dataset import Dataset

from .config import Modality


class SendReport(Protocol):
    sent: int
    failed: list[str]


class ScuPool(Protocol):
    """The DICOM SCU (dicom/scu.py): outgoing C-ECHO and C-STORE over pooled associations."""

    def echo(self, m: Modality) -> None: ...

    def store(self, m: Modality, instance_ids: list[str]) -> SendReport: ...

    def close(self) -> None: ...


class WorklistFinder(Protocol):
    """Answers a modality worklist C-FIND (the worklists plugin)."""

    def __call__(self, event: Any, identifier: Dataset) -> Iterator[tuple[int, Dataset | None]]:
        ...


class Service(Protocol):
    """Something that runs beside the server and is stopped with it."""

    def stop(self) -> None: ...


@dataclass
class PluginServices:
    """What the enabled plugins give the server; filled in as they are installed."""

    enabled: list[str] = field(default_factory=list)  # their names, for /plugins
    served_folders: list[str] = field(default_factory=list)  # URIs served by serve-folders
    worklist_provider: WorklistFinder | None = None
    python_hooks: Service | None = None
    lua: Service | None = None
