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
    the DICOM Part 10 header of every file with a small reader of its own (Python standard
    library only, no pydicom) and returns a manifest of the studies found, with the public
    IDs pipacs computes for them (SHA-1 of "PatientID|StudyInstanceUID|...", as Orthanc).
  - Files that are not DICOM Part 10 (no DICM prefix), DICOMDIR files and files missing a UID
    are counted and named in C(skipped), never sent.
  - With O(pack), also writes one uncompressed tar per listed study into O(pack_dir): members
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

import hashlib
import os
import struct
import tarfile
import zlib

from ansible.module_utils.basic import AnsibleModule

# ---- A DICOM Part 10 header reader: just the four UIDs and a few display tags ---------------

PATIENT_ID = 0x00100020
STUDY_UID = 0x0020000D
SERIES_UID = 0x0020000E
SOP_UID = 0x00080018
CHARSET = 0x00080005
WANTED = {
    CHARSET: "charset",
    SOP_UID: "sop_uid",
    0x00080020: "date",
    0x00081030: "description",
    0x00100010: "patient_name",
    PATIENT_ID: "patient_id",
    STUDY_UID: "study_uid",
    SERIES_UID: "series_uid",
}
LAST_WANTED = SERIES_UID
TEXT_DECODED = {"patient_name", "patient_id", "description"}
TRANSFER_SYNTAX = 0x00020010
DEFLATED = "1.2.840.10008.1.2.1.99"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF
# SpecificCharacterSet to Python codec, as pipacs reads PatientID (its default: Latin-1).
CODECS = {
    "": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8",
    "ISO_IR 101": "iso8859_2", "ISO_IR 109": "iso8859_3", "ISO_IR 110": "iso8859_4",
    "ISO_IR 144": "iso8859_5", "ISO_IR 127": "iso8859_6", "ISO_IR 126": "iso8859_7",
    "ISO_IR 138": "iso8859_8", "ISO_IR 148": "iso8859_9", "ISO_IR 166": "iso8859_11",
    "GB18030": "gb18030", "GBK": "gbk",
}
HEAD_BYTES = 256 * 1024


class NotDicom(ValueError):
    """The file is not a DICOM instance the library can send; the message says why."""


class _Truncated(Exception):
    """The header runs past the bytes read so far."""


def hash_id(text):
    """SHA-1 of the text as five dash-separated groups of eight hex digits (pipacs/ids.py)."""
    h = hashlib.sha1(text.encode("utf-8")).hexdigest()
    return "-".join(h[i:i + 8] for i in range(0, 40, 8))


def resource_ids(patient_id, study_uid, series_uid, sop_uid):
    """The patient, study, series and instance IDs of one instance, as pipacs computes them."""
    chain = [patient_id.strip(), study_uid.strip(), series_uid.strip(), sop_uid.strip()]
    return tuple(hash_id("|".join(chain[:n])) for n in range(1, 5))


