#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Turn the probes of every Pi into the fleet table, and write it as CSV and HTML."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_report_write
short_description: Render the fleet report (text table, CSV, HTML) on the controller
description:
  - Takes, for every Pi of the play, its inventory groups and the registered result of
    fleet_report_probe (unreachable, failed or missing results are rows too), and returns a
    fixed-width table.
  - Writes fleet-report-DATE.csv and .html in O(dest_dir), and copies them to
    fleet-report-latest.csv and .html. A file is rewritten only when its content differs;
    nothing is written in check mode.
version_added: "1.0.0"
author: PiPACS contributors
options:
  hosts:
    description: >-
      One entry per Pi, {host, groups, result} or [host, groups, result]; result is the
      registered probe ({} when the Pi was never probed).
    type: list
    elements: raw
    required: true
  dest_dir:
    description: Folder for the files (created).
    type: path
    required: true
  date:
    description: Date in the file names (default today on the controller, YYYY-MM-DD).
    type: str
  generated:
    description: Time written in the files' header (default now on the controller).
    type: str
"""

EXAMPLES = r"""
- name: Write the report
  fleet_report_write:
    hosts: [{host: pi-a1, groups: [classroom, classroom_a, pacs], result: "{{ probe }}"}]
    dest_dir: /srv/fleet-data/reports
"""

RETURN = r"""
table:
  description: The fixed-width text table.
  type: str
  returned: always
