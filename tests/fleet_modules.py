"""Load the fleet role's Ansible modules (roles/fleet/library/*.py) as plain Python modules.

Their shared code (roles/fleet/module_utils/*.py) is registered as ansible.module_utils.<name>,
as Ansible does when it ships a module with the role's module_utils.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

ROLE = Path(__file__).resolve().parents[1] / "roles" / "fleet"
LIBRARY = ROLE / "library"


def _exec(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load(name: str) -> Any:
    for util in sorted((ROLE / "module_utils").glob("*.py")):
        if f"ansible.module_utils.{util.stem}" not in sys.modules:
            _exec(f"ansible.module_utils.{util.stem}", util)
    return _exec(name, LIBRARY / f"{name}.py")
