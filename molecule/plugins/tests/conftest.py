"""Make the shared helpers (molecule/resources, the daemon scenario's probes) importable."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "daemon" / "tests"))
