"""The routed repeater's forwarding in the running kernel (roles/repeater/tasks/configure.yml,
ansible.posix.sysctl against the templated /etc/sysctl.d file), run for real in a network
namespace of its own (net.ipv4.ip_forward is per namespace): --check reports the change and
leaves the kernel alone, a run sets it without touching the file, a second run changes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_hotspot_dhcp import render_role

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TASK = "Turn on forwarding in the running kernel"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="a network namespace needs root and unshare")


def test_forwarding_is_checked_and_set_in_the_running_kernel(tmp_path: Path) -> None:
    conf = render_role(tmp_path, "repeater", {"sysctl": ("etc/sysctl.d/90-pipacs-repeater.conf.j2", "90.conf")},
                       repeater_ap_interface="wlan1", repeater_uplink_interface="wlan0")["sysctl"]
    written = conf.read_text()
    tasks = yaml.safe_load((ROOT / "roles" / "repeater" / "tasks" / "configure.yml").read_text())
    (task,) = [t for t in tasks if t["name"] == TASK]
    args = task["ansible.posix.sysctl"]
    assert args["sysctl_file"] == "/etc/sysctl.d/90-pipacs-repeater.conf"
    task = {"name": TASK, "ansible.posix.sysctl": dict(args, sysctl_file=str(conf))}
    playbook = tmp_path / "sysctl.yml"
    playbook.write_text(json.dumps([{"name": "Forwarding", "hosts": "localhost", "connection": "local",
                                     "gather_facts": False, "tasks": [task]}]))
    run = (f"{BIN / 'ansible-playbook'} -i localhost, -e ansible_python_interpreter={sys.executable} {playbook}"
           " | grep -E '^(ok|changed|fatal)'; cat /proc/sys/net/ipv4/ip_forward")
    script = f"sysctl -q -w net.ipv4.ip_forward=0 && {run.replace(str(playbook), '--check ' + str(playbook))}; {run}; {run}"
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", ANSIBLE_NOCOLOR="1")
    result = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.stdout.split("\n")[:6] == ["changed: [localhost]", "0", "changed: [localhost]", "1",
                                             "ok: [localhost]", "1"], result.stdout + result.stderr
    assert conf.read_text() == written and "net.ipv4.ip_forward = 1" in written.splitlines()
