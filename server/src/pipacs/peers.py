"""Which configured DICOM modality a calling peer is (DicomModalities, host checks)."""

from __future__ import annotations

import socket

from .config import Modality, Settings


def modality_for(settings: Settings, aet: str, host: str | None = None) -> Modality | None:
    """The configured modality with this AET (and host when DicomCheckModalityHost).

    AETs compare case-insensitively unless StrictAetComparison; with DicomCheckModalityHost the
    peer's address must be the configured host or one of the addresses it resolves to.
    """
    strict = settings.strict_aet_comparison
    for m in settings.modalities.values():
        same = m.aet == aet if strict else m.aet.upper() == aet.upper()
        if same and (not settings.dicom_check_modality_host or host is None
                     or same_host(m.host, host)):
            return m
    return None


def same_host(configured: str, peer: str) -> bool:
    """Whether the peer's address is the configured host (a name is resolved)."""
    if configured == peer:
        return True
    try:
        return peer in {a[4][0] for a in socket.getaddrinfo(configured, None)}
    except OSError:
        return False
