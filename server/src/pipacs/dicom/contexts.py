"""Presentation contexts: what the SCP accepts, and what C-STORE sub-operations propose."""

from __future__ import annotations

from typing import Any

import pydicom
from pynetdicom.presentation import (
    AllStoragePresentationContexts,
    PresentationContext,
    QueryRetrievePresentationContexts,
)

VERIFICATION = "1.2.840.10008.1.1"
WORKLIST_FIND = "1.2.840.10008.5.1.4.31"  # Modality Worklist Information Model - FIND

# The acceptor's order decides which proposed syntax is chosen: explicit VR first keeps the
# VRs the sender wrote, and uncompressed before compressed never adds a lossy step.
UNCOMPRESSED = [
    pydicom.uid.ExplicitVRLittleEndian,
    pydicom.uid.ImplicitVRLittleEndian,
    pydicom.uid.ExplicitVRBigEndian,
]
OPTIONAL_SYNTAXES = {
    "deflated_transfer_syntax_accepted": ["1.2.840.10008.1.2.1.99"],
    "jpeg_transfer_syntax_accepted": [
        f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 52, 53, 54, 55, 56, 58, 59, 60, 61, 62, 63, 64)
    ],
    "jpeg_lossless_transfer_syntax_accepted": [
        "1.2.840.10008.1.2.4.57",
        "1.2.840.10008.1.2.4.65",
        "1.2.840.10008.1.2.4.66",
        "1.2.840.10008.1.2.4.70",
    ],
    "jpegls_transfer_syntax_accepted": ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"],
    "jpeg2000_transfer_syntax_accepted": [
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.92",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.201",
        "1.2.840.10008.1.2.4.202",
        "1.2.840.10008.1.2.4.203",
    ],
    "mpeg2_transfer_syntax_accepted": ["1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"],
    "mpeg4_transfer_syntax_accepted": [f"1.2.840.10008.1.2.4.{n}" for n in range(102, 107)],
    "h265_transfer_syntax_accepted": ["1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"],
    "rle_transfer_syntax_accepted": ["1.2.840.10008.1.2.5"],
}


class SharedContexts(list):  # type: ignore[type-arg, unused-ignore]
    """The accepted contexts, built once and shared by every association.

    pynetdicom deep-copies the server's context list for each association, which costs
    tens of milliseconds with every storage SOP class; negotiation only reads it.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedContexts:
        return self


def accepted_syntaxes(settings: Any) -> list[str]:
    out = [str(u) for u in UNCOMPRESSED]
    for attr, uids in OPTIONAL_SYNTAXES.items():
        if getattr(settings, attr):
            out.extend(uids)
    return out


def build_contexts(settings: Any) -> list[PresentationContext]:
    syntaxes = accepted_syntaxes(settings)
    contexts = []
    seen: set[str] = set()
    for cx in AllStoragePresentationContexts:
        ctx = PresentationContext()
        ctx.abstract_syntax = cx.abstract_syntax
        ctx.transfer_syntax = list(syntaxes)
        # Allow the peer to take the SCP role, so that C-GET can send to it.
        ctx.scu_role = True
        ctx.scp_role = True
        contexts.append(ctx)
        seen.add(str(cx.abstract_syntax))
    for uid in [
        VERIFICATION,
        *[str(c.abstract_syntax) for c in QueryRetrievePresentationContexts],
        WORKLIST_FIND,
    ]:
        if uid in seen:
            continue
        ctx = PresentationContext()
        ctx.abstract_syntax = uid
        ctx.transfer_syntax = list(UNCOMPRESSED)
        contexts.append(ctx)
        seen.add(uid)
    return contexts


def retrieve_contexts(
    instances: list[tuple[str, str, str, str, int]], preferred: str | None = None
) -> list[PresentationContext]:
    """The contexts to send these instances in: each SOP class with its stored syntaxes
    first, then DicomScuPreferredTransferSyntax when pipacs may transcode (`preferred`), then
    the two little endian ones (at most 128 contexts)."""
    by_class: dict[str, list[str]] = {}
    for _, _, sop_class, ts, _ in instances:
        syntaxes = by_class.setdefault(sop_class or "", [])
        if ts and ts not in syntaxes:
            syntaxes.insert(0, ts)
    contexts = []
    for sop_class, syntaxes in sorted(by_class.items())[:128]:
        cx = PresentationContext()
        cx.abstract_syntax = sop_class
        extra = [preferred] if preferred and preferred not in syntaxes else []
        extra += [str(t) for t in UNCOMPRESSED[:2] if t not in syntaxes and t not in extra]
        cx.transfer_syntax = [*syntaxes, *extra]
        contexts.append(cx)
    return contexts


def verification_contexts() -> list[PresentationContext]:
    """Verification in the two little endian syntaxes (C-ECHO as an SCU)."""
    cx = PresentationContext()
    cx.abstract_syntax = VERIFICATION
    cx.transfer_syntax = [str(u) for u in UNCOMPRESSED[:2]]
    return [cx]
