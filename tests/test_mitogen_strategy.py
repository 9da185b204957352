"""The Mitogen strategy, ansible.cfg's default (mitogen_linear, plugins/strategy/).

Runs a small play on the controller with the example inventory's variables: under Mitogen
every module of a host runs in one kept Python (the parent of two `command` tasks is the same
process), under the plain linear strategy each module starts its own; and a task delegated to
the controller with `become: false` runs without sudo, although group_vars/all asks for
become (inventory/example/host_vars/localhost.yml, which Mitogen needs), and an inventory
without it is stopped before anything runs. The full playbooks under Mitogen run in
bench/fleet.py (make fleet-smoke in CI, make bench-fleet for 30 Pis).
"""

from __future__ import annotations

import getpass
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from playbook_run import ROOT, ansible_playbook

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ansible_mitogen") is None,
    reason="mitogen is not installed in this venv (requirements.txt)",
)

PLAY = textwrap.dedent("""\
    - name: Two modules on the controller, then one delegated to it without become
      hosts: localhost
      gather_facts: false
      tasks:
        - name: Parent process of the first module
          ansible.builtin.shell: echo "$PPID"
          register: first
          changed_when: false
        - name: Parent process of the second module
          ansible.builtin.shell: echo "$PPID"
          register: second
          changed_when: false
        - name: Who runs a task that asks for no become
          ansible.builtin.command: id -un
          become: false
          register: user
          changed_when: false
        - name: Tell the test
          ansible.builtin.copy:
            dest: "{{ out }}"
            content: "{{ {'first': first.stdout, 'second': second.stdout,
                          'user': user.stdout} | to_json }}"
            mode: "0644"
          changed_when: false
""")


def run_play(tmp_path: Path, strategy: str) -> dict[str, str]:
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    out = tmp_path / f"{strategy}.json"
    # The example inventory: group_vars/all sets ansible_become true for every host. A become
    # that is attempted anyway fails at once (a become program that does not exist), also on
    # a controller where sudo would have let it pass unseen.
    ansible_playbook("-i", str(ROOT / "inventory" / "example" / "hosts.yml"), str(play),
                     "--vault-password-file", str(ROOT / "inventory" / "example" / ".vault-pass.example"),
                     "-e", f"out={out}", "-e", "ansible_become_exe=/nonexistent/sudo",
                     env={"ANSIBLE_STRATEGY": strategy})
    result: dict[str, str] = json.loads(out.read_text())
    return result


def test_mitogen_keeps_one_python_per_host(tmp_path: Path) -> None:
    mitogen = run_play(tmp_path, "mitogen_linear")
    assert mitogen["first"] == mitogen["second"], mitogen
    plain = run_play(tmp_path, "linear")
    assert plain["first"] != plain["second"], plain


def test_no_sudo_on_the_controller_under_mitogen(tmp_path: Path) -> None:
    assert run_play(tmp_path, "mitogen_linear")["user"] == getpass.getuser()


def test_missing_mitogen_is_named(tmp_path: Path) -> None:
    """A controller without Mitogen gets the way out, not a traceback."""
    play = tmp_path / "noop.yml"
    play.write_text("- hosts: localhost\n  gather_facts: false\n  tasks: []\n")
    hide = tmp_path / "hide"
    (hide / "ansible_mitogen").mkdir(parents=True)
    (hide / "ansible_mitogen" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    env = dict(os.environ, ANSIBLE_STRATEGY="mitogen_linear", ANSIBLE_NOCOLOR="1",
               PYTHONPATH=str(hide))
    run = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), str(play)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    assert run.returncode != 0
    assert "pip install -r requirements.txt" in run.stdout + run.stderr, run.stdout + run.stderr


BECOME_PLAY = textwrap.dedent("""\
    - name: The platform role's controller check, on an inventory that asks for become
      hosts: all
      gather_facts: false
      tasks:
        - name: Check how tasks run on the controller
          ansible.builtin.import_role:
            name: platform
            tasks_from: controller
        - name: Reached only when the check passes
          ansible.builtin.debug:
            msg: check passed
""")


@pytest.mark.parametrize("strategy", ["mitogen_linear", "linear"])
def test_become_on_the_controller_is_stopped_under_mitogen(tmp_path: Path, strategy: str) -> None:
    """A school's inventory with group_vars/all's become and no host_vars/localhost.yml: under
    Mitogen the run stops at once, naming the file to copy; the linear strategy needs none."""
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text("ansible_become: true\n")
    (tmp_path / "hosts.yml").write_text(
        "all:\n  hosts:\n    pi-a:\n      ansible_connection: local\n")
    play = tmp_path / "play.yml"
    play.write_text(BECOME_PLAY)
    env = dict(os.environ, ANSIBLE_STRATEGY=strategy, ANSIBLE_NOCOLOR="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    run = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"),
                          "-i", str(tmp_path / "hosts.yml"), str(play)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                         check=False)
    out = run.stdout + run.stderr
    if strategy == "linear":
        assert run.returncode == 0, out
        assert "check passed" in out
    else:
        assert run.returncode != 0, out
        assert "host_vars/localhost.yml" in out and "check passed" not in out, out
