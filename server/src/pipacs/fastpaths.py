"""Guarded fast paths: patches of pynetdicom and waitress internals, installed on request.

pipacs replaces a few private methods of pynetdicom and waitress with faster ones (each
module says what it does and what it saved: dicom/reactor.py, fastcmd.py, fastrsp.py,
rawsend.py, http/channel.py). A private name may change in any release, so nothing is
patched at import: `install()` applies each registered fast path only when its library's
version is one it was tested with and every target it replaces or calls is there with the
tested parameters. Otherwise it logs one warning naming the fast path and why, and that
path keeps the library's stock behaviour. `install()` is idempotent; `uninstall()` puts the
originals back (for tests). `"FastPaths": false` in the configuration installs none.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

logger = logging.getLogger(__name__)

# The releases each fast path was tested with (the venv's; bench/README.md has the figures).
# A release outside this list gets stock behaviour and a warning until it is tested here
# (`make test-newest` runs the tests against the newest releases) and added.
TESTED: dict[str, tuple[str, ...]] = {
    "pynetdicom": ("3.0.4",),
    "waitress": ("3.0.2",),
}


@dataclass(frozen=True)
class Target:
    """A name a fast path replaces or calls: "module:Qual.name", with its tested parameters
    (None: only its presence is checked). `instance`: look the attribute up on an instance
    made without arguments (attributes set in __init__)."""

    where: str
    parameters: tuple[str, ...] | None = None
    instance: bool = False


@dataclass(frozen=True)
class FastPath:
    name: str
    library: str
    apply: str  # "module:function": makes the patch through the Patcher it is given
    targets: tuple[Target, ...]
    what: str = ""
    fix: bool = False  # corrects the library itself: installed even with FastPaths false


def _t(where: str, *parameters: str) -> Target:
    return Target(where, parameters)


_DUL = "pynetdicom.dul:DULServiceProvider"
_DIMSE = "pynetdicom.dimse:DIMSEServiceProvider"
_ENCODE = ("ds", "is_implicit_vr", "is_little_endian", "deflated")

REGISTRY: tuple[FastPath, ...] = (
    FastPath(
        "rawsend", "pynetdicom", "pipacs.dicom.rawsend:patch",
        (_t("pynetdicom.association:encode", *_ENCODE),),
        "C-STORE sub-operations send the stored bytes unchanged",
    ),
    FastPath(
        "reactor-waits", "pynetdicom", "pipacs.dicom.reactor:patch_waits",
        (
            _t(f"{_DUL}.__init__", "self", "assoc"),
            _t(f"{_DUL}.run_reactor", "self"),
            _t("pynetdicom.fsm:StateMachine.do_action", "self", "event"),
            _t(f"{_DIMSE}.__init__", "self", "assoc"),
            _t(f"{_DIMSE}.get_msg", "self", "block"),
            Target("pynetdicom.dul:time"),
            Target("pynetdicom.association:time"),
        ),
        "reactor threads wake on work instead of polling",
    ),
    FastPath(
        "reactor-pause", "pynetdicom", "pipacs.dicom.reactor:patch_pause",
        (
            _t(f"{_DIMSE}.get_msg", "self", "block"),
            _t("pynetdicom.association:Association._run_reactor", "self"),
        ),
        "a paused association thread leaves the sender's DIMSE response alone",
        fix=True,
    ),
    FastPath(
        "recv-into", "pynetdicom", "pipacs.dicom.reactor:patch_recv",
        (_t("pynetdicom.transport:AssociationSocket.recv", "self", "nr_bytes"),),
        "a PDU is read into one buffer",
    ),
    FastPath(
        "pdu-limits", "pynetdicom", "pipacs.dicom.reactor:patch_pdu_limits",
        (
            _t(f"{_DUL}._read_pdu_data", "self"),
            _t(f"{_DUL}._decode_pdu", "self", "bytestream"),
            Target("pynetdicom.association:Association.is_acceptor"),
        ),
        "a PDU over its limit aborts the association before its body is read",
        fix=True,
    ),
    FastPath(
        "pdata-views", "pynetdicom", "pipacs.dicom.reactor:patch_read_pdu",
        (
            _t(f"{_DUL}._read_pdu_data", "self"),
            _t(f"{_DUL}._decode_pdu", "self", "bytestream"),
            _t("pynetdicom.association:Association.get_handlers", "self", "event"),
            Target("pynetdicom.pdu_primitives:P_DATA._presentation_data_value_list",
                   instance=True),
        ),
        "received P-DATA values are views of the PDU",
    ),
    FastPath(
        "fast-responses", "pynetdicom", "pipacs.dicom.fastrsp:patch",
        (
            _t(f"{_DIMSE}.send_msg", "self", "primitive", "context_id"),
            _t("pynetdicom.service_class:encode", *_ENCODE),
            _t(f"{_DUL}.send_pdu", "self", "primitive"),
            _t("pynetdicom.transport:AssociationSocket.send", "self", "bytestream"),
        ),
        "C-STORE/C-FIND responses and C-FIND answers encoded by hand",
    ),
    FastPath(
        "fast-store-commands", "pynetdicom", "pipacs.dicom.fastcmd:patch",
        (
            _t("pynetdicom.dimse_messages:decode", "bytestring", "is_implicit_vr",
               "is_little_endian", "deflated"),
            _t("pynetdicom.dimse_messages:DIMSEMessage.message_to_primitive", "self"),
            Target("pynetdicom.dimse_messages:DIMSEMessage._data_set_path", instance=True),
            Target("pynetdicom.dimse_messages:DIMSEMessage._data_set_file", instance=True),
            Target("pynetdicom.dimse_primitives:C_STORE._affected_sop_class_uid",
                   instance=True),
            Target("pynetdicom.dimse_primitives:C_STORE._affected_sop_instance_uid",
                   instance=True),
            Target("pynetdicom._config:LOG_HANDLER_LEVEL"),
            Target("pynetdicom._config:STORE_RECV_CHUNKED_DATASET"),
        ),
        "C-STORE-RQ command sets decoded by hand",
    ),
    FastPath(
        "waitress-send", "waitress", "pipacs.http.channel:patch",
        (
            _t("waitress.channel:HTTPChannel.write_soon", "self", "data"),
            _t("waitress.wasyncore:dispatcher.send", "self", "data", "do_close"),
            _t("waitress.task:WSGITask.write", "self", "data"),
            _t("waitress.task:WSGITask.build_response_header", "self"),
            Target("waitress.channel:HTTPChannel.total_outbufs_len"),
            Target("waitress.channel:HTTPChannel.last_activity"),
            Target("waitress.buffers:ReadOnlyFileBasedBuffer.remain"),
        ),
        "HTTP answers sent with fewer copies, packets and reads",
    ),
)


@dataclass
class Report:
    """What `install` did: fast paths installed, and the others with the reason."""

    enabled: bool
    installed: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        text = "fast paths installed: " if self.enabled else "fast paths off (FastPaths: " \
            "false); fixes installed: "
        text += ", ".join(self.installed) or "none"
        if self.refused:
            text += "; stock behaviour for: " + ", ".join(self.refused)
        return text


_lock = threading.RLock()
_undo: dict[str, Callable[[], None]] = {}  # installed fast path -> what puts it back
_refused: dict[str, str] = {}  # warned once each, until uninstall()


def _resolve(target: Target) -> tuple[bool, Any]:
    module_name, _, path = target.where.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError:
        return False, None
    parts = path.split(".")
    for i, part in enumerate(parts):
        if target.instance and i == len(parts) - 1:
            try:
                obj = obj()
            except Exception:
                return False, None
        if not hasattr(obj, part):
            return False, None
        obj = getattr(obj, part)
    return True, obj


def problem(fast_path: FastPath) -> str | None:
    """Why this fast path must not be installed here, or None. (An installed one passed
    these checks when it was installed; its targets are its own replacements now.)"""
    if fast_path.name in _undo:
        return None
    try:
        found = version(fast_path.library)
    except PackageNotFoundError:
        return f"{fast_path.library} is not installed"
    tested = TESTED.get(fast_path.library, ())
    if found not in tested:
        return f"{fast_path.library} {found} is not a tested release ({', '.join(tested)})"
    for target in fast_path.targets:
        present, obj = _resolve(target)
        if not present:
            return f"{target.where} is missing"
        if target.parameters is None:
            continue
        try:
            parameters = tuple(inspect.signature(obj).parameters)
        except (TypeError, ValueError):
            return f"{target.where} has no signature to check"
        if parameters != target.parameters:
            return (f"{target.where}({', '.join(parameters)}) differs from the tested "
                    f"({', '.join(target.parameters)})")
    return None


def _apply(fast_path: FastPath) -> Callable[[], None]:
    """Run the fast path's patch function; if it fails half-way, undo what it did."""
    module_name, _, function = fast_path.apply.partition(":")
    patcher = Patcher()
    try:
        getattr(importlib.import_module(module_name), function)(patcher)
    except BaseException:
        patcher()
        raise
    return patcher


