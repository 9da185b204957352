"""playbooks/config.yml with a Pi that does not answer: it is left out before the batches are
made, so it can neither be the canary nor stop the rollout, and it is named at the end.

Runs the real playbook on this machine: three "Pis" reached through the local connection and
one that refuses SSH (a closed port), listed first so that it would be the canary. A tag that
no task has keeps the roles from changing anything; what runs is what config.yml tags
`always` (the reachability play, the report) and each batch's fact gathering and argument
checks, which is enough to see which Pis the rollout reached. The molecule `site` scenario
runs it for real on a simulated Pi (tests/test_site.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

INVENTORY = """\
all:
  children:
    pacs:
      hosts:
        pi-offline: {ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: 9}
        pi-1: {ansible_connection: local, ansible_python_interpreter: %(python)s}
        pi-2: {ansible_connection: local, ansible_python_interpreter: %(python)s}
        pi-3: {ansible_connection: local, ansible_python_interpreter: %(python)s}
"""


def test_an_offline_canary_does_not_stop_the_rollout(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(INVENTORY % {"python": sys.executable})
    env = dict(
        os.environ,
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        ANSIBLE_CACHE_PLUGIN="memory",
        ANSIBLE_HOST_KEY_CHECKING="false",
        ANSIBLE_NOCOLOR="1",
    )
    cmd = [str(BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/config.yml", "--tags", "no_task_has_it"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 4, output  # some host unreachable, none failed
    recap = dict(re.findall(r"^(pi-\S+)\s*:\s*(ok=.*)$", output, re.MULTILINE))
    assert "unreachable=1" in recap["pi-offline"], output
    # Every Pi that answers went through its own batch of the rollout (one Pi, then 25 %).
    assert output.count("PLAY [Configuration of the PACS servers, rolling]") == 3, output
    for pi in ("pi-1", "pi-2", "pi-3"):
        assert "failed=0" in recap[pi], output
        assert int(re.search(r"ok=(\d+)", recap[pi]).group(1)) >= 4, output
    assert "Not configured, they did not answer: pi-offline." in output
