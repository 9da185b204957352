"""The roles and playbooks as the Ansible collection pipacs.classroom (galaxy.yml): its version is
the server's, it builds, installs offline next to the collections it declares, and its
playbooks and modules are found by their full names from outside the clone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"
PLAYBOOKS = sorted(p.stem for p in (ROOT / "playbooks").glob("*.yml"))


def run(*cmd: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # Outside the clone: its ansible.cfg (roles_path = roles) must not help the collection.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    environment.update(PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1", **env)
    return subprocess.run(cmd, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300, check=False)


def test_version_is_the_servers_and_has_a_changelog_entry() -> None:
    init = (ROOT / "server" / "src" / "pipacs" / "__init__.py").read_text()
    server_version = re.search(r'^__version__ = "([^"]+)"', init, re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert GALAXY["version"] == server_version
    headings = re.findall(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    # What main has that no release has yet may come first, under "Unreleased".
    if headings[0] == "Unreleased":
        headings = headings[1:]
    assert headings[0] == GALAXY["version"], headings
    assert "Unreleased" not in headings, headings


def test_declares_every_collection_the_roles_and_playbooks_use() -> None:
    used = set()
    for path in [ROOT / "ansible.cfg", *ROOT.glob("playbooks/*.yml"), *ROOT.glob("roles/*/*/*.yml"),
                 *ROOT.glob("roles/*/*/*/*.yml")]:
        used |= set(re.findall(r"\b([a-z_]+\.[a-z_]+)\.[a-z_]+(?=:|\b)", path.read_text()))
    collections = {name for name in used if name.split(".")[0] in {"ansible", "community", "containers"}}
    assert collections - {"ansible.builtin", FQCN} == set(GALAXY["dependencies"]), collections


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("collection")
    built = run(str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp / "dist"), str(ROOT),
                cwd=tmp)
    assert built.returncode == 0, built.stdout + built.stderr
    (tarball,) = (tmp / "dist").glob("*.tar.gz")
    assert tarball.name == f"{GALAXY['namespace']}-{GALAXY['name']}-{GALAXY['version']}.tar.gz"
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
    # What the roles need on the controller is there (the server's source and locks, the
    # modules); tests, the test bed and caches are not.
    assert {"server/pyproject.toml", "server/src/pipacs/__init__.py", "server/locks/arm64.txt",
            "plugins/modules/fleet_report_probe.py", "plugins/module_utils/fleet_http.py",
            "roles/fleet/templates/fleet-report/rows.json.j2", "meta/runtime.yml", "CHANGELOG.md"} <= names
    top = {n.split("/")[0] for n in names}
    assert not top & {"tests", "molecule", "bench", ".cache", ".venv", ".git", "fleet-data"}, top
    assert not [n for n in names if n.startswith("server/tests") or "__pycache__" in n]
    # Offline: the dependencies come from the `ansible` package already installed. --force:
    # ansible-lint installs the collection it lints into ~/.ansible/collections, and without it
    # ansible-galaxy would find that copy and install nothing here.
    done = run(str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "--force", "-p",
               str(tmp / "installed"), str(tarball), cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{FQCN}:{GALAXY['version']} was installed successfully" in done.stdout, done.stdout
    assert (tmp / "installed" / "ansible_collections" / FQCN.replace(".", "/") / "MANIFEST.json").is_file()
    return tmp


def test_installed_playbooks_parse_by_full_name(installed: Path) -> None:
    # One ansible-playbook run for all of them (each run costs seconds of start-up).
    result = run(str(BIN / "ansible-playbook"), "-i", "localhost,", "--syntax-check",
                 *(f"{FQCN}.{playbook}" for playbook in PLAYBOOKS),
                 cwd=installed, ANSIBLE_COLLECTIONS_PATH=str(installed / "installed"))
    assert result.returncode == 0, result.stdout + result.stderr
    for playbook in PLAYBOOKS:
        assert f"ansible_collections/{FQCN.replace('.', '/')}/playbooks/{playbook}.yml" in result.stdout, playbook


def test_installed_module_runs_with_its_module_utils(installed: Path) -> None:
    # fleet_report_probe imports the shared HTTP client from the collection's module_utils.
    result = run(str(BIN / "ansible"), "localhost", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}",
                 "-m", f"{FQCN}.fleet_report_probe", "-a", f"url=http://127.0.0.1:9 password=x install_dir={installed}"
                 f" storage_dir={installed} echo_tool={installed}/none timeout=2", cwd=installed,
                 ANSIBLE_COLLECTIONS_PATH=str(installed / "installed"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"probe":' in result.stdout and '"http": false' in result.stdout, result.stdout


def test_installed_modules_document_their_options(installed: Path) -> None:
    """The modules' shared HTTP options come from the collection's doc fragment."""
    for module in ("fleet_content", "fleet_report_probe"):
        result = run(str(BIN / "ansible-doc"), "--json", f"{FQCN}.{module}", cwd=installed,
                     ANSIBLE_COLLECTIONS_PATH=str(installed / "installed"))
        assert result.returncode == 0, result.stdout + result.stderr
        options = json.loads(result.stdout)[f"{FQCN}.{module}"]["doc"]["options"]
        assert {"url", "ca_path", "validate_certs", "user", "password"} <= set(options), module
