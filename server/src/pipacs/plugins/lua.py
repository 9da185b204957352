"""Lua scripts as Orthanc runs them: `LuaScripts` from an OrthancPi's configuration carry over.

The scripts (files, or every `*.lua` of a listed folder, sorted) run in one Lua 5.4 state
(lupa, from PyPI; wheels for x86_64, aarch64 and armv7l). A script may define Orthanc's
callbacks: `Initialize()`, `Finalize()`, `OnStoredInstance(instanceId, tags, metadata,
origin)`, `OnStablePatient/OnStableStudy/OnStableSeries(id, tags, metadata)`,
`OnDeletedInstance(instanceId)` (pipacs' name for Orthanc's deleted-resource change at the
instance level), `ReceivedInstanceFilter(tags, origin, info)` (false refuses the instance,
as Orthanc answers) and `IncomingHttpRequestFilter(method, uri, ip, username, headers)`
(false answers 403). The callbacks run one at a time on a worker thread (never in a C-STORE's
thread); the two filters run in the caller's thread. The Lua state is used by one thread at
a time, as in Orthanc.

Functions scripts may call: `RestApiGet(uri, builtin, headers)`, `RestApiPost(uri, body,
builtin, headers)`, `RestApiPut`, `RestApiDelete` (pipacs' own REST API, in process, as the
server itself: no login, no filter), `ParseJson`, `DumpJson(value, keepStrings)`,
`PrintRecursive`, `GetOrthancConfiguration()`, `GenerateDicomUid(level)`, `print` (logged
at INFO), and the toolbox Orthanc's auto-routing samples use: `SendToModality(id, modality,
localAet)`, `SendToPeer(id, peer)`, `Delete(id)`, `ModifyInstance(id, replacements,
removals, removePrivateTags)`, each returning the instance's ID so calls chain. `HttpGet`
and the other calls to outside hosts, and `CallSystem`, are refused with a clear error: a
classroom Pi is offline, and a script that runs programs is not what a class needs.

`POST /tools/execute-script` runs Lua sent over REST and answers what it printed, only with
`"ExecuteLuaEnabled": true` (Orthanc's default is false too).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bottle
from pydicom.uid import generate_uid

from ..context import Origin, ServerContext, StoreRefused
from ..dicomfile import ParsedInstance
from ..http.auth import INTERNAL_KEY as INTERNAL
from ..http.auth import remote_user
from ..http.common import PLURALS
from ..ids import INSTANCE
from .hooks import origin_dict, script_files, simplified_tags

logger = logging.getLogger(__name__)

NAME = "lua"
SECTION = "lua_scripts"

STABLE = {0: "OnStablePatient", 1: "OnStableStudy", 2: "OnStableSeries"}
PLURAL = {level: word for word, level in PLURALS.items()}
CALLBACKS = ("Initialize", "Finalize", "OnStoredInstance", *STABLE.values(),
             "OnDeletedInstance", "ReceivedInstanceFilter", "IncomingHttpRequestFilter")
OFFLINE = ("HttpGet", "HttpPost", "HttpPut", "HttpDelete", "SetHttpCredentials",
           "SetHttpTimeout", "CallSystem")
MAX_OUTPUT = 1 << 20  # what one execute-script may print, at most

# Orthanc's Lua toolbox, in Lua, on the REST API (our own code; the names are Orthanc's).
TOOLBOX = """
function PrintRecursive(value) print(DumpJson(value, true)) end

function SendToModality(resourceId, modality, localAet)
  local body = resourceId
  if localAet ~= nil then
    body = DumpJson({Resources = {resourceId}, LocalAet = localAet}, true)
  end
  if RestApiPost('/modalities/' .. modality .. '/store', body) == nil then
    error('cannot send ' .. resourceId .. ' to modality ' .. modality)
  end
  return resourceId
end

function SendToPeer(resourceId, peer)
  if RestApiPost('/peers/' .. peer .. '/store', resourceId) == nil then
    error('cannot send ' .. resourceId .. ' to peer ' .. peer)
  end
  return resourceId
end

function Delete(resourceId)
  if not RestApiDelete('/instances/' .. resourceId) then
    error('cannot delete instance ' .. resourceId)
  end
  return resourceId
