"""HTTPS (SslEnabled) with a self-signed certificate made by the test, and remote access."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import urllib.request
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pyorthanc
import pytest

from pipacs.ids import resource_ids
from test_rest_resources import uids


def self_signed(folder: Path) -> Path:
    """certificate.pem: a certificate for 127.0.0.1 followed by its key (Orthanc's layout)."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make a test certificate")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    both = folder / "certificate.pem"
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    return both


@pytest.fixture
def https_pipacs(make_pipacs: Any, tmp_path: Path) -> tuple[Any, Path]:
    pem = self_signed(tmp_path)
    p = make_pipacs(SslEnabled=True, SslCertificate=str(pem), AuthenticationEnabled=True,
                    RegisteredUsers={"bob": "pw"})
    return p, tmp_path / "cert.pem"


def test_https_serves_the_api(https_pipacs, small_data) -> None:  # type: ignore[no-untyped-def]
    p, cert = https_pipacs
    url = f"https://127.0.0.1:{p.http_port}"
    o = pyorthanc.Orthanc(url, username="bob", password="pw", verify=str(cert))
    assert o.get_system()["Name"] == "TestPi"
    answers = [o.post_instances(f.read_bytes()) for f in small_data[:10]]
    assert {a["Status"] for a in answers} == {"Success"}
    ids = resource_ids(*uids(small_data[0]))
    # A large streamed answer crosses the TLS relay intact.
    archive = o.get_series_id_archive(ids[2])
    with zipfile.ZipFile(BytesIO(archive)) as zf:
        assert len(zf.namelist()) == 10
    # The client's address is seen through the relay (metadata RemoteIP).
    assert o.get_instances_id_metadata_name(ids[3], "RemoteIP") == "127.0.0.1"
    with httpx.Client(verify=str(cert), auth=("bob", "pw")) as c:  # keep-alive, one socket
        for _ in range(3):
            assert c.get(url + "/changes?last").status_code == 200


def test_https_refuses_plain_http_and_untrusted_clients(https_pipacs) -> None:  # type: ignore[no-untyped-def]
    p, cert = https_pipacs
    with pytest.raises((ConnectionError, OSError, urllib.error.URLError)):
        urllib.request.urlopen(f"http://127.0.0.1:{p.http_port}/system", timeout=5).read()
    untrusted = ssl.create_default_context()  # does not know the self-signed certificate
    with pytest.raises(ssl.SSLCertVerificationError), socket.create_connection(
            ("127.0.0.1", p.http_port), timeout=5) as raw, \
            untrusted.wrap_socket(raw, server_hostname="127.0.0.1"):
        pass
    trusted = ssl.create_default_context(cafile=str(cert))
    req = urllib.request.Request(f"https://127.0.0.1:{p.http_port}/system")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, context=trusted, timeout=5)
    assert e.value.code == 401
    p.echo()  # DICOM is unaffected


def test_remote_access_refused_unless_allowed(make_pipacs) -> None:  # type: ignore[no-untyped-def]
    """A client on a non-loopback address of this machine counts as remote."""
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    closed = make_pipacs(RemoteAccessAllowed=False)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{address}:{closed.http_port}/system", timeout=5)
    opened = make_pipacs(RemoteAccessAllowed=True, AuthenticationEnabled=True,
                         RegisteredUsers={"u": "p"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://{address}:{opened.http_port}/system", timeout=5)
    assert e.value.code == 401
    status, body = _get(f"http://{address}:{opened.http_port}/system", ("u", "p"))
    assert status == 200 and json.loads(body)["Name"] == "TestPi"


def _get(url: str, auth: tuple[str, str]) -> tuple[int, bytes]:
    r = httpx.get(url, auth=auth, timeout=5)
    return r.status_code, r.content


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent for a UDP connect
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else str(address)