rows:
  description: One dict per Pi with the displayed values (the CSV's columns).
  type: list
  returned: always
files:
  description: Path of each file to whether it was (or, in check mode, would be) written.
  type: dict
  returned: always
"""

import csv
import datetime
import html
import io
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule

COLUMNS = [
    ("host", "Host"),
    ("classroom", "Classroom"),
    ("version", "pipacs"),
    ("health", "Health"),
    ("uptime", "Uptime"),
    ("studies", "Studies"),
    ("instances", "Instances"),
    ("disk_used", "Disk used"),
    ("disk_free", "Disk free"),
    ("hotspot", "Hotspot"),
    ("last_change", "Last change"),
]
CSV_COLUMNS = ["host", "classroom", "state", "version", "health", "uptime_s", "studies", "instances",
               "disk_used_mb", "disk_free_mb", "hotspot", "hotspot_clients", "last_seq", "last_change_date"]
NA = "n/a"


def classroom_of(groups):
    """The classroom_* group a Pi is in (the first, sorted), or "-"."""
    rooms = sorted(g for g in groups or [] if g.startswith("classroom_"))
    return rooms[0] if rooms else "-"


def human_bytes(value):
    if value is None:
        return NA
    value = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return ("%d %s" if unit == "B" else "%.1f %s") % (value, unit)
        value /= 1024.0
    return NA  # not reached


def human_uptime(seconds):
    if seconds is None:
        return NA
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return "%dd %02dh" % (days, hours)
    if hours:
        return "%dh %02dm" % (hours, minutes)
    return "%dm" % minutes


def orthanc_date(text):
    """20250101T090000 -> 2025-01-01 09:00:00 (as given when it does not parse)."""
    try:
        return datetime.datetime.strptime(text, "%Y%m%dT%H%M%S").strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return text or ""


def state_of(result):
    """ok, unreachable, failed or missing (the host was never probed: it failed earlier)."""
    if not result:
        return "missing"
    if result.get("unreachable"):
        return "unreachable"
    if result.get("failed") or "probe" not in result:
        return "failed"
    return "ok"


def health_of(probe, pacs=False):
    if not probe.get("pipacs"):
        return "not installed" if pacs else NA
    http, echo = probe.get("http"), probe.get("echo")
    if http and echo:
        return "ok"
    if http and echo is None:
        return "ok (no C-ECHO tool)"
    if http:
        return "DICOM down"
    if echo:
        return "HTTP down"
    return "down"


def hotspot_of(probe):
    if probe.get("hotspot") is None:
        return NA
    if not probe["hotspot"]:
        return "off"
    clients = probe.get("hotspot_clients")
    return "on, %s client%s" % (clients, "" if clients == 1 else "s") if clients is not None else "on, n/a"


def row_of(item):
    """One Pi's displayed values and its CSV values."""
    result = item.get("result") or {}
    state = state_of(result)
    row = {"host": item["host"], "classroom": classroom_of(item.get("groups")), "state": state}
    blank = dict((key, "-") for key, _ in COLUMNS[2:])
    if state != "ok":
        msg = result.get("msg", "") if state != "missing" else "not probed (failed before)"
        msg = str(msg).replace("Task failed: ", "")
        blank["health"] = {"failed": "error", "missing": "not probed"}.get(state, state)
        row.update(blank)
        row["error"] = " ".join(str(msg).split())[:200]
        row.update(dict((k, "") for k in CSV_COLUMNS if k not in row))
        return row
    p = result["probe"]
    installed = p.get("pipacs")
    seq = p.get("last_seq")
    row.update({
        "version": p.get("version") or (NA if not installed else "?"),
        "health": health_of(p, "pacs" in (item.get("groups") or [])),
        "uptime": human_uptime(p.get("uptime_s")),
        "studies": NA if p.get("studies") is None else str(p["studies"]),
        "instances": NA if p.get("instances") is None else str(p["instances"]),
        "disk_used": human_bytes(p.get("used_bytes")) if installed else NA,
        "disk_free": human_bytes(p.get("free_bytes")) if installed else NA,
        "hotspot": hotspot_of(p),
        "last_change": NA if seq is None else (
            "#%s %s" % (seq, orthanc_date(p.get("last_date"))) if p.get("last_date") else "#%s" % seq),
        "error": "; ".join(p.get("errors") or []),
        # CSV: numbers as numbers.
        "uptime_s": "" if p.get("uptime_s") is None else p["uptime_s"],
        "disk_used_mb": "" if p.get("used_bytes") is None or not installed else round(p["used_bytes"] / 1048576.0, 1),
        "disk_free_mb": "" if p.get("free_bytes") is None or not installed else round(p["free_bytes"] / 1048576.0, 1),
        "hotspot_clients": "" if p.get("hotspot_clients") is None else p["hotspot_clients"],
        "last_seq": "" if seq is None else seq,
        "last_change_date": orthanc_date(p.get("last_date")) if p.get("last_date") else "",
    })
    return row


def as_item(entry):
    """{host, groups, result} from a dict or a [host, groups, result] list."""
    if isinstance(entry, dict):
        return entry
    host, groups, result = (list(entry) + [None, None])[:3]
    return {"host": host, "groups": groups or [], "result": result or {}}


def build_rows(hosts):
    rows = [row_of(as_item(item)) for item in hosts]
    return sorted(rows, key=lambda r: (r["classroom"], r["host"]))


def render_table(rows, generated):
    """Fixed-width text: a header, one line per Pi, then the errors and a count line."""
    header = [title for _, title in COLUMNS]
    lines = [[str(r.get(key, "")) for key, _ in COLUMNS] for r in rows]
    widths = [max([len(header[i])] + [len(line[i]) for line in lines]) for i in range(len(header))]

    def fmt(cells):
        return "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()

    out = ["PiPACS fleet report, %s" % generated, fmt(header), fmt(["-" * w for w in widths])]
    out += [fmt(line) for line in lines]
    problems = [r for r in rows if r.get("error")]
    if problems:
        out.append("")
        out += ["%s: %s" % (r["host"], r["error"]) for r in problems]
    out.append("")
    out.append(summary_of(rows))
    return "\n".join(out) + "\n"


def summary_of(rows):
    """One line: how many Pis, healthy PACS, PACS with a problem, unreachable."""
    healthy = sum(1 for r in rows if r["health"] == "ok")
    unreachable = sum(1 for r in rows if r["state"] == "unreachable")
    problems = sum(1 for r in rows if r["health"] not in ("ok", NA, "unreachable"))
    return "%d Pi(s): %d PACS healthy, %d with a problem, %d unreachable" % (
        len(rows), healthy, problems, unreachable)


def render_csv(rows):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS + ["error"], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        values = dict(r)
        values["health"] = r["health"]
        writer.writerow(values)
    return buf.getvalue()


HTML_HEAD = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>PiPACS fleet report, %(generated)s</title>
<style>
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; white-space: nowrap; }
th { background: #eee; }
td.num { text-align: right; }
tr.ok td.health { background: #d9f2d9; }
tr.bad td.health { background: #f8d0d0; }
tr.na td.health { color: #777; }
p.error { color: #a00; margin: 0.2em 0; }
</style>
</head>
<body>
<h1>PiPACS fleet report</h1>
<p>Generated %(generated)s: %(summary)s.</p>
"""


def render_html(rows, generated, summary):
    e = html.escape
    out = [HTML_HEAD % {"generated": e(generated), "summary": e(summary)}, "<table>", "<thead><tr>"]
    out += ["<th>%s</th>" % e(title) for _, title in COLUMNS]
    out.append("</tr></thead>\n<tbody>")
    numeric = {"studies", "instances", "disk_used", "disk_free"}
    for r in rows:
        kind = "ok" if r["health"] == "ok" else ("na" if r["health"] == NA else "bad")
        cells = []
        for key, _ in COLUMNS:
            classes = [c for c, on in (("num", key in numeric), ("health", key == "health")) if on]
            attr = ' class="%s"' % " ".join(classes) if classes else ""
            cells.append("<td%s>%s</td>" % (attr, e(str(r.get(key, "")))))
        out.append('<tr class="%s">%s</tr>' % (kind, "".join(cells)))
    out.append("</tbody>\n</table>")
    for r in rows:
        if r.get("error"):
            out.append('<p class="error">%s: %s</p>' % (e(r["host"]), e(r["error"])))
    out.append("</body>\n</html>\n")
    return "\n".join(out)


def write_if_changed(path, text, check_mode):
    """Write text to path atomically unless it already holds it; True when (it would be) written."""
    data = text.encode("utf-8")
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except (IOError, OSError):
        pass
    if check_mode:
        return True
    fd, tmp = tempfile.mkstemp(prefix=".fleet-report.", dir=os.path.dirname(path))
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.rename(tmp, path)
    return True


def report(hosts, dest_dir, date, generated, check_mode=False):
    rows = build_rows(hosts)
    table = render_table(rows, generated)
    summary = summary_of(rows)
    contents = {"csv": render_csv(rows), "html": render_html(rows, generated, summary)}
    if not check_mode and not os.path.isdir(dest_dir):
        os.makedirs(dest_dir, 0o755)
    files = {}
    for ext, text in sorted(contents.items()):
        for name in ("fleet-report-%s.%s" % (date, ext), "fleet-report-latest.%s" % ext):
            path = os.path.join(dest_dir, name)
            files[path] = write_if_changed(path, text, check_mode)
    return {"table": table, "rows": rows, "files": files, "summary": summary}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            hosts=dict(type="list", elements="raw", required=True),
            dest_dir=dict(type="path", required=True),
            date=dict(type="str"),
            generated=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    now = datetime.datetime.now()
    date = module.params["date"] or now.strftime("%Y-%m-%d")
    generated = module.params["generated"] or now.strftime("%Y-%m-%d %H:%M")
    try:
        result = report(module.params["hosts"], module.params["dest_dir"], date, generated, module.check_mode)
    except (IOError, OSError) as e:
        module.fail_json(msg="cannot write the report in %s: %s" % (module.params["dest_dir"], e))
    module.exit_json(changed=any(result["files"].values()), **result)


if __name__ == "__main__":
    main()
