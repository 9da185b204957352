"""Reading the index for the REST API: Orthanc's resource JSON, children, sizes, metadata."""

from __future__ import annotations

from typing import Any

from .context import ServerContext
from .dicomfile import MAIN_TAGS
from .ids import INSTANCE, LEVEL_NAMES, LEVEL_PLURALS, PATIENT, SERIES, STUDY
from .index import METADATA_NUMBERS, METADATA_TYPES, Resource, iso_of
from .storage import Attachment

CHILD_KEYS = ("Studies", "Series", "Instances")
PARENT_KEYS = ("", "ParentPatient", "ParentStudy", "ParentSeries")
# Metadata numbers below this are the server's own and cannot be set or removed by clients.
USER_METADATA_START = 1024


def main_tags(level: int, tags: dict[str, str]) -> dict[str, str]:
    """The main DICOM tags of a level, in Orthanc's order (sorted by name)."""
    return {k: tags[k] for k in sorted(tags) if k in MAIN_TAGS[level]}


def child_ids(context: ServerContext, rid: int) -> list[str]:
    return context.index.child_ids(rid)


def descendants(context: ServerContext, res: Resource, level: int) -> list[Resource]:
    """Resources at `level` under `res` (or `res` itself when it is at that level)."""
    return context.index.descendants(res, level)


def ancestor(context: ServerContext, res: Resource, level: int) -> Resource | None:
    r: Resource | None = res
    while r is not None and r.level > level:
        r = context.index.get_by_id(r.parent) if r.parent is not None else None
    return r


def metadata_names(context: ServerContext) -> dict[int, str]:
    names = dict(METADATA_TYPES)
    for name, num in context.settings.user_metadata.items():
        n = num[0] if isinstance(num, list) else num
        names[int(n)] = name
    return names


def metadata_number(context: ServerContext, name: str) -> int | None:
    """The number of a metadata given by name or number; None when unknown."""
    if name.isascii() and name.isdigit():
        number = int(name)
        return number if number <= 65535 else None  # Orthanc's metadata are 0 to 65535
    for num, n in metadata_names(context).items():
        if n == name:
            return num
    return None


def named_metadata(context: ServerContext, rid: int) -> dict[str, str]:
    names = metadata_names(context)
    return {names.get(k, str(k)): v for k, v in sorted(context.index.metadata(rid).items())}


def delete_metadata(context: ServerContext, res: Resource, number: int) -> bool:
    return context.index.delete_metadata(res.id, res.level, res.public_id, number)


def resource_json(context: ServerContext, res: Resource) -> dict[str, Any]:
    """Orthanc's expanded JSON of one resource."""
    idx = context.index
    parent = idx.get_by_id(res.parent) if res.parent is not None else None
    children = child_ids(context, res.id) if res.level < INSTANCE else []
    att = idx.attachment(res.id) if res.level == INSTANCE else None
    return _resource_json(res, idx.metadata(res.id), parent, children, att)


def resources_json(context: ServerContext, items: list[Resource]) -> list[dict[str, Any]]:
    """resource_json of many resources, read with a few queries per 500 resources instead of
    several per resource (/instances?expand, /tools/find with Expand)."""
    rids = [r.id for r in items]
    meta = context.index.metadata_of(rids)
    children = context.index.child_ids_of(rids)
    atts = context.index.attachments_of(rids)
    parents: dict[int, Resource | None] = {}
    out = []
    for r in items:
        if r.level < INSTANCE:  # as Index.metadata: LastUpdate is kept in the resource row
            meta[r.id].setdefault(METADATA_NUMBERS["LastUpdate"], iso_of(r.updated))
        parent = None
        if r.parent is not None:
            if r.parent not in parents:
                parents[r.parent] = context.index.get_by_id(r.parent)
            parent = parents[r.parent]
        out.append(_resource_json(r, meta[r.id], parent, children[r.id], atts.get(r.id)))
    return out


def resources_of(context: ServerContext, public_ids: list[str], level: int) -> list[Resource]:
    """The resources with these IDs at this level, in the given order (unknown ones left out)."""
    return context.index.get_many(public_ids, level)


def _resource_json(res: Resource, meta: dict[int, str], parent: Resource | None,
                   children: list[str], att: Attachment | None) -> dict[str, Any]:
    out: dict[str, Any] = {"ID": res.public_id, "Type": LEVEL_NAMES[res.level]}
    out["MainDicomTags"] = main_tags(res.level, res.tags)
    if parent is not None:
        out[PARENT_KEYS[res.level]] = parent.public_id
    if res.level == STUDY and parent is not None:
        out["PatientMainDicomTags"] = main_tags(PATIENT, parent.tags)
    if res.level < INSTANCE:
        out[CHILD_KEYS[res.level]] = children
        out["IsStable"] = res.stable
        out["LastUpdate"] = meta.get(METADATA_NUMBERS["LastUpdate"], "")
    if res.level == PATIENT:
        out["IsProtected"] = res.protected
    if res.level == SERIES:
        expected = meta.get(METADATA_NUMBERS["ExpectedNumberOfInstances"])
        out["ExpectedNumberOfInstances"] = int(expected) if expected else None
        out["Status"] = "Unknown"
    if res.level == INSTANCE:
        out["FileSize"] = att.size if att else 0
        out["FileUuid"] = att.uuid if att else ""
        index_in_series = meta.get(METADATA_NUMBERS["IndexInSeries"])
        out["IndexInSeries"] = int(index_in_series) if index_in_series else None
    for key in ("ModifiedFrom", "AnonymizedFrom"):
        if METADATA_NUMBERS[key] in meta:
            out[key] = meta[METADATA_NUMBERS[key]]
    return dict(sorted(out.items()))


def short_json(res: Resource) -> dict[str, str]:
    return {"ID": res.public_id, "Path": f"/{LEVEL_PLURALS[res.level]}/{res.public_id}",
            "Type": LEVEL_NAMES[res.level]}


def statistics(context: ServerContext, res: Resource) -> dict[str, Any]:
    """Orthanc's /{level}/{id}/statistics."""
    levels = range(res.level + 1, INSTANCE + 1)
    out: dict[str, Any] = {}
    names = {STUDY: "CountStudies", SERIES: "CountSeries", INSTANCE: "CountInstances"}
    for lv in levels:
        out[names[lv]] = context.index.count_descendants(res.id, res.level, lv)
    size, disk = context.index.sizes_under(res)
    mb = 1024 * 1024
    for prefix in ("Dicom", ""):
        out[f"{prefix}DiskSize"] = str(disk)
        out[f"{prefix}DiskSizeMB"] = disk // mb
        out[f"{prefix}UncompressedSize"] = str(size)
        out[f"{prefix}UncompressedSizeMB"] = size // mb
    return dict(sorted(out.items()))
