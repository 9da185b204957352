#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Read what the fleet report shows of one Pi: pipacs, its health, storage, the hotspot."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_report_probe
short_description: Read-only probe of a classroom Pi for the fleet report
description:
  - Runs on the Pi and changes nothing, also in check mode; HTTP through ansible.module_utils.urls
    (plugins/module_utils/fleet_http.py).
  - Asks pipacs on loopback for /system, /statistics and /changes?last, sends a DICOM C-ECHO
    with /usr/local/bin/pipacs-echo, reads the uptime, the free space of the storage folder's
    file system, and whether hostapd runs (with its client count from hostapd_cli all_sta).
  - A Pi without pipacs (a repeater) answers with pipacs=false and no error.
version_added: "1.0.0"
author: PiPACS contributors
extends_documentation_fragment:
  - pipacs.classroom.fleet_http
options:
  install_dir:
    description: pipacs' install folder (current/bin/pipacs).
    type: path
    default: /opt/pipacs
  storage_dir:
    description: pipacs' storage folder.
    type: path
    default: /var/lib/pipacs/storage
  dicom_port:
    description: DICOM port for the C-ECHO.
    type: int
    default: 4242
  dicom_aet:
    description: AE title for the C-ECHO.
    type: str
    default: PIPACS
  echo_tool:
    description: The C-ECHO tool the daemon role installs.
    type: path
    default: /usr/local/bin/pipacs-echo
  timeout:
    description: Seconds per HTTP request and for the C-ECHO.
    type: int
    default: 10
"""

EXAMPLES = r"""
- name: Probe the Pi
  fleet_report_probe:
    user: admin
    password: "{{ admin_password }}"
  register: probe
"""

RETURN = r"""
probe:
  description: >-
    pipacs (installed?), version, http (bool), echo (bool), errors (list), uptime_s, studies,
    instances, used_bytes, free_bytes, hotspot (active bool or null when not installed),
    hotspot_clients (int or null), last_seq, last_date.
  type: dict
  returned: always
"""

import os
import re

from ansible.module_utils.basic import AnsibleModule
try:  # run from a clone: the fleet role's module_utils (a link to plugins/module_utils)
    from ansible.module_utils.fleet_http import Pacs, PacsError
except ImportError:  # run from the installed collection pipacs.classroom
    from ansible_collections.pipacs.classroom.plugins.module_utils.fleet_http import Pacs, PacsError

MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$", re.I)


def folder_size(path, limit=200000):
    """Bytes under path (at most `limit` files looked at; None past that)."""
    total = count = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            count += 1
            if count > limit:
                return None
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def count_stations(text):
    """Associated clients in `hostapd_cli all_sta` output: one MAC address line each."""
    return sum(1 for line in text.splitlines() if MAC.match(line.strip()))


def probe(module):
    p = module.params
    out = {"pipacs": False, "version": None, "http": False, "echo": None, "errors": [],
           "uptime_s": None, "studies": None, "instances": None, "used_bytes": None,
           "free_bytes": None, "hotspot": None, "hotspot_clients": None, "last_seq": None,
           "last_date": None}
    try:
        with open("/proc/uptime") as f:
            out["uptime_s"] = int(float(f.read().split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    binary = os.path.join(p["install_dir"], "current", "bin", "pipacs")
    out["pipacs"] = os.path.exists(binary)
    if out["pipacs"]:
        pacs = Pacs(p["url"], p["user"], p["password"], p["timeout"], p["ca_path"], p["validate_certs"])
        try:
            system = pacs.get_json("/system")
            out["version"] = system.get("PipacsVersion") or system.get("Version")
            stats = pacs.get_json("/statistics")
            out["studies"] = stats.get("CountStudies")
            out["instances"] = stats.get("CountInstances")
            if stats.get("TotalDiskSize") is not None:
                out["used_bytes"] = int(stats["TotalDiskSize"])
            last = pacs.get_json("/changes?last")
            out["last_seq"] = last.get("Last")
            changes = last.get("Changes") or []
            if changes:
                out["last_date"] = changes[-1].get("Date")
            out["http"] = True
        except PacsError as e:
            out["errors"].append("HTTP %s" % e.code if e.code else "HTTP: %s" % e)
        except (AttributeError, ValueError) as e:
            out["errors"].append("HTTP: unexpected answer (%s)" % e)
        if out["version"] is None:
            rc, stdout, _ = module.run_command([binary, "--version"])
            if rc == 0 and stdout.strip():
                out["version"] = stdout.strip().split()[-1]
        if os.path.exists(p["echo_tool"]):
            try:
                rc, _, stderr = module.run_command(
                    [p["echo_tool"], "127.0.0.1", str(p["dicom_port"]), p["dicom_aet"],
                     "--timeout", str(p["timeout"])])
            except Exception as e:  # run_command raises on a broken interpreter line
                rc, stderr = 1, str(e)
            out["echo"] = rc == 0
            if rc != 0:
                out["errors"].append("C-ECHO: %s" % (stderr.strip().splitlines() or ["failed"])[-1])
        if out["used_bytes"] is None and os.path.isdir(p["storage_dir"]):
            out["used_bytes"] = folder_size(p["storage_dir"])
    if os.path.isdir(p["storage_dir"]):
        st = os.statvfs(p["storage_dir"])
        out["free_bytes"] = st.f_bavail * st.f_frsize
    systemctl = module.get_bin_path("systemctl")
    if systemctl and module.get_bin_path("hostapd", opt_dirs=["/usr/sbin"]):
        # hostapd.service, or the hotspot role's hostapd@<interface>.service
        rc, stdout, _ = module.run_command(
            [systemctl, "list-units", "--all", "--no-legend", "--plain", "hostapd.service",
             "hostapd@*.service"])
        units = [line.split() for line in stdout.splitlines() if line.strip()]
        out["hotspot"] = any(len(u) > 2 and u[1] == "loaded" and u[2] == "active" for u in units)
    hostapd_cli = module.get_bin_path("hostapd_cli", opt_dirs=["/usr/sbin"])
    if out["hotspot"] and hostapd_cli:
        rc, stdout, _ = module.run_command([hostapd_cli, "all_sta"])
        if rc == 0 and "Failed to connect" not in stdout:
            out["hotspot_clients"] = count_stations(stdout)
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", default="http://127.0.0.1:8042"),
            ca_path=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
            user=dict(type="str", default=""),
            password=dict(type="str", default="", no_log=True),
            install_dir=dict(type="path", default="/opt/pipacs"),
            storage_dir=dict(type="path", default="/var/lib/pipacs/storage"),
            dicom_port=dict(type="int", default=4242),
            dicom_aet=dict(type="str", default="PIPACS"),
            echo_tool=dict(type="path", default="/usr/local/bin/pipacs-echo"),
            timeout=dict(type="int", default=10),
        ),
        supports_check_mode=True,
    )
    module.exit_json(changed=False, probe=probe(module))


if __name__ == "__main__":
    main()
