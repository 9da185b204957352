"""Every playbook parses, and the whole tree passes yamllint and ansible-lint (production profile)."""

from __future__ import annotations

import os
import re
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


# One wrong-typed variable per fleet entry point. Ansible checks a role's argument spec only
# when tasks_from names the entry point itself ("backup", not "backup.yml").
SPEC_CASES = [
    ("backup.yml", "backup", "fleet_backup_keep=many"),
    ("restore.yml", "restore", "fleet_restore_force=perhaps"),
    ("content.yml", "content", "fleet_content_min_free_mb=lots"),
    ("report.yml", "report", "fleet_report_timeout=soon"),
    ("upgrade.yml", "upgrade_precheck", "fleet_upgrade_min_free_mb=plenty"),
]


@pytest.mark.parametrize(("playbook", "entry", "wrong"), SPEC_CASES, ids=[c[0] for c in SPEC_CASES])
def test_argument_specs_stop_a_wrong_type_before_any_change(tmp_path: Path, playbook: str, entry: str,
                                                             wrong: str) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    classroom:\n      hosts:\n        pi-spec:\n    pacs:\n      hosts:\n        pi-spec:\n"
        f"  vars:\n    ansible_connection: local\n    ansible_python_interpreter: {sys.executable}\n")
    env = dict(ENV, ANSIBLE_GATHERING="explicit")
    result = subprocess.run(
        [tool("ansible-playbook"), "-i", str(inventory), f"playbooks/{playbook}", "-e", wrong,
         "-e", f"fleet_content_library_dir={tmp_path}", "-e", f"fleet_controller_dir={tmp_path}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    # The first failed task is the spec check, naming the variable; nothing ran before it
    # that changed anything.
    failed_task = out[: out.index("fatal:")].rsplit("TASK [", 1)[1]
    assert failed_task.startswith(f"fleet : Validating arguments against arg spec '{entry}'"), out
    assert wrong.split("=")[0] in out[out.index("fatal:"):], out
    assert "changed=0" in out and "failed=1" in out, out


# The entry points other roles and playbooks call with tasks_from have their own spec: one
# wrong-typed variable each, one Pi each, all in one run.
ROLE_ENTRY_CASES = [("server", "stage", "server_http_port=soon"), ("server", "config", "server_keep_releases=few"),
                    ("daemon", "health", "daemon_health_timeout=long")]


def test_role_entry_points_check_their_arguments(tmp_path: Path) -> None:
    hosts = {f"pi-{role}-{entry}": (role, entry, wrong) for role, entry, wrong in ROLE_ENTRY_CASES}
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n" + "".join(f"    {h}:\n" for h in hosts)
        + f"  vars:\n    ansible_connection: local\n    ansible_python_interpreter: {sys.executable}\n")
    tasks = "".join(
        f"    - name: {entry} of {role}\n      ansible.builtin.include_role: {{name: {role}, tasks_from: {entry}}}\n"
        f"      vars: {{{wrong.split('=')[0]}: {wrong.split('=')[1]}}}\n      when: inventory_hostname == '{host}'\n"
        for host, (role, entry, wrong) in hosts.items())
    (tmp_path / "play.yml").write_text(f"- name: Entry points\n  hosts: all\n  gather_facts: false\n  tasks:\n{tasks}")
    result = subprocess.run(
        [tool("ansible-playbook"), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")],
        cwd=ROOT, env=dict(ENV, ANSIBLE_GATHERING="explicit"), capture_output=True, text=True, timeout=300,
        check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    for host, (role, entry, wrong) in hosts.items():
        # The host's only task that ran is its spec check, and it names the variable.
        failed = re.search(rf"^TASK \[{role} : Validating arguments against arg spec '{entry}'[^\n]*\n"
                           rf"(?:[^\n]*\n)*?fatal: \[{host}\]: FAILED![^\n]*{wrong.split('=')[0]}", out, re.MULTILINE)
        assert failed, (host, out)
    assert out.count("changed=0") == len(hosts) and out.count("failed=1") == len(hosts), out


def test_no_tasks_from_names_a_file() -> None:
    # "tasks_from: x.yml" finds the file but skips the argument spec of entry point "x".
    import re

    files = [*ROOT.glob("playbooks/*.yml"), *ROOT.glob("roles/*/tasks/*.yml"), *ROOT.glob("molecule/*/*.yml")]
    named = [f"{f.relative_to(ROOT)}: {m.group(0).strip()}" for f in files
             for m in re.finditer(r"^\s*tasks_from:\s*\S+\.ya?ml\s*$", f.read_text(), re.MULTILINE)]
    assert named == []


def test_colliding_ae_titles_stop_server_yml_before_any_change(tmp_path: Path) -> None:
    # Host names cut to 16 characters, and the same title set twice by hand (a trailing space
    # does not make it different).
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    pacs:\n      hosts:\n        classroom-a-pacs-01:\n        classroom-a-pacs-02:\n"
        "        pi-b1:\n          server_dicom_aet: PACS B\n        pi-b2:\n          server_dicom_aet: 'PACS B '\n"
        "        pi-c1:\n          server_dicom_aet: PACS_C\n"
        f"  vars:\n    ansible_connection: local\n    ansible_python_interpreter: {sys.executable}\n")
    result = subprocess.run(
        [tool("ansible-playbook"), "-i", str(inventory), "playbooks/server.yml"],
        cwd=ROOT, env=dict(ENV, ANSIBLE_GATHERING="explicit"), capture_output=True, text=True, timeout=300,
        check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert ("classroom-a-pacs-01 = CLASSROOM-A-PACS, classroom-a-pacs-02 = CLASSROOM-A-PACS, "
            "pi-b1 = PACS B, pi-b2 = PACS B.") in out, out
    assert "pi-c1 =" not in out
    assert "TASK [storage" not in out and "changed=1" not in out, out
