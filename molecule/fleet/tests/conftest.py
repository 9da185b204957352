"""Make the shared helpers (molecule/resources, the daemon scenario's probes) importable, and
let playbook runs from the tests open the example vault."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "molecule" / "resources"))
sys.path.insert(0, str(ROOT / "molecule" / "daemon" / "tests"))
os.environ.setdefault("ANSIBLE_VAULT_PASSWORD_FILE", str(ROOT / "inventory" / "example" / ".vault-pass.example"))