def install(enabled: bool = True) -> Report:
    """Install every fast path that fits the libraries here; with `enabled` false only the
    fixes (and installed fast paths are taken out again).

    Idempotent: installed ones stay as they are, refused ones are warned about once.
    """
    with _lock:
        for fast_path in REGISTRY:
            name = fast_path.name
            if not (enabled or fast_path.fix):
                if name in _undo:
                    _undo.pop(name)()
                continue
            if name in _undo or name in _refused:
                continue
            why = problem(fast_path)
            if why is None:
                try:
                    _undo[name] = _apply(fast_path)
                    continue
                except Exception as e:  # _apply undid what it had patched
                    why = f"installing it failed: {e}"
            _refused[name] = why
            logger.warning("fast path %s not installed, stock behaviour instead: %s", name, why)
        wanted = [f for f in REGISTRY if enabled or f.fix]
        return Report(enabled, [f.name for f in wanted if f.name in _undo],
                      {f.name: _refused[f.name] for f in wanted if f.name in _refused})


def uninstall() -> None:
    """Put back the originals of every installed fast path (the last installed first)."""
    with _lock:
        for name in reversed(list(_undo)):
            _undo.pop(name)()
        _refused.clear()


def installed(name: str) -> bool:
    return name in _undo


_ABSENT = object()


class Patcher:
    """Replaces attributes and remembers the originals; calling it puts them back."""

    def __init__(self) -> None:
        self._saved: list[tuple[Any, str, Any]] = []

    def set(self, owner: Any, name: str, value: Any) -> Any:
        """Replace `owner.name` with `value`; returns what `owner.name` was."""
        current = getattr(owner, name)
        # a class's own entry (an inherited one is deleted again, not copied down)
        own = vars(owner).get(name, _ABSENT)
        self._saved.append((owner, name, own))
        setattr(owner, name, value)
        return current

    def __call__(self) -> None:
        while self._saved:
            owner, name, own = self._saved.pop()
            if own is _ABSENT:
                delattr(owner, name)
            else:
                setattr(owner, name, own)
