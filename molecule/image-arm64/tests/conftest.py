"""Make the shared helpers (molecule/resources, the daemon scenario's probes) importable."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "molecule" / "resources"))
sys.path.insert(0, str(ROOT / "molecule" / "daemon" / "tests"))
