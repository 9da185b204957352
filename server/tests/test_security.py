"""Security: authentication on every route, loopback-only HTTP, DICOM peers as configured, no
secret in the logs. Each against a running pipacs over real sockets.

- Authentication: the routes are read from the real Bottle application, built in-process
  from the same configuration as the running server (every plugin on: DICOMweb, worklists,
  served folders, the viewer, Python hooks; and the welcome page), so a route added later is
  covered without editing this file. Each one must answer 401 to a request without
  credentials, or with wrong ones. PUBLIC_ROUTES is the allow-list of routes that may
  answer without credentials: it is empty, as in Orthanc, where nothing is public once
  AuthenticationEnabled is true (the welcome page and the viewer included: a teacher who
  turns authentication on means the whole server).
- RemoteAccessAllowed false: 127.0.0.2 would not do, it is a loopback address as much as
  127.0.0.1 is. So the client runs in a network namespace of its own, joined to the host by
  a veth pair, and connects to the host's end of it: a real non-loopback peer. It is
  refused (pipacs only listens on loopback); the same client gets an answer from a second
  server with RemoteAccessAllowed true, which shows that the path works and the refusal is
  the setting's doing. The application's own check (a second line of defence behind the
  listening address) is tested in-process with a non-loopback REMOTE_ADDR.
- DICOM peers: with every DicomAlwaysAllow* false, an AET missing from DicomModalities is
  refused by dcmtk's echoscu, findscu and storescu (/usr/bin, not pynetdicom's), a listed
  one is served, per-modality Allow* and DicomCheckModalityHost are honoured.
- Secrets: at trace level, with HttpVerbose, a password used correctly and wrongly, and an
  Orthanc peer with a password (a recording HTTP server on loopback) that pipacs talks to:
  neither a password nor its base64 Authorization value appears in the log or in answers.
"""

from __future__ import annotations

import base64
import http.server
import io
import ipaddress
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import DCMTK_ENV, PipacsProcess, base_config, free_port, need
from conftest import http_request as request

USER, PASSWORD = "teacher", "Corr3ct-h0rse-battery"
WRONG_PASSWORDS = ["Wr0ng-staple-42", "", "Corr3ct-h0rse-batter"]
PEER_PASSWORD = "peer-s3cret-Zebra"

# Routes that answer without credentials when AuthenticationEnabled is true: none (see above).
PUBLIC_ROUTES: set[tuple[str, str]] = set()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# ---------------------------------------------------------------- every route needs credentials


def plugin_config(folder: Path, **overrides: Any) -> dict[str, Any]:
    """Every plugin on, paths relative to `folder` (made here)."""
    (folder / "web").mkdir(exist_ok=True)
    (folder / "web" / "index.html").write_text("<p>served</p>")
    (folder / "worklists").mkdir(exist_ok=True)
    (folder / "python").mkdir(exist_ok=True)
    (folder / "python" / "allow_all.py").write_text(
        "def incoming_http_request_filter(method, uri, ip, username, headers):\n"
        "    return True\n")
    return base_config(
        AuthenticationEnabled=True,
        RegisteredUsers={USER: PASSWORD},
        DicomWeb={"Enable": True},
        Worklists={"Enable": True, "Database": "worklists"},
        Plugins=["libServeFolders.so"],
        ServeFolders={"/web": "web"},
        WebViewer={"Enable": True},
        PythonScripts=["python/"],
        DicomModalities={"known": ["KNOWN", "127.0.0.1", free_port()]},
        **overrides,
    )


def app_routes(config: dict[str, Any], folder: Path) -> tuple[list[tuple[str, str]], list[str]]:
    """(method, rule) of every route the Bottle app registers for `config`, and its plugins.

    The app is built in-process on its own copy of the folders (one process per index)."""
    from pipacs import config as configuration
    from pipacs.context import ServerContext
    from pipacs.http.app import create_app

    folder.mkdir()
    plugin_config(folder)
    settings, _ = configuration.build_settings(config, folder)
    context = ServerContext(settings)
    try:
        app = create_app(context)
        return ([(r.method, r.rule) for r in app.routes],
                list(context.plugins.enabled))
    finally:
        context.stop()


SAMPLES = {"int": "0", "path": "index.html"}


def concrete(rule: str) -> str:
    """A path that the rule matches: each wildcard replaced by a plausible value."""
    def value(m: re.Match[str]) -> str:
        name, _, spec = m.group(1).partition(":")
        kind, _, arg = spec.partition(":")
        if kind == "re":
            return arg.split("|")[0]
        return SAMPLES.get(kind, "x" if name != "frames" else "1")
    return re.sub(r"<([^>]+)>", value, rule)


