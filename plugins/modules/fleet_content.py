#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Compare a teaching library with what pipacs holds on this Pi; send, protect and withdraw."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_content
short_description: Keep a Pi's pipacs in step with a teaching library (through its REST API)
description:
  - Runs on the Pi and talks to pipacs on loopback (ansible.module_utils.urls, through plugins/module_utils/fleet_http.py).
  - O(state=status) is read-only (also in check mode) and tells which instances of the library
    pipacs lacks (compared by their public IDs, found per StudyInstanceUID with /tools/find),
    which library patients are not protected from recycling, and which studies the library
    withdrew since they were sent.
  - O(state=synced) posts the missing instances from per-study tars in O(staging_dir) (members
    named by instance ID) to /instances, protects the library patients, removes withdrawn
    studies when O(remove_withdrawn) is true, and keeps O(record) (a JSON file of the studies
    this module sent, the only ones it will ever remove).
version_added: "1.0.0"
author: PiPACS contributors
extends_documentation_fragment:
  - pipacs.classroom.fleet_http
options:
  manifest:
    description: The manifest of fleet_content_library (list of studies).
    type: list
    elements: dict
    required: true
  record:
    description: JSON file recording the studies the library sent to this Pi.
    type: path
    required: true
  state:
    description: status (read-only) or synced.
    type: str
    choices: [status, synced]
    default: status
  staging_dir:
    description: Folder holding <study ID>.tar for the studies to send (state=synced).
    type: path
  protect:
    description: Protect the library's patients from recycling.
    type: bool
    default: true
  remove_withdrawn:
    description: Delete the studies this module sent that are no longer in the library.
    type: bool
    default: false
  storage_dir:
    description: pipacs' storage folder, for the free-space check.
    type: path
  min_free_mb:
    description: Space to keep free beyond what staging and storing take.
    type: int
    default: 256
  timeout:
    description: Seconds per HTTP request.
    type: int
    default: 120
"""

EXAMPLES = r"""
- name: What does this Pi lack?
  fleet_content:
    manifest: "{{ library.manifest }}"
    record: /var/lib/pipacs/fleet-content.json
    user: admin
    password: "{{ admin_password }}"
  register: status
"""

RETURN = r"""
counts:
  description: >-
    library_studies, library_instances, studies_present, studies_to_send, instances_to_send,
    bytes_to_send, patients_to_protect, withdrawn, withdrawn_present; after state=synced also
    studies_sent, instances_sent, bytes_sent, patients_protected, studies_removed and
    instances_refused (files pipacs answered 400 or 403 to: warned, not fatal).
  type: dict
  returned: always
send:
  description: Study ID to the instance IDs pipacs lacks.
  type: dict
  returned: always
space:
  description: ok (bool), free_mb, needed_mb and a message when staging or storing would not fit.
  type: dict
  returned: always
withdrawn:
  description: Studies in the record that the library no longer has (id, uid, description, present).
  type: list
  returned: always