end

function ModifyInstance(resourceId, replacements, removals, removePrivateTags)
  local request = {Replace = replacements or {}, Remove = removals or {},
                   RemovePrivateTags = removePrivateTags and true or false, Force = true}
  local modified = RestApiPost('/instances/' .. resourceId .. '/modify', DumpJson(request, true))
  if modified == nil then error('cannot modify instance ' .. resourceId) end
  local stored = RestApiPost('/instances', modified)
  if stored == nil then error('cannot store the modified instance') end
  return ParseJson(stored)['ID']
end
"""


RESPONSE_STATE = ("_status_line", "_status_code", "_cookies", "_headers", "body")


@contextlib.contextmanager
def bottle_state_kept() -> Iterator[None]:
    """Bottle keeps the request being answered in thread-local globals; a request the server
    makes to itself from inside a route (execute-script's RestApiGet) would replace them, and
    the outer answer would go out with the inner one's headers. Put them back afterwards."""
    try:
        environ = bottle.request.environ
        saved = {a: getattr(bottle.response, a) for a in RESPONSE_STATE}
    except (RuntimeError, AttributeError, KeyError):  # a worker thread: no request here
        yield
        return
    try:
        yield
    finally:
        bottle.request.bind(environ)
        for attribute, value in saved.items():
            setattr(bottle.response, attribute, value)


class LuaUnavailable(RuntimeError):
    """LuaScripts or execute-script are configured but lupa is not installed."""


def configuration(context: ServerContext) -> dict[str, Any]:
    """The configuration as Orthanc-style JSON (its keys; values as pipacs read them)."""
    from ..config import FIELDS

    out: dict[str, Any] = {}
    for key, f in FIELDS.items():
        value = getattr(context.settings, f.name)
        out[key] = json.loads(json.dumps(value, default=str))
    return out


class LuaScripts:
    def __init__(self, context: ServerContext, app: bottle.Bottle | None):
        try:
            try:
                from lupa.lua54 import LuaRuntime  # lupa 2: one module per Lua version
            except ImportError:
                from lupa import LuaRuntime  # Debian's lupa 1.14
        except ImportError as e:
            raise LuaUnavailable(
                "LuaScripts and ExecuteLuaEnabled need the lupa package (pip install lupa; "
                "the server's locks include it where wheels exist): no Lua was run") from e
        self.context = context
        self.app = app
        self.lock = threading.RLock()
        self.lua = LuaRuntime(unpack_returned_tuples=True, register_eval=False)
        self.output: list[str] | None = None
        self.queue: queue.Queue[tuple[str, tuple[Any, ...]] | None] = queue.Queue()
        self.thread: threading.Thread | None = None
        self.defined: frozenset[str] = frozenset()
        g = self.lua.globals()
        for name, function in (
            ("RestApiGet", lambda uri, builtin=None, headers=None:
                self.rest("GET", uri, None, headers)),
            ("RestApiPost", lambda uri, body="", builtin=None, headers=None:
                self.rest("POST", uri, body, headers)),
            ("RestApiPut", lambda uri, body="", builtin=None, headers=None:
                self.rest("PUT", uri, body, headers)),
            ("RestApiDelete", lambda uri, builtin=None, headers=None:
                self.rest("DELETE", uri, None, headers) is not None),
            ("ParseJson", self.parse_json),
            ("DumpJson", lambda value, keep_strings=False: json.dumps(self.to_python(value))),
            ("GetOrthancConfiguration", lambda: self.from_python(configuration(context))),
            ("GenerateDicomUid", lambda level=None: generate_uid()),
            ("print", self.print),
        ):
            g[name] = function
        for name in OFFLINE:
            g[name] = self.refuse(name)
        self.lua.compile(TOOLBOX)()

    # ---------------------------------------------------------------- Lua <-> Python

    def from_python(self, value: Any) -> Any:
        """A Lua table for a dict or list, recursively (lists count from 1, as in Lua)."""
        if isinstance(value, dict):
            return self.lua.table_from({k: self.from_python(v) for k, v in value.items()})
        if isinstance(value, list):
            return self.lua.table_from([self.from_python(v) for v in value])
        return value

    def to_python(self, value: Any) -> Any:
        if type(value).__name__ != "_LuaTable":
            return value
        keys = list(value.keys())
        if keys and all(isinstance(k, int) for k in keys) and sorted(keys) == list(
                range(1, len(keys) + 1)):
            return [self.to_python(value[k]) for k in range(1, len(keys) + 1)]
        return {str(k): self.to_python(value[k]) for k in keys}

    def parse_json(self, text: Any) -> Any:
        return self.from_python(json.loads(text))

    def print(self, *values: Any) -> None:
        line = "\t".join("nil" if v is None else str(v) for v in values)
        if self.output is not None and sum(map(len, self.output)) < MAX_OUTPUT:
            self.output.append(line + "\n")
        else:
            logger.info("Lua: %s", line)

    @staticmethod
    def refuse(name: str) -> Any:
        def refused(*_: Any) -> None:
            raise RuntimeError(f"{name}() is not offered by pipacs: a classroom Pi calls no "
                               "outside host and runs no program from Lua")
        return refused

    # ---------------------------------------------------------------- the REST API, in process

    def rest(self, method: str, uri: Any, body: Any, headers: Any) -> str | None:
        """One request to our own app as the server itself; the body, or None on an error."""
        if self.app is None:
            return None
        path, _, query = str(uri).partition("?")
        data = body.encode("latin-1") if isinstance(body, str) else bytes(body or b"")
        env: dict[str, Any] = {
            "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
            "SERVER_NAME": "localhost", "SERVER_PORT": "0", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(data),
            "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0), "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False, "CONTENT_LENGTH": str(len(data)),
            "CONTENT_TYPE": "application/json" if data[:1] in (b"{", b"[") else "text/plain",
            INTERNAL: True,
        }
        for key, value in (self.to_python(headers) or {}).items():
            env["HTTP_" + str(key).upper().replace("-", "_")] = str(value)
        status: list[str] = []

        def start_response(line: str, _headers: Any, _exc: Any = None) -> Any:
            status.append(line)
            return lambda _data: None

        with bottle_state_kept():
            chunks = self.app(env, start_response)
            try:
                answer = b"".join(chunks)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
        if not status or not status[0].startswith("2"):
            logger.warning("Lua: %s %s answered %s", method, uri, status[0] if status else "?")
            return None
        # Lua strings are bytes: DICOM files and images pass through unchanged.
        return answer.decode("latin-1")

    # ---------------------------------------------------------------- callbacks

    def function(self, name: str) -> Any:
        """The script's function of that name (the Lua state: with self.lock held only)."""
        f = self.lua.globals()[name]
        return f if f is not None and type(f).__name__ == "_LuaFunction" else None

    def call(self, name: str, *args: Any) -> Any:
        with self.lock:
            f = self.function(name)
            if f is None:
                return None
            try:
                return f(*(self.from_python(a) for a in args))
            except Exception as e:  # a Lua error: logged, the server carries on
                logger.error("Lua %s failed: %s", name, e)
                return None

    def load(self, files: list[Path]) -> None:
        with self.lock:
            for f in files:
                try:
                    self.lua.compile(f.read_text(encoding="utf-8"))()
                except Exception as e:
                    logger.error("LuaScripts: %s failed to load: %s", f, e)
                    continue
                logger.info("LuaScripts: %s loaded", f)
            self.scan()
        logger.info("Lua callbacks: %s", ", ".join(sorted(self.defined)) or "none")

    def scan(self) -> None:
        """Note which callbacks the scripts define (with self.lock held), so that the C-STORE
        and HTTP threads can tell without touching the Lua state, which one thread at a time
        may use."""
        self.defined = frozenset(c for c in CALLBACKS if self.function(c) is not None)

    def start(self) -> None:
        self.call("Initialize")
        if self.defined & {"OnStoredInstance", "OnDeletedInstance", *STABLE.values()}:
            self.context.add_listener(self.on_event)
            self.thread = threading.Thread(target=self.run, name="lua", daemon=True)
            self.thread.start()

    def stop(self) -> None:
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join(timeout=5)
            self.thread = None
        self.call("Finalize")

    def on_event(self, event: str, payload: dict[str, Any]) -> None:
        if event == "stored" and "OnStoredInstance" in self.defined:
            ids = payload["result"].ids
            self.queue.put(("OnStoredInstance", (
                ids[INSTANCE], simplified_tags(payload["result"].parsed),
                None, origin_dict(payload["origin"]))))  # metadata: read on the worker
        elif event == "deleted" and "OnDeletedInstance" in self.defined:
            for level, public_id in payload.get("resources", []):
                if level == INSTANCE:
                    self.queue.put(("OnDeletedInstance", (public_id,)))
        elif event == "stable" and STABLE.get(payload["level"]) in self.defined:
            self.queue.put((STABLE[payload["level"]], (payload["id"], None, None)))

    def run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            name, args = item
            if name == "OnStoredInstance":
                args = (args[0], args[1], self.read_json(f"/instances/{args[0]}/metadata?expand"),
                        args[3])
            elif name in STABLE.values():
                level = PLURAL[next(k for k, v in STABLE.items() if v == name)]
                found = self.read_json(f"/{level}/{args[0]}")
                tags = {**(found.get("PatientMainDicomTags") or {}),
                        **(found.get("MainDicomTags") or {})}
                args = (args[0], tags, self.read_json(f"/{level}/{args[0]}/metadata?expand"))
            self.call(name, *args)

    def read_json(self, uri: str) -> dict[str, Any]:
        text = self.rest("GET", uri, None, None)
        try:
            return json.loads(text) if text else {}
        except ValueError:
            return {}

    # ---------------------------------------------------------------- filters (caller's thread)

    def store_filter(self, parsed: ParsedInstance, origin: Origin, raw: bytes) -> None:
        info = {"HasPixelData": b"\xe0\x7f\x10\x00" in raw[-(1 << 20):] or None}
        verdict = self.call("ReceivedInstanceFilter", simplified_tags(parsed),
                            origin_dict(origin), info)
        if verdict is False:
            raise StoreRefused("Filtered", "refused by the Lua ReceivedInstanceFilter")

    def http_filter(self) -> None:
        request = bottle.request
        if request.environ.get(INTERNAL):
            return  # the server's own calls (Lua's RestApi*) are not filtered, as in Orthanc
        allowed = self.call("IncomingHttpRequestFilter", request.method, request.path,
                            request.remote_addr or "", remote_user(), dict(request.headers))
        if allowed is False:
            raise bottle.HTTPResponse(status=403, body="refused by a Lua script\n")

    # ---------------------------------------------------------------- /tools/execute-script

    def run_script(self, code: str) -> str:
        with self.lock:
            self.output = []
            try:
                self.lua.compile(code)()
            finally:
                output, self.output = self.output, None
                self.scan()  # a script may define or drop callbacks
        return "".join(output)


def refused() -> Any:
    raise bottle.HTTPError(403, 'Lua from REST is off: "ExecuteLuaEnabled": true allows '
                                "POST /tools/execute-script (admin only)")


def install_off(app: bottle.Bottle) -> None:
    """No Lua configured: /tools/execute-script says that it is off, as Orthanc does."""
    app.post("/tools/execute-script")(refused)


def install(app: bottle.Bottle | None, context: ServerContext) -> None:
    s = context.settings
    scripts = LuaScripts(context, app)
    scripts.load(script_files(s.lua_scripts, ".lua", "LuaScripts"))
    context.plugins.lua = scripts
    if "ReceivedInstanceFilter" in scripts.defined:
        context.filters.append(scripts.store_filter)
    if app is not None:
        if "IncomingHttpRequestFilter" in scripts.defined:
            app.add_hook("before_request", scripts.http_filter)

        @app.post("/tools/execute-script")
        def execute_script() -> Any:
            if not s.execute_lua_enabled:
                return refused()
            code = bottle.request.body.read(MAX_OUTPUT + 1)
            if len(code) > MAX_OUTPUT:
                raise bottle.HTTPError(413, "a script of more than 1 MiB")
            try:
                out = scripts.run_script(code.decode("utf-8"))
            except Exception as e:
                raise bottle.HTTPError(500, f"the Lua script failed: {str(e)[:300]}") from None
            bottle.response.content_type = "text/plain; charset=utf-8"
            return out
    scripts.start()
