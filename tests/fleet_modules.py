"""Load the fleet role's Ansible modules (roles/fleet/library/*.py) as plain Python modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

LIBRARY = Path(__file__).resolve().parents[1] / "roles" / "fleet" / "library"


def load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, LIBRARY / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