"""

import datetime
import json
import os
import tarfile
import tempfile

from ansible.module_utils.basic import AnsibleModule
try:  # run from a clone: the fleet role's module_utils (a link to plugins/module_utils)
    from ansible.module_utils.fleet_http import Pacs, PacsError
except ImportError:  # run from the installed collection pipacs.classroom
    from ansible_collections.pipacs.classroom.plugins.module_utils.fleet_http import Pacs, PacsError

RECORD_FORMAT = 1


class LibraryPacs(Pacs):
    """The REST calls of the teaching library's comparison, on top of the shared client."""

    def instances_of(self, study_uid):
        """Public IDs of the instances pipacs holds for a StudyInstanceUID (any patient)."""
        body = json.dumps({"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}).encode()
        return set(self.call("POST", "/tools/find", body) or [])

    def protected(self, patient):
        answer = self.call("GET", "/patients/%s/protected" % patient, ok_missing=True)
        return None if answer is None else str(answer).strip() == "1"


def load_record(path):
    """The record of what the library sent, or an empty one."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (IOError, OSError):
        data = {}
    except ValueError:
        raise PacsError("%s is not valid JSON: fix or remove it (it lists the studies the "
                        "library sent, which are the only ones withdrawal may remove)" % path) from None
    data.setdefault("studies", {})
    data.setdefault("protected", [])
    return data


def save_record(path, record):
    record["format"] = RECORD_FORMAT
    record["updated"] = datetime.datetime.now().replace(microsecond=0).isoformat()
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".fleet-content.", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o640)
        os.rename(tmp, path)
    except Exception:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _existing(path):
    path = os.path.abspath(path or "/")
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def space_check(staging_dir, storage_dir, send_bytes, min_free_mb):
    """Whether staging (a tar per study) and storing the sent bytes fit, with min_free_mb left."""
    mb = 1024 * 1024
    needs = {}
    for path in (staging_dir, storage_dir):
        st = os.statvfs(_existing(path))
        dev = os.stat(_existing(path)).st_dev
        entry = needs.setdefault(dev, {"path": path, "free": st.f_bavail * st.f_frsize, "need": 0})
        entry["need"] += send_bytes
    out = {"ok": True, "free_mb": min(e["free"] for e in needs.values()) // mb, "needed_mb": 0}
    for entry in needs.values():
        need = entry["need"] + min_free_mb * mb if send_bytes else 0
        out["needed_mb"] = max(out["needed_mb"], -(-need // mb))
        if need > entry["free"]:
            out["ok"] = False
            out["message"] = ("%s has %d MB free; staging and storing %d MB need %d MB (with "
                              "fleet_content_min_free_mb %d)" % (entry["path"], entry["free"] // mb,
                                                                -(-send_bytes // mb), -(-need // mb),
                                                                min_free_mb))
    return out


def compare(pacs, manifest, record, protect):
    """What this Pi lacks: the status answer (read-only)."""
    library = {s["id"]: s for s in manifest}
    send = {}
    present = 0
    held_studies = set()
    for study in manifest:
        held = pacs.instances_of(study["uid"])
        missing = sorted(i for i in study["instances"] if i not in held)
        if missing:
            send[study["id"]] = missing
        else:
            present += 1
        if len(missing) < len(study["instances"]):
            held_studies.add(study["id"])
    to_protect = []
    if protect:
        for patient in sorted({s["patient"] for s in manifest}):
            state = pacs.protected(patient)
            # A patient not stored yet will be, by this run: protect it then.
            if not state:
                to_protect.append(patient)
    withdrawn = []
    for sid, entry in sorted(record["studies"].items()):
        if sid in library:
            continue
        here = pacs.call("GET", "/studies/%s" % sid, ok_missing=True) is not None
        withdrawn.append({"id": sid, "uid": entry.get("uid", ""),
                          "description": entry.get("description", ""), "present": here})
    counts = {
        "library_studies": len(manifest),
        "library_instances": sum(len(s["instances"]) for s in manifest),
        "studies_present": present,
        "studies_to_send": len(send),
        "instances_to_send": sum(len(v) for v in send.values()),
        "bytes_to_send": sum(library[s]["instances"][i] for s, ids in send.items() for i in ids),
        "patients_to_protect": len(to_protect),
        "withdrawn": len(withdrawn),
        "withdrawn_present": sum(1 for w in withdrawn if w["present"]),
    }
    return {"counts": counts, "send": send, "protect": to_protect, "withdrawn": withdrawn}


def sync(pacs, manifest, record, status, staging_dir, remove_withdrawn, record_path):
    """Send, protect, withdraw; the record is saved whatever happens after the first send."""
    library = {s["id"]: s for s in manifest}
    done = {"studies_sent": 0, "instances_sent": 0, "bytes_sent": 0, "patients_protected": 0,
            "studies_removed": 0, "instances_refused": 0}
    warnings = []
    dirty = False
    today = datetime.date.today().isoformat()
    try:
        for sid, missing in sorted(status["send"].items()):
            study = library[sid]
            tar_path = os.path.join(staging_dir or "", sid + ".tar")
            if not os.path.isfile(tar_path):
                raise PacsError("%s is missing: the study %s was not staged" % (tar_path, study["uid"]))
            wanted = set(missing)
            stored_before = done["instances_sent"]
            with tarfile.open(tar_path) as tar:
                for member in tar:
                    if member.name not in wanted or not member.isfile():
                        continue
                    data = tar.extractfile(member).read()
                    wanted.discard(member.name)
                    try:
                        answer = pacs.call("POST", "/instances", data, content_type="application/dicom")
                    except PacsError as e:
                        if e.code not in (400, 403):
                            raise
                        # A file pipacs refuses (corrupt, or a hook's filter): say so, go on.
                        done["instances_refused"] += 1
                        warnings.append("pipacs refused instance %s of study %s: %s" % (member.name, study["uid"], e))
                        continue
                    got = answer.get("ID") if isinstance(answer, dict) else None
                    if got != member.name:
                        warnings.append("instance stored as %s, the library computed %s (study %s): "
                                        "its PatientID may use a character set the scanner does "
                                        "not decode" % (got, member.name, study["uid"]))
                    done["instances_sent"] += 1
                    done["bytes_sent"] += len(data)
                    if sid not in record["studies"]:
                        record["studies"][sid] = {
                            "uid": study["uid"], "patient": study["patient"],
                            "patient_id": study["patient_id"],
                            "description": study.get("description", ""), "sent": today}
                    dirty = True
            if wanted:
                raise PacsError("%d instance(s) of study %s are not in %s" % (len(wanted), study["uid"], tar_path))
            if done["instances_sent"] > stored_before:
                done["studies_sent"] += 1
        for patient in status["protect"]:
            if pacs.protected(patient) is None:
                continue  # nothing of this patient is stored (its studies were not sent)
            pacs.call("PUT", "/patients/%s/protected" % patient, b"1", content_type="text/plain")
            done["patients_protected"] += 1
            if patient not in record["protected"]:
                record["protected"].append(patient)
                dirty = True
        if remove_withdrawn:
            still_library = {s["patient"] for s in manifest}
            for item in status["withdrawn"]:
                entry = record["studies"].pop(item["id"], {})
                dirty = True
                if item["present"]:
                    pacs.call("DELETE", "/studies/%s" % item["id"], ok_missing=True)
                    done["studies_removed"] += 1
                patient = entry.get("patient")
                if patient and patient in record["protected"] and patient not in still_library:
                    # Protected by this module for the library only: let recycling have it again.
                    if pacs.protected(patient):
                        pacs.call("PUT", "/patients/%s/protected" % patient, b"0", content_type="text/plain")
                    record["protected"].remove(patient)
    finally:
        if dirty:
            save_record(record_path, record)
    return done, warnings, dirty


def main():
    module = AnsibleModule(
        argument_spec=dict(
            manifest=dict(type="list", elements="dict", required=True),
            url=dict(type="str", default="http://127.0.0.1:8042"),
            ca_path=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
            user=dict(type="str", default=""),
            password=dict(type="str", default="", no_log=True),
            record=dict(type="path", required=True),
            state=dict(type="str", choices=["status", "synced"], default="status"),
            staging_dir=dict(type="path"),
            protect=dict(type="bool", default=True),
            remove_withdrawn=dict(type="bool", default=False),
            storage_dir=dict(type="path"),
            min_free_mb=dict(type="int", default=256),
            timeout=dict(type="int", default=120),
        ),
        supports_check_mode=True,
    )
    p = module.params
    pacs = LibraryPacs(p["url"], p["user"], p["password"], p["timeout"], p["ca_path"], p["validate_certs"])
    try:
        record = load_record(p["record"])
        status = compare(pacs, p["manifest"], record, p["protect"])
        result = dict(changed=False, **status)
        result["space"] = space_check(p["staging_dir"] or p["record"], p["storage_dir"] or p["record"],
                                      status["counts"]["bytes_to_send"], p["min_free_mb"])
        if p["state"] == "synced" and not module.check_mode:
            if not result["space"]["ok"]:
                raise PacsError(result["space"]["message"])
            done, warnings, dirty = sync(pacs, p["manifest"], record, status, p["staging_dir"],
                                  p["remove_withdrawn"], p["record"])
            result["counts"].update(done)
            result["changed"] = dirty or any(v for k, v in done.items() if k != "instances_refused")
            for w in warnings[:10]:
                module.warn(w)
    except PacsError as e:
        module.fail_json(msg=str(e))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
