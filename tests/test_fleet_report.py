"""The fleet report's pure parts: rows from probe results (unreachable Pis included), the
fixed-width table, CSV and HTML, and the file writes (roles/fleet/library/fleet_report_*.py)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from fleet_modules import load

ROOT = Path(__file__).resolve().parents[1]




writer = load("fleet_report_write")
probe_module = load("fleet_report_probe")


def probe(**values: Any) -> dict[str, Any]:
    base = {"pipacs": True, "version": "0.2.0", "http": True, "echo": True, "errors": [],
            "uptime_s": 3 * 86400 + 4 * 3600 + 60, "studies": 12, "instances": 3456,
            "used_bytes": 1536 * 1024 * 1024, "free_bytes": 20 * 1024 ** 3, "hotspot": True,
            "hotspot_clients": 7, "last_seq": 812, "last_date": "20260301T101500"}
    base.update(values)
    return {"changed": False, "probe": base}


SAMPLE = [
    {"host": "pi-b1", "groups": ["classroom", "classroom_b", "pacs"],
     "result": probe(echo=False, errors=["C-ECHO: no association"], hotspot_clients=None)},
    ["pi-a2", ["classroom", "classroom_a", "repeaters"],
     probe(pipacs=False, version=None, http=False, echo=None, studies=None, instances=None, used_bytes=None,
           free_bytes=None, hotspot=None, hotspot_clients=None, last_seq=None, last_date=None)],
    {"host": "pi-a1", "groups": ["classroom", "classroom_a", "pacs"], "result": probe()},
    {"host": "pi-c1", "groups": ["classroom", "classroom_c", "pacs"],
     "result": {"unreachable": True, "changed": False,
                "msg": "Task failed: Failed to connect to the host via ssh: <no route>"}},
    {"host": "pi-c2", "groups": ["classroom", "classroom_c"], "result": {}},
]


def test_rows_sorted_by_classroom_with_every_state() -> None:
    rows = writer.build_rows(SAMPLE)
    assert [(r["host"], r["classroom"], r["health"]) for r in rows] == [
        ("pi-a1", "classroom_a", "ok"),
        ("pi-a2", "classroom_a", "n/a"),
        ("pi-b1", "classroom_b", "DICOM down"),
        ("pi-c1", "classroom_c", "unreachable"),
        ("pi-c2", "classroom_c", "not probed"),
    ]
    a1, a2, b1 = rows[:3]
    assert (a1["version"], a1["uptime"], a1["studies"], a1["instances"]) == ("0.2.0", "3d 04h", "12", "3456")
    assert (a1["disk_used"], a1["disk_free"], a1["hotspot"]) == ("1.5 GB", "20.0 GB", "on, 7 clients")
    assert a1["last_change"] == "#812 2026-03-01 10:15:00"
    assert (a2["version"], a2["hotspot"], a2["disk_used"], a2["last_change"]) == ("n/a", "n/a", "n/a", "n/a")
    assert b1["hotspot"] == "on, n/a" and b1["error"] == "C-ECHO: no association"
    assert rows[3]["error"] == "Failed to connect to the host via ssh: <no route>"


def test_a_pacs_pi_without_pipacs_says_so() -> None:
    rows = writer.build_rows([{"host": "pi-new", "groups": ["classroom_a", "pacs"],
                               "result": probe(pipacs=False, http=False, echo=None)}])
    assert rows[0]["health"] == "not installed"


def test_table_is_fixed_width_and_ends_with_a_count() -> None:
    rows = writer.build_rows(SAMPLE)
    table = writer.render_table(rows, "2026-03-01 10:20")
    lines = table.splitlines()
    assert lines[0] == "PiPACS fleet report, 2026-03-01 10:20"
    header, rule = lines[1], lines[2]
    starts = [i for i in range(len(rule)) if rule[i] == "-" and (i == 0 or rule[i - 1] == " ")]
    titles = [t for _, t in writer.COLUMNS]
    assert len(starts) == len(titles)
    assert [header[s:].split("  ")[0] for s in starts] == titles
    for line in lines[3:8]:
        # Every value starts at its column: the character before each column start is a blank.
        assert all(line[s - 1] == " " for s in starts[1:] if s < len(line)), line
    assert "pi-c1" in lines[6] and "unreachable" in lines[6]
    assert lines[-1] == "5 Pi(s): 1 PACS healthy, 2 with a problem, 1 unreachable"
    assert "pi-b1: C-ECHO: no association" in table


def test_csv_has_numbers_and_one_row_per_pi() -> None:
    rows = writer.build_rows(SAMPLE)
    parsed = list(csv.DictReader(io.StringIO(writer.render_csv(rows))))
    assert [r["host"] for r in parsed] == ["pi-a1", "pi-a2", "pi-b1", "pi-c1", "pi-c2"]
    a1 = parsed[0]
    assert (a1["state"], a1["uptime_s"], a1["disk_used_mb"], a1["hotspot_clients"], a1["last_seq"]) == (
        "ok", str(3 * 86400 + 4 * 3600 + 60), "1536.0", "7", "812")
    assert parsed[3]["state"] == "unreachable" and parsed[3]["health"] == "unreachable"


def test_html_escapes_what_it_shows() -> None:
    rows = writer.build_rows([{"host": "pi-<x>", "groups": ["classroom_a", "pacs"],
                               "result": probe(errors=["HTTP: <script>alert(1)</script>"], http=False)}])
    page = writer.render_html(rows, "2026-03-01 10:20", writer.summary_of(rows))
    assert "<script>" not in page and "&lt;script&gt;" in page and "pi-&lt;x&gt;" in page
    assert page.startswith("<!DOCTYPE html>") and page.count("<tr class=") == 1


def test_files_written_once_then_unchanged_and_nothing_in_check_mode(tmp_path: Path) -> None:
    dest = tmp_path / "reports"
    names = {"fleet-report-2026-03-01.csv", "fleet-report-latest.csv",
             "fleet-report-2026-03-01.html", "fleet-report-latest.html"}
    dry = writer.report(SAMPLE, str(dest), "2026-03-01", "2026-03-01 10:20", check_mode=True)
    assert all(dry["files"].values()) and not dest.exists()
    first = writer.report(SAMPLE, str(dest), "2026-03-01", "2026-03-01 10:20")
    assert {Path(p).name for p, written in first["files"].items() if written} == names
    assert (dest / "fleet-report-latest.csv").read_text() == (dest / "fleet-report-2026-03-01.csv").read_text()
    second = writer.report(SAMPLE, str(dest), "2026-03-01", "2026-03-01 10:20")
    assert not any(second["files"].values())


def test_hostapd_station_count() -> None:
    output = "02:11:22:33:44:55\nflags=[AUTH][ASSOC][AUTHORIZED]\nrx_packets=10\naa:bb:cc:dd:ee:ff\nflags=[AUTH]\n"
    assert probe_module.count_stations(output) == 2
    assert probe_module.count_stations("") == 0


def test_uptime_and_dates() -> None:
    assert writer.human_uptime(59) == "0m"
    assert writer.human_uptime(3 * 3600 + 5 * 60) == "3h 05m"
    assert writer.orthanc_date("20260301T101500") == "2026-03-01 10:15:00"
    assert writer.orthanc_date("garbage") == "garbage"
