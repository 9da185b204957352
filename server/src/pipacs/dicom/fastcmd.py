"""C-STORE-RQ command sets decoded by hand.

pynetdicom decodes every received command set with pydicom (a Dataset whose elements are
converted when read), then copies each element onto a new primitive through setters that
validate every UID again. For a C-STORE that was about a quarter of the Python time spent
on a 0.5 MB image, and an eighth of a small one's, all of it under the GIL that parallel
associations share.

This module reads the seven elements a plain C-STORE-RQ carries (group length, Affected SOP
Class UID, Command Field, Message ID, Priority, Command Data Set Type, Affected SOP
Instance UID) straight from the bytes, and builds the C_STORE primitive from them. Anything
else, an element more (a Move Originator), an odd length, a UID that is not a conformant
one, goes through pynetdicom and pydicom unchanged. So does everything while pynetdicom's
own DIMSE logging is on (``--trace``): its handlers read the command set as a Dataset.

Tests compare the primitives with pynetdicom's own for generated and mutated command sets.
"""

from __future__ import annotations

import re
import struct
from io import BytesIO
from typing import Any

from pydicom.uid import UID
from pynetdicom import _config, dimse_messages
from pynetdicom.dimse_primitives import C_STORE

_ELEMENT = struct.Struct("<HHI")
_US = struct.Struct("<H")
_UID = re.compile(rb"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")

# element -> (attribute, kind); the command group (0000) only, in the order a C-STORE-RQ
# has them (any order is accepted, each at most once)
_WANTED = {
    0x0000: ("group_length", "UL"),
    0x0002: ("AffectedSOPClassUID", "UI"),
    0x0100: ("CommandField", "US"),
    0x0110: ("MessageID", "US"),
    0x0700: ("Priority", "US"),
    0x0800: ("CommandDataSetType", "US"),
    0x1000: ("AffectedSOPInstanceUID", "UI"),
}
_C_STORE_RQ = 0x0001


class StoreCommand:
    """The decoded command set of a plain C-STORE-RQ: what pynetdicom reads of one."""

    __slots__ = ("AffectedSOPClassUID", "AffectedSOPInstanceUID", "CommandDataSetType",
                 "CommandField", "MessageID", "Priority", "group_length")

    def __init__(self) -> None:
        self.CommandField = -1
        self.CommandDataSetType = -1
        self.MessageID = -1
        self.Priority = -1
        self.group_length = -1
        self.AffectedSOPClassUID = UID("")
        self.AffectedSOPInstanceUID = UID("")


def decode_store_command(raw: bytes) -> StoreCommand | None:
    """The C-STORE-RQ in `raw` (implicit VR little endian), or None to leave it to pydicom."""
    cmd = StoreCommand()
    seen = set()
    pos, end = 0, len(raw)
    while pos < end:
        if pos + 8 > end:
            return None
        group, element, length = _ELEMENT.unpack_from(raw, pos)
        pos += 8
        wanted = _WANTED.get(element)
        if group != 0 or wanted is None or element in seen or pos + length > end:
            return None
        seen.add(element)
        name, kind = wanted
        value = raw[pos:pos + length]
        pos += length
        if kind == "US":
            if length != 2:
                return None
            setattr(cmd, name, _US.unpack(value)[0])
        elif kind == "UL":
            if length != 4:
                return None
            cmd.group_length = int.from_bytes(value, "little")
        else:
            uid = value.rstrip(b"\x00 ")
            if not 0 < len(uid) <= 64 or _UID.fullmatch(uid) is None:
                return None
            setattr(cmd, name, UID(uid.decode("ascii")))
    if len(seen) != len(_WANTED) or cmd.CommandField != _C_STORE_RQ:
        return None
    if cmd.group_length != end - 12:  # the bytes after the group length element itself
        return None
    return cmd


def store_primitive(cmd: StoreCommand, data_set: BytesIO | None) -> C_STORE:
    """The C_STORE primitive pynetdicom's message_to_primitive makes of this command set.

    The UIDs were checked conformant above, which pynetdicom's own validation accepts in
    either of its modes: they are set without it.
    """
    primitive = C_STORE()
    primitive.MessageID = cmd.MessageID
    primitive.Priority = cmd.Priority
    primitive._affected_sop_class_uid = cmd.AffectedSOPClassUID
    primitive._affected_sop_instance_uid = cmd.AffectedSOPInstanceUID
    primitive.DataSet = data_set
    return primitive


def _fast_allowed() -> bool:
    return _config.LOG_HANDLER_LEVEL == "none" and not _config.STORE_RECV_CHUNKED_DATASET


def patch(p: Any) -> None:
    """Fast path "fast-store-commands": plain C-STORE-RQ command sets decoded here."""
    original_decode = dimse_messages.decode
    original_to_primitive = dimse_messages.DIMSEMessage.message_to_primitive

    def decode(bytestream: Any, is_implicit_vr: bool, is_little_endian: bool,
               *args: Any, **kwargs: Any) -> Any:
        if is_implicit_vr and is_little_endian and not args and not kwargs \
                and isinstance(bytestream, BytesIO) and _fast_allowed():
            cmd = decode_store_command(bytestream.getvalue())
            if cmd is not None:
                return cmd
        return original_decode(bytestream, is_implicit_vr, is_little_endian, *args, **kwargs)

    def message_to_primitive(self: Any) -> Any:
        if type(self.command_set) is not StoreCommand:
            return original_to_primitive(self)
        primitive = store_primitive(self.command_set, self.data_set)
        primitive._context_id = self.context_id
        primitive._dataset_path = self._data_set_path
        primitive._dataset_file = self._data_set_file
        return primitive

    p.set(dimse_messages, "decode", decode)
    p.set(dimse_messages.DIMSEMessage, "message_to_primitive", message_to_primitive)
