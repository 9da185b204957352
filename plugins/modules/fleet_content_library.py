#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Scan a teaching library of DICOM files on the controller; pack the studies a Pi lacks."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_content_library
short_description: Scan a folder of DICOM studies and compute pipacs' (Orthanc's) resource IDs
description:
  - Walks O(path) (any layout, any file names; hidden files and folders are left out), reads
    the DICOM Part 10 header of every file with pydicom and returns a manifest of the studies
    found, with their public IDs computed by pipacs' own code (pipacs.ids, as Orthanc).
  - Runs on the controller with a Python that has pydicom and pipacs (the repository's venv;
    the role runs it with fleet_controller_python); fails naming what is missing otherwise.
  - Files that are not DICOM Part 10 (no DICM prefix), DICOMDIR files and files missing a UID
    are counted and named in C(skipped), never sent.
  - With O(pack), also writes one uncompressed tar per listed study into O(pack_dir); members
    are named by instance ID, so the Pi can post exactly the instances it lacks.
  - Read-only on the library; in check mode nothing is packed.
version_added: "1.0.0"
author: PiPACS contributors
options:
  path:
    description: The library folder on the controller.
    type: path
    required: true
  pack:
    description: Study IDs to pack (from a previous scan of the same library).
    type: list
    elements: str
    default: []
  pack_dir:
    description: Folder for the tars (created, mode 0700); required with O(pack).
    type: path
  files:
    description: The C(files) answer of a previous scan (study ID to [[instance ID, relative path], ...]); with O(pack), saves a second scan.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Scan the teaching library
  fleet_content_library:
    path: /srv/teaching-library
  register: library
"""

RETURN = r"""
manifest:
  description: One entry per study, sorted by patient then study UID; what the Pis need.
  type: list
  returned: always
  sample:
    - id: 0a9f...-...
      uid: 1.2.3
      patient: 5c2a...-...
      patient_id: DEMO-0001
      patient_name: Demo^Phantom
      description: Demo phantom
      date: "20250101"
      bytes: 24880
      instances: {"1b2c...": 8296}
files:
  description: Study ID to a list of [instance ID, path relative to the library]; stays on the controller.
  type: dict
  returned: always
totals:
  description: studies, patients, instances, bytes, files_scanned, skipped, duplicates.
  type: dict
  returned: always
skipped:
  description: Up to 20 files left out, with the reason.
  type: list
  returned: always
packed:
  description: Study ID to the tar written for it.
  type: dict
  returned: when pack is given
"""

import os
import tarfile
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

# The scan runs on the controller, with the Python of the repository's venv (the task sets
# ansible_python_interpreter to fleet_controller_python): pydicom reads the files, and pipacs'
# own ids module computes the IDs, so the library and the Pis can never disagree on them.
try:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.multival import MultiValue
except ImportError:
    pydicom = None
    PYDICOM_IMPORT_ERROR = traceback.format_exc()
try:
    from pipacs.ids import resource_ids
except ImportError:
    resource_ids = None
    PIPACS_IMPORT_ERROR = traceback.format_exc()

# The tags the manifest needs (SpecificCharacterSet is always read too, to decode the text).
KEYWORDS = ("SOPInstanceUID", "StudyDate", "StudyDescription", "PatientName", "PatientID",
            "StudyInstanceUID", "SeriesInstanceUID")
DICOMDIR = "1.2.840.10008.1.3.10"


class NotDicom(ValueError):
    """The file is not a DICOM instance the library can send; the message says why."""


def text(value):
    """A value as pipacs reads it: multiple values joined by a backslash, padding stripped."""
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(text(v) for v in value)
    return "" if value is None else str(value).strip(" \x00")


def read_file(path):
    """The UIDs and display tags of one DICOM Part 10 file (its header only, read by pydicom)."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(KEYWORDS))
    except InvalidDicomError:
        raise NotDicom("no DICM prefix: not a DICOM Part 10 file") from None
    except Exception as e:  # pydicom raises many kinds on damaged files
        raise NotDicom("unreadable (%s: %s)" % (type(e).__name__, e)) from None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR:
        raise NotDicom("a DICOMDIR (an index of files), not an instance")
    try:
        out = {"patient_id": text(ds.get("PatientID")), "patient_name": text(ds.get("PatientName")),
               "description": text(ds.get("StudyDescription")), "date": text(ds.get("StudyDate")),
               "study_uid": text(ds.get("StudyInstanceUID")), "series_uid": text(ds.get("SeriesInstanceUID")),
               "sop_uid": text(ds.get("SOPInstanceUID"))}
    except Exception as e:  # a value pydicom cannot decode
        raise NotDicom("unreadable tag values (%s: %s)" % (type(e).__name__, e)) from None
    for key in ("study_uid", "series_uid", "sop_uid"):
        if not out[key]:
            raise NotDicom("no %s: not an instance pipacs can index" % key)
    return out


