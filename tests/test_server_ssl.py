"""The server role's certificate makers (tasks/ssl_make_crypto.yml and ssl_make_openssl.yml)
on the controller, without a Pi: both make the same kind of certificate, only once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "roles" / "server"
BIN = Path(sys.executable).parent

PLAY = """
- hosts: all
  gather_facts: false
  vars_files:
    - {role}/defaults/main.yml
    - {role}/vars/main.yml
  vars:
    role_path: {role}
    server_ssl_enabled: true
    hotspot_friendly_names: [pacs.classroom]
    hotspot_address: 10.42.0.1
  tasks:
    - name: Make the certificate
      ansible.builtin.include_tasks: {role}/tasks/{maker}
"""


def make(tmp_path: Path, maker: str) -> tuple[str, Path]:
    (tmp_path / "pki").mkdir(mode=0o700, exist_ok=True)  # as tasks/ssl_make.yml does first
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n    pi-x1:\n"
        f"      ansible_connection: local\n      ansible_python_interpreter: {sys.executable}\n"
    )
    (tmp_path / "play.yml").write_text(PLAY.format(role=ROLE, maker=maker))
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1")
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "hosts.yml", "play.yml"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout, tmp_path / "pki"


def describe(crt: Path) -> str:
    return subprocess.run(
        ["openssl", "x509", "-in", str(crt), "-noout", "-ext",
         "subjectAltName,basicConstraints,keyUsage,extendedKeyUsage", "-dates"],
        check=True, capture_output=True, text=True, timeout=30,
    ).stdout


@pytest.mark.parametrize("maker", ["ssl_make_crypto.yml", "ssl_make_openssl.yml"])
def test_a_certificate_for_the_pi_made_once(tmp_path: Path, maker: str) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    first, pki = make(tmp_path, maker)
    crt, key = pki / "pi-x1.crt", pki / "pi-x1.key"
    assert "changed=0" not in first
    text = describe(crt)
    assert "DNS:pi-x1, DNS:pacs.classroom, DNS:localhost, IP Address:10.42.0.1, IP Address:127.0.0.1" in text, text
    assert "CA:FALSE" in text and "Digital Signature" in text and "TLS Web Server Authentication" in text, text
    assert key.stat().st_mode & 0o077 == 0, oct(key.stat().st_mode)
    pair = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-pubkey"], capture_output=True,
                          text=True, check=True).stdout
    assert pair == subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout"], capture_output=True,
                                  text=True, check=True).stdout
    before = crt.read_bytes(), key.read_bytes()
    again, _ = make(tmp_path, maker)
    assert "changed=0" in again, again
    assert (crt.read_bytes(), key.read_bytes()) == before
