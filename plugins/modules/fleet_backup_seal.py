#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Seal a pulled backup: SHA256SUMS (reusing the sums of files shared with the previous
backup), manifest.json, then the folder renamed into place."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_backup_seal
short_description: Checksum a pulled pipacs backup, write its manifest and move it into place
description:
  - Runs where the backup was written (the controller, or the Pi with a backup disk), Python
    standard library only.
  - Lists every file under C(storage), C(index) and C(extra) of O(path) and writes
    C(SHA256SUMS) in sha256sum's format, paths relative to the backup. A file that is the same
    file (same inode) as in O(previous) was linked there by rsync's --link-dest, so its sum is
    taken from the previous SHA256SUMS, so only new files are read.
  - Writes C(manifest.json) (O(manifest) plus the file count, the size and what this backup
    added), then renames O(path) to O(dest). restore.yml checks both files.
version_added: "1.1.0"
author: PiPACS contributors
options:
  path:
    description: The folder rsync filled (NAME.partial).
    type: path
    required: true
  dest:
    description: The final folder of the backup (must not exist).
    type: path
    required: true
  previous:
    description: The previous complete backup of the same Pi ("" for none).
    type: path
    default: ""
  manifest:
    description: What the manifest says besides the figures computed here (counts, release, dates).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Seal the backup
  fleet_backup_seal:
    path: /srv/backups/pi-a1/pi-a1-20261205T080000Z.partial
    dest: /srv/backups/pi-a1/pi-a1-20261205T080000Z
    previous: /srv/backups/pi-a1/pi-a1-20261204T080000Z
    manifest: {Host: pi-a1}
"""

RETURN = r"""
dest:
  description: The backup's folder.
  type: str
  returned: always
files:
  description: Files in the backup (storage, index, extra).
  type: int
  returned: always
bytes:
  description: Their size.
  type: int
  returned: always
linked:
  description: Files shared with the previous backup (hard links).
  type: int
  returned: always
new_bytes:
  description: Bytes this backup added (files not shared with the previous one).
  type: int
  returned: always
"""

import hashlib
import json
import os

from ansible.module_utils.basic import AnsibleModule

PARTS = ("storage", "index", "extra")


def files_of(root):
    """Relative paths of the files under root's PARTS, sorted as sha256sum's input was."""
    out = []
    for part in PARTS:
        for folder, dirs, names in os.walk(os.path.join(root, part)):
            dirs.sort()
            for name in names:
                out.append(os.path.relpath(os.path.join(folder, name), root))
    return sorted(out)


def read_sums(folder):
    """path -> sum from a backup's SHA256SUMS ({} when there is none)."""
    sums = {}
    try:
        with open(os.path.join(folder, "SHA256SUMS")) as f:
            for line in f:
                digest, _, rel = line.rstrip("\n").partition("  ")
                if rel:
                    sums[rel] = digest
    except (IOError, OSError):
        pass
    return sums


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def seal(path, dest, previous, manifest):
    """Write SHA256SUMS and manifest.json into path, rename it to dest; the figures."""
    known = read_sums(previous) if previous else {}
    lines = []
    figures = {"files": 0, "bytes": 0, "linked": 0, "new_bytes": 0}
    for rel in files_of(path):
        st = os.stat(os.path.join(path, rel))
        digest = None
        if rel in known:
            try:
                old = os.stat(os.path.join(previous, rel))
                if (old.st_ino, old.st_dev) == (st.st_ino, st.st_dev):
                    digest = known[rel]
            except OSError:
                pass
        if digest is None:
            digest = sha256(os.path.join(path, rel))
            figures["new_bytes"] += st.st_size
        else:
            figures["linked"] += 1
        figures["files"] += 1
        figures["bytes"] += st.st_size
        lines.append("%s  %s\n" % (digest, rel))
    with open(os.path.join(path, "SHA256SUMS"), "w") as f:
        f.writelines(lines)
    document = dict(manifest)
    document.update({
        "Files": figures["files"],
        "DataMB": -(-figures["bytes"] // (1024 * 1024)),
        "NewBytes": figures["new_bytes"],
        "Previous": os.path.basename(previous) if previous else "",
    })
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(document, f, indent=2, sort_keys=True)
        f.write("\n")
    os.rename(path, dest)
    figures["dest"] = dest
    return figures


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            dest=dict(type="path", required=True),
            previous=dict(type="path", default=""),
            manifest=dict(type="dict", default={}),
        ),
        supports_check_mode=False,
    )
    p = module.params
    if not os.path.isdir(p["path"]):
        module.fail_json(msg="%s is not a folder: the pull did not complete" % p["path"])
    if os.path.exists(p["dest"]):
        module.fail_json(msg="%s already exists: a backup is never overwritten" % p["dest"])
    try:
        figures = seal(p["path"], p["dest"], p["previous"] or "", p["manifest"])
    except (IOError, OSError) as e:
        module.fail_json(msg="sealing the backup in %s failed: %s" % (p["path"], e))
    module.exit_json(changed=True, **figures)


if __name__ == "__main__":
    main()
