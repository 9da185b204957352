"""The fleet modules' shared HTTP client (roles/fleet/module_utils/fleet_http.py), against a
small HTTP server on loopback: Basic authentication, JSON, 404, 401 and a closed port."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fleet_modules import load

load("fleet_content")  # registers ansible.module_utils.fleet_http
from ansible.module_utils.fleet_http import Pacs, PacsError  # noqa: E402

TOKEN = "Basic " + base64.b64encode(b"admin:secret").decode()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def answer(self, code: int, body: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != TOKEN:
            return self.answer(401, b"{}")
        if self.path == "/statistics":
            return self.answer(200, b'{"CountInstances": 3}')
        if self.path == "/patients/x/protected":
            return self.answer(200, b"1", "text/plain")
        return self.answer(404, b'{"Message": "Unknown resource"}')

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.answer(200, json.dumps({"type": self.headers["Content-Type"], "size": len(body)}).encode())


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_json_text_and_missing(url: str) -> None:
    pacs = Pacs(url + "/", "admin", "secret", 5)
    assert pacs.get_json("/statistics") == {"CountInstances": 3}
    assert pacs.call("GET", "/patients/x/protected") == 1  # JSON "1"
    assert pacs.call("GET", "/studies/nope", ok_missing=True) is None
    with pytest.raises(PacsError) as e:
        pacs.call("GET", "/studies/nope")
    assert e.value.code == 404 and "Unknown resource" in str(e.value)
    sent = pacs.call("POST", "/instances", b"\0" * 10, content_type="application/dicom")
    assert sent == {"type": "application/dicom", "size": 10}


def test_a_refused_account_names_the_settings(url: str) -> None:
    with pytest.raises(PacsError) as e:
        Pacs(url, "admin", "wrong", 5).get_json("/statistics")
    assert e.value.code == 401 and "fleet_http_user" in str(e.value)


def test_a_closed_port_says_pipacs_does_not_answer() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PacsError) as e:
        Pacs(f"http://127.0.0.1:{port}", "", "", 2).get_json("/system")
    assert e.value.code is None and "does not answer" in str(e.value)
