"""Event hooks in Python: the modules listed in PythonScripts, in place of Orthanc's Lua scripts.

A script (or every ``*.py`` of a listed folder) may define any of these functions:

``on_stored_instance(instance_id, tags, origin)``
    After an instance is stored. ``tags`` holds its main tags (patient to instance level,
    keyword -> string); ``origin`` is a dict: RequestOrigin ("DicomProtocol", "RestApi", ...),
    RemoteAet, RemoteIp, CalledAet, Username.
``on_change(change_type, level, resource_id)``
    NewPatient/NewStudy/NewSeries/NewInstance, Deleted, and StablePatient/StableStudy/
    StableSeries once nothing arrived for StableAge seconds; level is "Patient", "Study", ...
``received_instance_filter(tags, origin)``
    Before storing: True (or None) accepts; False refuses (C-STORE status 0xA700 "out of
    resources", as Orthanc answers; HTTP 403); an integer is the C-STORE status to answer
    (0 accepts). Runs in the receiving thread: keep it quick.
``incoming_http_request_filter(method, uri, ip, username, headers)``
    Before each HTTP request (after authentication): False answers 403.

The two event hooks run one at a time on a worker thread, so a slow hook never holds up a
C-STORE. Any hook that raises is logged and otherwise ignored (a failing filter accepts).
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import bottle

from .. import tls
from ..context import Origin, ServerContext, StoreRefused
from ..dicomfile import ParsedInstance
from ..http.auth import remote_user
from ..ids import INSTANCE, LEVEL_NAMES

logger = logging.getLogger(__name__)

NAME = "python"
SECTION = "python_scripts"

NEW_CHANGES = ("NewPatient", "NewStudy", "NewSeries", "NewInstance")
STABLE_CHANGES = {0: "StablePatient", 1: "StableStudy", 2: "StableSeries"}
HOOK_NAMES = (
    "on_stored_instance",
    "on_change",
    "received_instance_filter",
    "incoming_http_request_filter",
)


def script_files(paths: list[str], suffix: str, key: str) -> list[Path]:
    """The scripts a configuration key lists: files, and a folder's `*<suffix>` files
    (sorted); a missing one is a warning naming the key."""
    files: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files.extend(sorted(path.glob("*" + suffix)))
        elif path.is_file():
            files.append(path)
        else:
            logger.warning("%s: %s does not exist; skipped", key, path)
    return files


def load_scripts(paths: list[str]) -> list[ModuleType]:
    """Import each script (a folder means its *.py files, sorted); broken ones are logged."""
    files = script_files(paths, ".py", "PythonScripts")
    modules = []
    for n, f in enumerate(files):
        spec = importlib.util.spec_from_file_location(f"pipacs_hooks_{n}_{f.stem}", f)
        if spec is None or spec.loader is None:
            logger.error("PythonScripts: cannot load %s", f)
            continue
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except BaseException:  # a script calling sys.exit must not stop the server either
            logger.exception("PythonScripts: %s failed to load; its hooks are not used", f)
            continue
        found = [h for h in HOOK_NAMES if callable(getattr(module, h, None))]
        logger.info("PythonScripts: %s loaded (%s)", f, ", ".join(found) or "no hooks")
        modules.append(module)
    return modules


def origin_dict(origin: Origin) -> dict[str, str]:
    return {
        "RequestOrigin": origin.kind,
        "RemoteAet": origin.remote_aet,
        "RemoteIp": origin.remote_ip,
        "CalledAet": origin.called_aet,
        "Username": origin.http_user,
    }


def simplified_tags(parsed: ParsedInstance) -> dict[str, str]:
    tags: dict[str, str] = {}
    for level_tags in parsed.tags:
        tags.update(level_tags)
    tags["SOPClassUID"] = parsed.sop_class_uid
    return tags


class Hooks:
    """The loaded scripts' functions, bound to one server context."""

    def __init__(self, context: ServerContext, modules: list[ModuleType]):
        self.context = context
        self.modules = modules
        self._queue: queue.Queue[tuple[str, tuple[Any, ...]] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def functions(self, name: str) -> list[Callable[..., Any]]:
        return [getattr(m, name) for m in self.modules if callable(getattr(m, name, None))]

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run one hook; an exception is logged and gives None."""
        try:
            return function(*args)
        except Exception:
            logger.exception(
                "Python hook %s.%s failed",
                getattr(function, "__module__", "?"),
                getattr(function, "__name__", "?"),
            )
            return None

    # ------------------------------------------------------------ events (worker thread)

    def start(self) -> None:
        if self.functions("on_stored_instance") or self.functions("on_change"):
            self.context.add_listener(self.on_event)
            self._thread = threading.Thread(target=self._run, name="python-hooks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Run the hook calls already queued, then stop the worker (at server shutdown)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def on_event(self, event: str, payload: dict[str, Any]) -> None:
        """Context listener: queue the hook calls for the worker (never blocks the caller)."""
        if event == "stored":
            result = payload["result"]
            ids = result.ids
            for level in sorted(payload.get("created", [])):
                self._queue.put(("on_change", (NEW_CHANGES[level], LEVEL_NAMES[level], ids[level])))
            if INSTANCE not in payload.get("created", [INSTANCE]):
                self._queue.put(("on_change", ("NewInstance", "Instance", ids[INSTANCE])))
            self._queue.put(
                (
                    "on_stored_instance",
                    (ids[INSTANCE], simplified_tags(result.parsed), origin_dict(payload["origin"])),
                )
            )
        elif event == "deleted":
            for level, public_id in payload.get("resources", []):
                self._queue.put(("on_change", ("Deleted", LEVEL_NAMES[level], public_id)))
        elif event == "stable":
            change = STABLE_CHANGES.get(payload["level"])
            if change:
                self._queue.put(
                    ("on_change", (change, LEVEL_NAMES[payload["level"]], payload["id"]))
                )

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            name, args = item
            for function in self.functions(name):
                self.call(function, *args)

    # ------------------------------------------------------------ filters (caller's thread)

    def store_filter(self, parsed: ParsedInstance, origin: Origin, raw: bytes) -> None:
        tags = simplified_tags(parsed)
        info = origin_dict(origin)
        for function in self.functions("received_instance_filter"):
            verdict = self.call(function, tags, info)
            if verdict is None or verdict is True:
                continue
            if isinstance(verdict, int) and not isinstance(verdict, bool) and verdict == 0:
                continue  # status 0x0000: success
            who = f"{function.__module__}.received_instance_filter"
            if isinstance(verdict, int) and not isinstance(verdict, bool) and 0 < verdict <= 0xFFFF:
                raise StoreRefused(
                    "Filtered", f"refused by {who} (status 0x{verdict:04X})", status=verdict
                )
            raise StoreRefused("Filtered", f"refused by {who}")

    def http_filter(self) -> None:
        request = bottle.request
        for function in self.functions("incoming_http_request_filter"):
            allowed = self.call(
                function,
                request.method,
                request.path,
                # the client, even via TLS
                tls.real_address(self.context.tls_front, request.environ),
                remote_user(),
                dict(request.headers),
            )
            if allowed is False:
                raise bottle.HTTPResponse(status=403, body="refused by a Python hook\n")


def install(app: bottle.Bottle | None, context: ServerContext) -> None:
    hooks = Hooks(context, load_scripts(context.settings.python_scripts))
    context.plugins.python_hooks = hooks
    if hooks.functions("received_instance_filter"):
        context.filters.append(hooks.store_filter)
    if app is not None and hooks.functions("incoming_http_request_filter"):
        app.add_hook("before_request", hooks.http_filter)
    hooks.start()
