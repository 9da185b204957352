"""The fleet modules' HTTP client over HTTPS (server_ssl_enabled): pipacs' certificate is
verified against the one the server role installs (ca_path), not skipped."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fleet_modules import load

load("fleet_content")  # registers ansible.module_utils.fleet_http
from ansible.module_utils.fleet_http import Pacs, PacsError  # noqa: E402


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        body = b'{"CountInstances": 3}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def make_certificate(folder: Path, names: str) -> Path:
    """A self-signed certificate and key in one PEM file, as the server role makes them."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    crt, key = folder / "certificate.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=pi-test", "-addext", f"subjectAltName={names}",
         "-addext", "extendedKeyUsage=serverAuth", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True, timeout=60,
    )
    (folder / "pipacs.pem").write_text(crt.read_text() + key.read_text())
    return crt


def serve(pem: Path) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def made(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    crt = make_certificate(tmp_path, "DNS:localhost,IP:127.0.0.1")
    for url in serve(tmp_path / "pipacs.pem"):
        yield url, crt


def test_the_installed_certificate_is_trusted(made: tuple[str, Path]) -> None:
    url, crt = made
    assert Pacs(url, "", "", 10, str(crt)).get_json("/statistics") == {"CountInstances": 3}


def test_an_unknown_certificate_is_refused(made: tuple[str, Path]) -> None:
    url, _crt = made
    with pytest.raises(PacsError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        Pacs(url, "", "", 10).get_json("/statistics")


def test_verification_can_be_turned_off(made: tuple[str, Path]) -> None:
    url, _crt = made
    assert Pacs(url, "", "", 10, validate_certs=False).get_json("/statistics") == {"CountInstances": 3}


def test_a_certificate_without_127_0_0_1_is_refused(tmp_path: Path) -> None:
    crt = make_certificate(tmp_path, "DNS:pi-test.school.lan")
    for url in serve(tmp_path / "pipacs.pem"):
        with pytest.raises(PacsError, match="127.0.0.1|hostname|match"):
            Pacs(url, "", "", 10, str(crt)).get_json("/statistics")
