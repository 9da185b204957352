"""Run ansible-playbook from the repository's venv, as the repository tests do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def ansible_playbook(*args: str, env: dict[str, str | None] | None = None,
                     timeout: int = 300) -> subprocess.CompletedProcess[str]:
    """ansible-playbook ARGS from the repository root with the venv first on PATH and no
    colour; `env` adds to (or, for a value None, removes from) the environment. The run must
    succeed: its output is the assertion message otherwise."""
    full = dict(os.environ, ANSIBLE_NOCOLOR="1", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    run = subprocess.run([str(BIN / "ansible-playbook"), *args], cwd=ROOT, env=full,
                         capture_output=True, text=True, timeout=timeout, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    return run