def serving_every_plugin(tmp_path_factory: pytest.TempPathFactory, name: str,
                         **overrides: Any) -> Iterator[tuple[PipacsProcess, Any]]:
    """A running pipacs with every plugin on (plugin_config + overrides), and app_routes."""
    folder = tmp_path_factory.mktemp(name)
    cfg = {**plugin_config(folder), **overrides}
    p = PipacsProcess(folder, cfg)
    p.start()
    routes = app_routes(cfg, tmp_path_factory.mktemp("routes") / "app")
    yield p, routes
    p.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PipacsProcess, Any]]:
    yield from serving_every_plugin(tmp_path_factory, "secured")


def test_the_route_list_is_the_running_servers(secured: tuple[PipacsProcess, Any]) -> None:
    p, (routes, plugins) = secured
    assert len(routes) > 90, routes  # the core REST API and every plugin's routes
    status, _, body = request(p.url + "/plugins", headers={"Authorization": basic(USER, PASSWORD)})
    assert status == 200 and sorted(json.loads(body)) == sorted(plugins), body
    assert {"dicom-web", "worklists", "serve-folders", "web-viewer", "python"} <= set(plugins)
    rules = {rule for _, rule in routes}
    for expected in ("/", "/viewer/", "/web/<rel:path>", "/worklists", "/dicom-web/studies",
                     "/wado", "/tools/shutdown", "/instances/<pid>/file"):
        assert expected in rules, expected


def test_every_route_needs_credentials(secured: tuple[PipacsProcess, Any]) -> None:
    p, (routes, _) = secured
    refused, answered = [], []
    for method, rule in routes:
        path = concrete(rule)
        for auth in [None, *(basic(USER, w) for w in WRONG_PASSWORDS), basic("nobody", PASSWORD),
                     "Basic !!!not-base64", "Bearer " + PASSWORD, basic(USER, "")[:-2]]:
            headers = {"Authorization": auth} if auth else {}
            status, answer_headers, body = request(p.url + path, method, b"{}", headers)
            if (method, rule) in PUBLIC_ROUTES:
                continue
            if status != 401 or "Basic" not in answer_headers.get("WWW-Authenticate", ""):
                answered.append((method, path, auth, status, body[:80]))
            else:
                refused.append((method, path))
    assert not answered, answered
    assert len(refused) == 8 * (len(routes) - len(PUBLIC_ROUTES))
    # HEAD of GET routes and unknown routes or methods too: nothing is told before the login.
    for method, path in [("HEAD", "/system"), ("GET", "/no-such-route"), ("PATCH", "/patients"),
                         ("OPTIONS", "/"), ("GET", "//system"), ("GET", "/web/../../etc")]:
        assert request(p.url + path, method)[0] == 401, (method, path)


def test_credentials_open_every_get_route(secured: tuple[PipacsProcess, Any]) -> None:
    """The right password is taken everywhere (a 404 for the made-up IDs is fine)."""
    p, (routes, _) = secured
    auth = {"Authorization": basic(USER, PASSWORD)}
    for method, rule in routes:
        if method == "GET":
            status = request(p.url + concrete(rule), headers=auth)[0]
            # 501: an Orthanc operation pipacs says it does not offer (README).
            assert status not in (401, 403) and (status < 500 or status == 501), (rule, status)


def test_the_application_refuses_remote_clients_itself(tmp_path: Path) -> None:
    """Behind the listening address, the app checks the client's address on its own."""
    from pipacs import config as configuration
    from pipacs.context import ServerContext
    from pipacs.http.app import create_app

    settings, _ = configuration.build_settings(
        base_config(AuthenticationEnabled=False), tmp_path)
    context = ServerContext(settings)
    try:
        app = create_app(context)
        for address, expected in [("100.64.0.2", "403"), ("192.168.1.20", "403"),
                                  ("fe80::1", "403"), ("127.0.0.1", "200"), ("::1", "200")]:
            answer: list[str] = []

            def start_response(status: str, headers: Any, exc: Any = None,
                               answer: list[str] = answer) -> None:
                answer.append(status)

            environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/system", "QUERY_STRING": "",
                       "REMOTE_ADDR": address, "REMOTE_PORT": "40000", "SERVER_NAME": "x",
                       "SERVER_PORT": "8042", "wsgi.input": io.BytesIO(),
                       "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http"}
            b"".join(app(environ, start_response))
            assert answer[0].startswith(expected), (address, answer)
    finally:
        context.stop()


# ---------------------------------------------------------------- RemoteAccessAllowed