class _Reader(object):
    """Walks the elements of one dataset encoding (explicit/implicit VR, little/big endian)."""

    def __init__(self, data, implicit, big_endian):
        self.data = data
        self.implicit = implicit
        self.end = len(data)
        self.u16 = struct.Struct(">H" if big_endian else "<H").unpack_from
        self.u32 = struct.Struct(">I" if big_endian else "<I").unpack_from
        self.tag_fmt = struct.Struct(">HH" if big_endian else "<HH").unpack_from

    def need(self, pos, count):
        if pos + count > self.end:
            raise _Truncated()

    def tag(self, pos):
        self.need(pos, 4)
        g, e = self.tag_fmt(self.data, pos)
        return (g << 16) | e

    def element(self, pos, implicit=None):
        """(next position, tag, value start or -1 when the value was a skipped sequence)."""
        implicit = self.implicit if implicit is None else implicit
        tag = self.tag(pos)
        if tag in (ITEM, ITEM_END, SEQ_END):
            raise NotDicom("an item outside a sequence")
        if implicit:
            self.need(pos, 8)
            vr, length, start = None, self.u32(self.data, pos + 4)[0], pos + 8
        else:
            self.need(pos, 8)
            vr = self.data[pos + 4:pos + 6]
            if vr in LONG_VRS:
                self.need(pos, 12)
                length, start = self.u32(self.data, pos + 8)[0], pos + 12
            else:
                if not vr.isalpha():
                    raise NotDicom("unreadable element (%04X,%04X)" % (tag >> 16, tag & 0xFFFF))
                length, start = self.u16(self.data, pos + 6)[0], pos + 8
        if length == UNDEFINED:
            return self.skip_items(start, implicit or vr == b"UN"), tag, -1
        self.need(start, length)
        return start + length, tag, start

    def skip_items(self, pos, implicit):
        """Skip an undefined-length value: items up to the sequence delimiter."""
        while True:
            tag = self.tag(pos)
            self.need(pos, 8)
            length = self.u32(self.data, pos + 4)[0]
            pos += 8
            if tag == SEQ_END:
                return pos
            if tag != ITEM:
                raise NotDicom("unexpected element (%04X,%04X) in a sequence" % (tag >> 16, tag & 0xFFFF))
            if length == UNDEFINED:
                while True:
                    if self.tag(pos) == ITEM_END:
                        pos += 8
                        break
                    pos = self.element(pos, implicit)[0]
            else:
                self.need(pos, length)
                pos += length


def _meta(data):
    """The file meta group (always explicit VR little endian): transfer syntax, dataset offset."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise NotDicom("no DICM prefix: not a DICOM Part 10 file")
    reader = _Reader(data, False, False)
    pos, ts = 132, None
    while pos + 8 <= len(data) and reader.tag(pos) >> 16 == 0x0002:
        nxt, tag, start = reader.element(pos)
        if tag == TRANSFER_SYNTAX and start >= 0:
            ts = data[start:nxt].decode("ascii", "replace").strip(" \x00")
        pos = nxt
    if not ts:
        raise NotDicom("no transfer syntax in the file meta information")
    return ts, pos


def read_header(data, complete=True):
    """The UIDs and display tags of one Part 10 file, from its first bytes (or all of them).

    Raises NotDicom with the reason, or _Truncated when `complete` is false and more bytes
    are needed.
    """
    try:
        return _read_header(data, complete)
    except _Truncated:
        if complete:
            raise NotDicom("the file ends inside its header (truncated?)") from None
        raise


def _read_header(data, complete):
    ts, offset = _meta(data)
    body = data[offset:]
    if ts == DEFLATED:
        if not complete:
            raise _Truncated()
        try:
            body = zlib.decompressobj(-zlib.MAX_WBITS).decompress(body)
        except zlib.error as e:
            raise NotDicom("deflated dataset unreadable: %s" % e) from None
    reader = _Reader(body, ts == IMPLICIT_LE, ts == EXPLICIT_BE)
    found = {}
    pos = 0
    while pos < len(body):
        tag = reader.tag(pos)
        if tag > LAST_WANTED:
            break
        nxt, tag, start = reader.element(pos)
        if tag in WANTED and start >= 0:
            found[WANTED[tag]] = body[start:nxt]
        pos = nxt
    else:
        if not complete:
            raise _Truncated()
    charset = found.pop("charset", b"").decode("ascii", "replace").strip(" \x00")
    codec = CODECS.get(charset.split("\\")[0].strip(), "latin-1")
    out = {}
    for key, raw in found.items():
        text = raw.decode(codec if key in TEXT_DECODED else "latin-1", "replace")
        out[key] = text.strip(" \x00")
    for key in ("study_uid", "series_uid", "sop_uid"):
        if not out.get(key):
            raise NotDicom("no %s: not an instance pipacs can index" % key)
    out.setdefault("patient_id", "")
    out["transfer_syntax"] = ts
    return out


def read_file(path):
    """read_header on the file's first bytes, reading it whole when the header is longer."""
    with open(path, "rb") as f:
        data = f.read(HEAD_BYTES)
        if len(data) == HEAD_BYTES:
            try:
                return read_header(data, complete=False)
            except _Truncated:
                data += f.read()
    return read_header(data)


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
        except (NotDicom, OSError, struct.error) as e:
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
