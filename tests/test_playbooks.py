"""Every playbook parses, and the whole tree passes yamllint and ansible-lint (production profile)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PLAYBOOKS = sorted((ROOT / "playbooks").glob("*.yml"))
ENV = dict(
    os.environ,
    PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    ANSIBLE_VAULT_PASSWORD_FILE=str(ROOT / "inventory" / "example" / ".vault-pass.example"),
    ANSIBLE_NOCOLOR="1",
)


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600, check=False)


def tool(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (pip install -r requirements.txt)")
    return found


def test_there_is_a_site_playbook_made_of_imports_only() -> None:
    site = (ROOT / "playbooks" / "site.yml").read_text()
    assert "import_playbook" in site
    assert "roles:" not in site and "tasks:" not in site


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=[p.name for p in PLAYBOOKS])
def test_playbook_syntax(playbook: Path) -> None:
    result = run(tool("ansible-playbook"), "--syntax-check", "-i", "inventory/example/hosts.yml", str(playbook))
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_inventory_gives_each_pacs_its_own_ae_title() -> None:
    result = run(tool("ansible-inventory"), "-i", "inventory/example/hosts.yml", "--list")
    assert result.returncode == 0, result.stderr
    import json

    hostvars = json.loads(result.stdout)["_meta"]["hostvars"]
    aets = {host: hostvars[host]["server_dicom_aet"] for host in ("pi-a1", "pi-b1")}
    assert aets == {"pi-a1": "PACS_A", "pi-b1": "PACS_B"}


def test_yamllint() -> None:
    result = run(tool("yamllint"), "--strict", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ansible_lint_production_profile() -> None:
    result = run(tool("ansible-lint"), "--profile", "production")
    assert result.returncode == 0, result.stdout + result.stderr
