"""DICOM status codes pipacs answers and checks, by name (PS3.4 annex C, PS3.7 annex C)."""

from __future__ import annotations

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # C-FIND: pending, optional keys not supported
CANCEL = 0xFE00
NOT_AUTHORIZED = 0x0124  # refused: the configuration does not allow the peer
PROCESSING_FAILURE = 0x0110
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_MISMATCH = 0xA900  # identifier does not match SOP class
CANNOT_UNDERSTAND = 0xC000
UNABLE_TO_PROCESS = 0xC001

# Warnings a C-STORE or a C-MOVE may end with and still count as done: coercion of data
# elements (or sub-operations complete with failures), elements discarded, data set does
# not match the SOP class.
WARNING_COERCION = 0xB000
WARNING_ELEMENTS_DISCARDED = 0xB006
WARNING_DATA_SET_MISMATCH = 0xB007
SUCCESS_OR_WARNING = frozenset(
    {SUCCESS, WARNING_COERCION, WARNING_DATA_SET_MISMATCH, WARNING_ELEMENTS_DISCARDED}
)
