"""Who may do what: the role each route needs, in one table; a route not in it is admin-only.

Three roles (config/roles.py), each allowed what the ones before it are:
- student: what reads (the welcome page, the viewers, served folders, DICOMweb QIDO and WADO,
  the REST GETs of patients/studies/series/instances, and POSTs that only search);
- teacher: what changes the images and the day's work (upload, STOW, delete, modify,
  anonymize, protect, metadata, worklists) and archives of whole studies;
- admin: everything else: configuration, shutdown, reset, jobs, modalities, peers, queries,
  log levels, and every route this table does not name (default-deny: a route added later is
  admin-only until it is classified here).

Archives and media (ZIP/DICOMDIR of a whole patient or study) are teacher-only: a student
views images on the classroom's screens and tablets, but one tap on an archive puts a
patient's whole identifiable record into the Downloads folder of a personal device, which
leaves the classroom with it; a teacher hands out anonymized copies instead.

The check runs as a Bottle plugin, so it sees every route (core REST, every plugin, served
folders) with the route's own rule and method, decided once per route, not per request;
the before_request hook (auth.access_check) has already set the client's role.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bottle

from ..config.roles import ADMIN, RANK, STUDENT, TEACHER
from ..context import ServerContext
from ..plugins.dicomweb import Options as DicomWebOptions
from .auth import ROLE_KEY, USER_KEY

_R = "/<plural:re:patients|studies|series|instances>/<pid>"
_I = "/instances/<pid>"
_DW = "{dicom-web}"
_INST = f"{_DW}/studies/<study>/series/<series>/instances/<sop>"
_DW_LEVELS = (f"{_DW}/studies/<study>", f"{_DW}/studies/<study>/series/<series>", _INST)

# (method, rule) -> role. Rules as Bottle registers them, with the configured roots written
# {dicom-web} (DicomWeb.Root), {wado} (DicomWeb.WadoRoot) and {folder} (each served folder).
ROUTES: dict[tuple[str, str], str] = {
    **{("GET", rule): STUDENT for rule in (
        "/", "{folder}", "{folder}/", "{folder}/<rel:path>",
        "/viewer", "/viewer/", "/viewer/<name>",
        "/system", "/statistics", "/plugins", "/changes", "/tools/now", "/tools/now-local",
        "/<plural:re:patients|studies|series|instances>", _R,
        f"{_R}/<rel:re:patient|study|series|studies|instances>", f"{_R}/shared-tags",
        f"{_R}/statistics", f"{_R}/metadata", f"{_R}/metadata/<name>", f"{_R}/attachments",
        f"{_R}/attachments/<name>", f"{_R}/attachments/<name>/<op>",
        "/patients/<pid>/protected",
        f"{_I}/file", f"{_I}/tags", f"{_I}/simplified-tags", f"{_I}/header", f"{_I}/pdf",
        f"{_I}/frames", f"{_I}/<kind:re:preview|rendered|image-uint8|image-uint16>",
        f"{_I}/frames/<frame:int>/<kind:re:preview|rendered|image-uint8|image-uint16|raw>",
        "/worklists", "/worklists/<wid>",
        # DICOMweb: QIDO-RS, WADO-RS, WADO-URI.
        f"{_DW}/studies", f"{_DW}/series", f"{_DW}/instances", f"{_DW}/studies/<study>/series",
        f"{_DW}/studies/<study>/instances", f"{_DW}/studies/<study>/series/<series>/instances",
        *_DW_LEVELS, *(f"{level}/{kind}" for level in _DW_LEVELS
                       for kind in ("metadata", "rendered", "thumbnail")),
        f"{_INST}/frames/<frames>", f"{_INST}/frames/<frames>/rendered",
        f"{_INST}/frames/<frames>/thumbnail", f"{_INST}/bulk/<path:path>", "{wado}",
        # The OHIF viewer (its RouterBasename written {ohif}).
        "{ohif}", "{ohif}/", "{ohif}/<rel:path>",
        # Orthanc's other reads of one resource: tags as modules, pixel values, content.
        "/<plural:re:patients|studies|series>/<pid>/instances-tags", f"{_R}/module",
        "/studies/<pid>/module-patient", f"{_I}/content", f"{_I}/content/<path:path>",
        f"{_I}/frames/<frame:int>", f"{_I}/numpy", f"{_I}/matlab", f"{_I}/image-int16",
        *(f"{_I}/frames/<frame:int>/{kind}" for kind in ("numpy", "matlab", "image-int16",
                                                          "raw.gz")),
        "/series/<pid>/numpy", "/tools", "/tools/generate-uid", "/tools/dicom-conformance",
        "/plugins/explorer.js",
    )},
    # POSTs that only read.
    ("POST", "/tools/find"): STUDENT,
    ("POST", "/tools/lookup"): STUDENT,
    ("POST", "/tools/bulk-content"): STUDENT,
    # Teachers: upload, change, archive, the day's worklists.
    ("POST", "/instances"): TEACHER,
    ("POST", f"{_DW}/studies"): TEACHER,
    ("POST", f"{_DW}/studies/<study>"): TEACHER,
    ("DELETE", _R): TEACHER,
    ("POST", f"{_R}/<kind:re:modify|anonymize>"): TEACHER,
    ("PUT", f"{_R}/metadata/<name>"): TEACHER,
    ("DELETE", f"{_R}/metadata/<name>"): TEACHER,
    ("PUT", "/patients/<pid>/protected"): TEACHER,
    ("GET", f"{_R}/<kind:re:archive|media>"): TEACHER,
    ("POST", f"{_R}/<kind:re:archive|media>"): TEACHER,
    ("POST", "/tools/<kind:re:create-archive|create-media|create-media-extended>"): TEACHER,
    ("POST", "/worklists/create"): TEACHER,
    ("POST", "/tools/<kind:re:bulk-modify|bulk-anonymize>"): TEACHER,
    ("POST", "/tools/bulk-delete"): TEACHER,
    ("POST", "/tools/create-dicom"): TEACHER,
    ("POST", "/studies/<pid>/split"): TEACHER,
    ("POST", "/studies/<pid>/merge"): TEACHER,
    ("PUT", f"{_R}/attachments/<name>"): TEACHER,
    ("DELETE", f"{_R}/attachments/<name>"): TEACHER,
    ("POST", f"{_R}/attachments/<name>/verify-md5"): TEACHER,
    ("PUT", "/worklists/<wid>"): TEACHER,
    ("DELETE", "/worklists/<wid>"): TEACHER,
}


def route_classifier(context: ServerContext) -> Callable[[str, str], str]:
    """role_needed(method, rule): the role a route needs, ADMIN when the table has no entry."""

    def canonical(rule: str) -> str:
        options = DicomWebOptions.from_section(context.settings.dicom_web)
        if options.root and (rule == options.root or rule.startswith(options.root + "/")):
            return _DW + rule[len(options.root):]
        if rule == options.wado_root:
            return "{wado}"
        ohif = "/" + str(context.settings.ohif.get("RouterBasename", "/ohif")).strip("/")
        if rule in (ohif, ohif + "/", ohif + "/<rel:path>"):
            return "{ohif}" + rule[len(ohif):]
        for uri in context.plugins.served_folders:
            base = "" if uri == "/" else uri
            if rule in (base, base + "/", base + "/<rel:path>") and rule:
                return "{folder}" + rule[len(base):]
        return rule

    def role_needed(method: str, rule: str) -> str:
        return ROUTES.get((method, canonical(rule)), ADMIN)

    return role_needed


class RoutePermission:
    """The Bottle plugin that refuses a route to a client whose role is below the route's:
    401 with the Basic challenge when the client sent no credentials (a browser asks for a
    login), 403 when it is logged in as a user whose role is not enough."""

    name = "pipacs-roles"
    api = 2

    def __init__(self, context: ServerContext, challenge: dict[str, str]) -> None:
        self.role_needed = route_classifier(context)
        self.challenge = challenge

    def apply(self, callback: Callable[..., Any], route: bottle.Route) -> Callable[..., Any]:
        # Applied on a route's first call: by then every plugin has registered its routes.
        needed = RANK[self.role_needed(route.method, route.rule)]
        challenge = self.challenge

        def checked(*args: Any, **kwargs: Any) -> Any:
            env = bottle.request.environ
            if RANK[env.get(ROLE_KEY, STUDENT)] < needed:
                if env.get(USER_KEY):
                    raise bottle.HTTPResponse(status=403, body="forbidden for this user\n")
                raise bottle.HTTPResponse(status=401, body="authentication required\n",
                                          headers=challenge)
            return callback(*args, **kwargs)

        return checked