class Namespace:
    """A network namespace joined to the host by a veth pair: HOST <-> PEER (a /30)."""

    def __init__(self) -> None:
        pid = os.getpid()
        self.name = f"pipacs-sec-{pid}"
        self.host_if, self.peer_if = f"psh{pid}"[:15], f"psp{pid}"[:15]
        # One /30 per process in 100.64.0.0/10 (shared address space, unused on test hosts;
        # podman takes 10.88.0.0/16): concurrent runs never share addresses.
        base = ipaddress.IPv4Address("100.64.0.0") + 4 * (pid % (1 << 20))
        self.host, self.peer = str(base + 1), str(base + 2)

    def ip(self, *args: str, ns: bool = False) -> None:
        command = ["ip", "netns", "exec", self.name, "ip", *args] if ns else ["ip", *args]
        subprocess.run(command, check=True, capture_output=True, text=True)

    def __enter__(self) -> Namespace:
        try:
            self.ip("netns", "add", self.name)
        except (subprocess.CalledProcessError, FileNotFoundError) as e:
            pytest.skip(f"cannot create a network namespace here: {e}")
        try:
            self.ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
            self.ip("link", "set", self.peer_if, "netns", self.name)
            self.ip("addr", "add", f"{self.host}/30", "dev", self.host_if)
            self.ip("link", "set", self.host_if, "up")
            self.ip("addr", "add", f"{self.peer}/30", "dev", self.peer_if, ns=True)
            self.ip("link", "set", self.peer_if, "up", ns=True)
            self.ip("link", "set", "lo", "up", ns=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def fetch(self, port: int, path: str = "/system") -> str:
        """GET http://HOST:port/path from inside the namespace: the status, or the error."""
        code = (
            "import sys, urllib.request, urllib.error\n"
            "try:\n"
            f"    r = urllib.request.urlopen('http://{self.host}:{port}{path}', timeout=10)\n"
            "    print(r.status)\n"
            "except urllib.error.HTTPError as e:\n"
            "    print(e.code)\n"
            "except OSError as e:\n"
            "    print(type(getattr(e, 'reason', e)).__name__)\n"
        )
        proc = subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", code],
                              capture_output=True, text=True, timeout=30)
        return proc.stdout.strip() or proc.stderr.strip()


def test_remote_access_false_refuses_a_non_loopback_client(make_pipacs: Any) -> None:
    local_only = make_pipacs(RemoteAccessAllowed=False, AuthenticationEnabled=False)
    open_to_all = make_pipacs(RemoteAccessAllowed=True, AuthenticationEnabled=True,
                              RegisteredUsers={USER: PASSWORD})
    with Namespace() as ns:
        assert ns.fetch(local_only.http_port) == "ConnectionRefusedError"
        # The same client, the same path: a server that allows remote access answers it
        # (and, with authentication on, asks the remote client to log in).
        assert ns.fetch(open_to_all.http_port) == "401"
    assert local_only.status("GET", "/system") == 200  # loopback clients still served


# ---------------------------------------------------------------- DICOM peers


@pytest.fixture
def guarded(make_pipacs: Any, small_data: list[Path]) -> PipacsProcess:
    port = free_port()
    return make_pipacs(  # type: ignore[no-any-return]
        DicomAlwaysAllowEcho=False, DicomAlwaysAllowStore=False, DicomAlwaysAllowFind=False,
        DicomAlwaysAllowGet=False, DicomAlwaysAllowMove=False, DicomCheckModalityHost=True,
        DicomModalities={
            "known": ["KNOWN", "127.0.0.1", port],
            "echoonly": {"AET": "ECHOONLY", "Host": "127.0.0.1", "Port": port,
                         "AllowFind": False, "AllowStore": False},
            "elsewhere": ["ELSEWHERE", "192.0.2.7", port],  # never contacted
        },
    )


def dcmtk_as(tool: str, aet: str, p: PipacsProcess, *args: str | Path
             ) -> subprocess.CompletedProcess[str]:
    """dcmtk's `tool` calling pipacs as `aet`; Path arguments are files, put after the peer."""
    options = [str(a) for a in args if not isinstance(a, Path)]
    files = [str(a) for a in args if isinstance(a, Path)]
    return subprocess.run([need(tool), "-aet", aet, "-aec", p.aet, *options, "127.0.0.1",
                           str(p.dicom_port), *files], env=DCMTK_ENV, capture_output=True,
                          text=True, timeout=60)


FIND = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"]


def test_unknown_aets_are_refused(guarded: PipacsProcess, small_data: list[Path]) -> None:
    for aet in ("STRANGER", "ELSEWHERE"):  # unknown, and known but from another host
        for tool, args in [("echoscu", []), ("findscu", FIND),
                           ("storescu", [small_data[0]])]:
            proc = dcmtk_as(tool, aet, guarded, *args)
            assert proc.returncode != 0, (aet, tool, proc.stdout, proc.stderr)
            assert "Association Rejected" in proc.stdout + proc.stderr, (aet, tool, proc.stderr)
    assert guarded.get("/statistics")["CountInstances"] == 0
    assert "unknown AET 'STRANGER'" in guarded.log()


