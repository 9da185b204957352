"""The fleet report (roles/fleet/tasks/report.yml and templates/fleet-report/): rows from probe
results (unreachable, failed and never-probed Pis included), the fixed-width table, CSV and HTML
written on the controller, nothing in check mode, unchanged files left alone; and the probe's
station count (plugins/modules/fleet_report_probe.py).

The expected files in tests/data/fleet_report/ are what the earlier hand-written module
(fleet_report_write) produced for the same probes: the templates give the same bytes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fleet_modules import load

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "fleet_report"
BIN = Path(sys.executable).parent
COLUMNS = ["Host", "Classroom", "pipacs", "Health", "Uptime", "Studies", "Instances", "Disk used", "Disk free",
           "Hotspot", "Last change"]
NAMES = {"fleet-report-2026-03-01.csv", "fleet-report-latest.csv",
         "fleet-report-2026-03-01.html", "fleet-report-latest.html"}

probe_module = load("fleet_report_probe")

# A check-mode run on an empty folder, then two plays in one run (Ansible starts once): the
# report, and the same report again. The probes come from hosts.json (the play's own probe of
# localhost, against a closed port, is replaced by them).
PLAY = """
- name: Report{again}
  hosts: classroom
  gather_facts: false
  tasks:
    - {{name: Report, ansible.builtin.include_role: {{name: fleet, tasks_from: report}}}}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "check.yml").write_text(PLAY.format(again=""))
    (tmp / "report.yml").write_text(PLAY.format(again="") + PLAY.format(again=" again"))
    (tmp / "hosts.yml").write_text(
        f"classroom:\n  hosts:\n    pi-report:\n      ansible_connection: local\n"
        f"      ansible_python_interpreter: {sys.executable}\n")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", ANSIBLE_GATHERING="explicit",
               ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
    fixed = {"__fleet_report_generated": "2026-03-01 10:20", "__fleet_report_date": "2026-03-01",
             "fleet_report_dir": str(tmp / "reports"), "fleet_http_port": 9, "fleet_http_password": "x",
             "fleet_report_timeout": 2, "fleet_report_echo_tool": str(tmp / "no-echo")}
    messages, stats = [], []
    for playbook, *check in (("check.yml", "--check"), ("report.yml",)):
        result = subprocess.run(
            [str(BIN / "ansible-playbook"), "-i", str(tmp / "hosts.yml"), str(tmp / playbook), *check,
             "-e", f"@{DATA / 'hosts.json'}", "-e", json.dumps(fixed)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr
        if check:
            assert not (tmp / "reports").exists()
        # The JSON document, then what other callbacks print (ansible.cfg's timer).
        out, _ = json.JSONDecoder().raw_decode(result.stdout[result.stdout.index("{"):])
        stats.append(out["stats"]["pi-report"])
        for play in out["plays"]:
            named = {t["task"]["name"]: t["hosts"]["pi-report"] for t in play["tasks"] if "pi-report" in t["hosts"]}
            messages.append({"table": named["fleet : Print the fleet table"]["msg"],
                             "files": named["fleet : Name the report files"]["msg"]})
    return {"dir": tmp / "reports", "plays": messages, "stats": stats}


def test_files_are_what_the_earlier_module_wrote(runs: dict[str, Any]) -> None:
    assert {p.name for p in runs["dir"].iterdir()} == NAMES
    for ext in ("csv", "html"):
        expected = (DATA / f"expected.{ext}").read_bytes()
        assert (runs["dir"] / f"fleet-report-2026-03-01.{ext}").read_bytes() == expected
        assert (runs["dir"] / f"fleet-report-latest.{ext}").read_bytes() == expected
        assert oct((runs["dir"] / f"fleet-report-latest.{ext}").stat().st_mode & 0o777) == "0o644"


def test_printed_table_is_what_the_earlier_module_printed(runs: dict[str, Any]) -> None:
    assert runs["plays"][1]["table"] == (DATA / "expected.txt").read_text().splitlines()


def test_table_is_fixed_width_and_ends_with_a_count(runs: dict[str, Any]) -> None:
    lines = runs["plays"][1]["table"]
    assert lines[0] == "PiPACS fleet report, 2026-03-01 10:20"
    header, rule = lines[1], lines[2]
    starts = [i for i in range(len(rule)) if rule[i] == "-" and (i == 0 or rule[i - 1] == " ")]
    assert len(starts) == len(COLUMNS)
    assert [header[s:].split("  ")[0] for s in starts] == COLUMNS
    rows = lines[3:lines.index("")]
    assert [r.split()[0] for r in rows] == ["pi-e1", "pi-a1", "pi-a2", "pi-b1", "pi-c1", "pi-c2", "pi-d1", "pi-d2",
                                            "pi-d3", "pi-d4"]
    for line in rows:
        # Every value starts at its column: the character before each column start is a blank.
        assert all(line[s - 1] == " " for s in starts[1:] if s < len(line)), line
    assert "unreachable" in rows[4] and "not probed" in rows[5] and "error" in rows[0]
    assert lines[-1] == "10 Pi(s): 1 PACS healthy, 7 with a problem, 1 unreachable"
    assert "pi-b1: C-ECHO: no association" in lines


def test_csv_has_numbers_and_one_row_per_pi(runs: dict[str, Any]) -> None:
    import csv

    with (runs["dir"] / "fleet-report-latest.csv").open(newline="") as f:
        parsed = list(csv.DictReader(f))
    assert [r["host"] for r in parsed] == ["pi-e1", "pi-a1", "pi-a2", "pi-b1", "pi-c1", "pi-c2", "pi-d1", "pi-d2",
                                           "pi-d3", "pi-d4"]
    a1 = parsed[1]
    assert (a1["state"], a1["uptime_s"], a1["disk_used_mb"], a1["hotspot_clients"], a1["last_seq"]) == (
        "ok", str(3 * 86400 + 4 * 3600 + 60), "1536.0", "7", "812")
    assert parsed[4]["state"] == "unreachable" and parsed[4]["health"] == "unreachable"
    # A comma, quotes and a line break survive the round trip; long messages are cut at 200.
    assert parsed[6]["error"] == 'HTTP: "refused", try again; line\nbreak'
    assert parsed[0]["error"].startswith('Module failed: bad, "quoted" & <odd>x') and len(parsed[0]["error"]) == 200


def test_html_escapes_what_it_shows(runs: dict[str, Any]) -> None:
    page = (runs["dir"] / "fleet-report-latest.html").read_text()
    assert "<odd>" not in page and "&lt;odd&gt;" in page and "&lt;b&gt;&amp;&#x27;x&#x27;&lt;/b&gt;" in page
    assert page.startswith("<!DOCTYPE html>") and page.count("<tr class=") == 10


def test_check_mode_writes_nothing_then_files_once_then_unchanged(runs: dict[str, Any]) -> None:
    check, first, again = (play["files"] for play in runs["plays"])
    assert check.startswith("Check mode, nothing written.") and check.count("(would be written)") == 4
    assert first.count("(written)") == 4 and again.count("(unchanged)") == 4
    # A report changes nothing: every task reports ok.
    assert all(stats["changed"] == 0 and stats["failures"] == 0 for stats in runs["stats"])


def test_hostapd_station_count() -> None:
    output = "02:11:22:33:44:55\nflags=[AUTH][ASSOC][AUTHORIZED]\nrx_packets=10\naa:bb:cc:dd:ee:ff\nflags=[AUTH]\n"
    assert probe_module.count_stations(output) == 2
    assert probe_module.count_stations("") == 0