# ---- The library -----------------------------------------------------------------------------


def walk(root):
    """Every regular file under root (relative paths, sorted), hidden names left out."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            full = os.path.join(folder, name)
            if os.path.isfile(full):
                out.append(os.path.relpath(full, root))
    return sorted(out)


def scan(root):
    """Manifest, files and totals of the library under root (see RETURN)."""
    studies = {}
    files = {}
    skipped = []
    skipped_count = duplicates = 0
    seen = set()
    paths = walk(root)
    for rel in paths:
        full = os.path.join(root, rel)
        try:
            head = read_file(full)
        except (NotDicom, OSError) as e:
            skipped_count += 1
            if len(skipped) < 20:
                skipped.append({"path": rel, "reason": str(e)})
            continue
        patient, study, _series, instance = resource_ids(
            head["patient_id"], head["study_uid"], head["series_uid"], head["sop_uid"])
        if instance in seen:
            duplicates += 1
            continue
        seen.add(instance)
        entry = studies.get(study)
        if entry is None:
            entry = studies[study] = {
                "id": study,
                "uid": head["study_uid"].strip(),
                "patient": patient,
                "patient_id": head["patient_id"].strip(),
                "patient_name": head.get("patient_name", ""),
                "description": head.get("description", ""),
                "date": head.get("date", ""),
                "bytes": 0,
                "instances": {},
            }
            files[study] = []
        size = os.path.getsize(full)
        entry["instances"][instance] = size
        entry["bytes"] += size
        files[study].append([instance, rel])
    manifest = sorted(studies.values(), key=lambda s: (s["patient_id"], s["uid"], s["id"]))
    totals = {
        "studies": len(manifest),
        "patients": len({s["patient"] for s in manifest}),
        "instances": sum(len(s["instances"]) for s in manifest),
        "bytes": sum(s["bytes"] for s in manifest),
        "files_scanned": len(paths),
        "skipped": skipped_count,
        "duplicates": duplicates,
    }
    return manifest, files, totals, skipped


def pack(root, files, study_ids, pack_dir):
    """One tar per study (members named by instance ID); returns study ID -> tar path."""
    if not os.path.isdir(pack_dir):
        os.makedirs(pack_dir, 0o700)
    out = {}
    for study in study_ids:
        if study not in files:
            raise KeyError(study)
        target = os.path.join(pack_dir, study + ".tar")
        tmp = target + ".part"
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for instance, rel in files[study]:
                info = tar.gettarinfo(os.path.join(root, rel), arcname=instance)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = 0o600
                with open(os.path.join(root, rel), "rb") as f:
                    tar.addfile(info, f)
        os.rename(tmp, target)
        out[study] = target
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            pack=dict(type="list", elements="str", default=[]),
            pack_dir=dict(type="path"),
            files=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    for lib, missing, error in (("pydicom", pydicom is None, "PYDICOM_IMPORT_ERROR"),
                                ("pipacs", resource_ids is None, "PIPACS_IMPORT_ERROR")):
        if missing:
            module.fail_json(
                msg=missing_required_lib(lib, reason="to read the teaching library on the controller")
                + " The scan runs with fleet_controller_python: set it to the Python of the"
                " repository's venv (make setup installs pydicom and pipacs there).",
                exception=globals()[error])
    root = module.params["path"]
    if not os.path.isdir(root):
        module.fail_json(msg="the teaching library %s is not a folder on the controller" % root)
    wanted = module.params["pack"]
    files = module.params["files"]
    if wanted and files:
        result = dict(changed=False, packed={})
    else:
        manifest, files, totals, skipped = scan(root)
        result = dict(changed=False, manifest=manifest, files=files, totals=totals, skipped=skipped)
    if wanted:
        if not module.params["pack_dir"]:
            module.fail_json(msg="pack needs pack_dir")
        missing = [s for s in wanted if s not in files]
        if missing:
            module.fail_json(msg="studies no longer in the library (scan again): %s" % ", ".join(missing))
        if not module.check_mode:
            try:
                result["packed"] = pack(root, files, wanted, module.params["pack_dir"])
            except (OSError, tarfile.TarError) as e:
                module.fail_json(msg="packing the studies failed: %s" % e)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