def test_listed_aets_get_what_they_are_allowed(guarded: PipacsProcess,
                                               small_data: list[Path]) -> None:
    assert dcmtk_as("storescu", "KNOWN", guarded, small_data[0]).returncode == 0
    assert dcmtk_as("echoscu", "KNOWN", guarded).returncode == 0
    found = dcmtk_as("findscu", "KNOWN", guarded, *FIND)
    assert found.returncode == 0 and "StudyInstanceUID" in found.stderr + found.stdout
    # ECHOONLY may echo, not find nor store (refused inside the association).
    assert dcmtk_as("echoscu", "ECHOONLY", guarded).returncode == 0
    refused = dcmtk_as("findscu", "ECHOONLY", guarded, *FIND)
    assert "StudyInstanceUID" not in refused.stderr + refused.stdout
    dcmtk_as("storescu", "ECHOONLY", guarded, small_data[1])
    assert guarded.get("/statistics")["CountInstances"] == 1
    assert "FIND from 'ECHOONLY'" in guarded.log() and "STORE from 'ECHOONLY'" in guarded.log()


# ---------------------------------------------------------------- no secret in logs


class RecordingPeer(http.server.ThreadingHTTPServer):
    """An Orthanc peer on loopback that wants PEER_PASSWORD and records what it got."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        peer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self) -> None:
                peer.seen.append(self.headers.get("Authorization", ""))
                length = int(self.headers.get("Content-Length", 0) or 0)
                self.rfile.read(length)
                if self.headers.get("Authorization") != basic("pipacs", PEER_PASSWORD):
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="peer"')
                    self.end_headers()
                    return
                body = json.dumps({"Name": "peer", "Version": "1.10.1"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def peer() -> Iterator[RecordingPeer]:
    server = RecordingPeer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_no_secret_in_logs(make_pipacs: Any, peer: RecordingPeer, small_data: list[Path]
                           ) -> None:
    url = f"http://127.0.0.1:{peer.server_address[1]}/"
    p = make_pipacs(start=False, AuthenticationEnabled=True, RegisteredUsers={USER: PASSWORD},
                    HttpVerbose=True,
                    OrthancPeers={"good": {"Url": url, "Username": "pipacs",
                                           "Password": PEER_PASSWORD},
                                  "stale": [url, "pipacs", WRONG_PASSWORDS[0]]})
    p.start("--trace")
    auth = {"Authorization": basic(USER, PASSWORD)}
    p.store(small_data[0])
    for wrong in [*WRONG_PASSWORDS, PASSWORD + "x"]:
        assert request(p.url + "/patients", headers={"Authorization": basic(USER, wrong)}
                       )[0] == 401
    assert request(p.url + "/patients", headers={"Authorization": "Basic " + PASSWORD})[0] == 401
    # the password typed in the user name field
    assert request(p.url + "/patients", headers={"Authorization": basic(PASSWORD, "x")})[0] == 401
    status, _, body = request(p.url + "/patients", headers=auth)
    patient = json.loads(body)[0]
    assert status == 200
    # pipacs uses the peers' passwords (so they are in its memory and on the wire)...
    assert request(p.url + "/peers/good/system", headers=auth)[0] == 200
    status, _, body = request(p.url + "/peers/good/store", "POST", json.dumps([patient]).encode(),
                              auth)
    assert status == 200, body
    assert request(p.url + "/peers/stale/system", headers=auth)[0] == 500  # the peer says 401
    assert basic("pipacs", PEER_PASSWORD) in peer.seen
    # ... but no answer shows them ...
    for path in ["/peers?expand", "/peers/good/configuration", "/peers/stale/configuration",
                 "/system", "/modalities?expand"]:
        status, _, body = request(p.url + path, headers=auth)
        assert status == 200 and PEER_PASSWORD.encode() not in body, (path, body)
        assert WRONG_PASSWORDS[0].encode() not in body and PASSWORD.encode() not in body
    # ... and the log (trace level, HTTP verbose) holds none of them, plain or encoded.
    request(p.url + "/tools/log-level", "PUT", b"trace", auth)
    request(p.url + "/system", headers=auth)
    p.stop()
    log = p.log()
    assert "HTTP POST http://127.0.0.1" in log, log[-2000:]  # it logged its peer requests
    assert f"wrong credentials for user {USER!r}" in log  # and the refused logins
    secrets = [PASSWORD, PEER_PASSWORD, *(w for w in WRONG_PASSWORDS if w)]
    tokens = [basic(USER, PASSWORD), basic("pipacs", PEER_PASSWORD),
              basic(PASSWORD, "x"), *(basic(USER, w) for w in WRONG_PASSWORDS)]
    for secret in [*secrets, *(t.removeprefix("Basic ") for t in tokens)]:
        assert secret not in log, f"{secret!r} is in the log"
