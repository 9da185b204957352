"""Helpers shared by the scenarios' testinfra tests: run a playbook from the controller."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass
class PlaybookRun:
    """What a person sees after ansible-playbook: its exit code, output and recap."""

    returncode: int
    output: str

    def recap(self) -> dict[str, int]:
        """Counts summed over every host of the PLAY RECAP."""
        totals = {"ok": 0, "changed": 0, "unreachable": 0, "failed": 0}
        for match in RECAP.finditer(self.output):
            for key in totals:
                totals[key] += int(match.group(key))
        return totals


def assert_no_changes(run: PlaybookRun) -> None:
    """A run that succeeded, failed nowhere and changed nothing (a re-run or `--check`)."""
    assert run.returncode == 0, run.output
    recap = run.recap()
    assert recap["failed"] == 0, run.output
    assert recap["changed"] == 0, run.output


def scenario_dir() -> Path:
    return Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])


def run_playbook(playbook: str | Path, *args: str, timeout: int = 600) -> PlaybookRun:
    """Run a playbook against the scenario's instances with Molecule's inventory."""
    cmd = [
        "ansible-playbook",
        "--inventory",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(scenario_dir() / playbook),
        *args,
    ]
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run(
        cmd,
        cwd=os.environ.get("MOLECULE_PROJECT_DIRECTORY"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return PlaybookRun(proc.returncode, proc.stdout)
