"""The welcome page at /: the Pi's name, how to send it images, links to what it serves.

The one welcome page: the plugins role deploys no page of its own, and the hotspot's captive
portal sends tablets here. Always installed by create_app (it is not a switchable plugin),
after the plugins, so it links only what they serve; a ServeFolders entry for "/" takes its
place. Every link is one that a student (AnonymousRole) may open.
"""

from __future__ import annotations

import html

import bottle

from ..context import ServerContext
from ..ids import INSTANCE, PATIENT, STUDY
from . import ohif

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{name}</title>
<style>
body{{margin:0;font:17px/1.4 -apple-system,system-ui,sans-serif;background:#111;color:#eee}}
main{{max-width:40em;margin:0 auto;padding:2em 1em}}
h1{{font-size:1.8em;margin:0 0 .2em}} p{{color:#aaa;margin:0 0 1.5em}}
a.tile{{display:block;padding:1em 1.2em;margin:.6em 0;border-radius:12px;background:#223;
color:#fff;text-decoration:none;font-size:1.1em}}
a.tile:active{{background:#335}} small{{display:block;color:#99a;font-size:.8em}}
td{{padding:.1em 1em .1em 0}} code{{color:#fff}}
</style></head><body><main>
<h1>{name}</h1><p>{summary}</p>
{links}
<p>Send images from a modality or a workstation to:</p>
<table><tr><td>AE title</td><td><code>{aet}</code></td></tr>
<tr><td>Host</td><td><code>{host}</code></td></tr>
<tr><td>DICOM port</td><td><code>{port}</code></td></tr></table>
</main></body></html>
"""


def links(context: ServerContext) -> list[tuple[str, str, str]]:
    """(href, title, note) for each thing the server offers a person with a browser."""
    enabled = context.plugins.enabled
    out = []
    if "web-viewer" in enabled:
        out.append(("viewer/", "Image viewer", "Browse the studies on this server"))
    if "ohif" in enabled and ohif.installed(context.settings.ohif):
        out.append((ohif.base_of(context.settings.ohif).lstrip("/") + "/", "OHIF Viewer",
                    "The full viewer: measurements, reformatting, layouts"))
    for uri in context.plugins.served_folders:
        if uri != "/":
            out.append((uri.lstrip("/") + "/", uri, "Served folder"))
    if "dicom-web" in enabled:
        root = str(context.settings.dicom_web.get("Root", "/dicom-web/")).strip("/")
        out.append((f"{root}/studies".lstrip("/"), "DICOMweb",
                    f"/{root}/ for other viewers (the studies, as DICOM JSON)".replace("//", "/")))
    if "worklists" in enabled:
        out.append(("worklists", "Worklists", "Scheduled procedures (JSON)"))
    out.append(("system", "About this server", "Version and settings (JSON)"))
    return out


def render(context: ServerContext) -> str:
    counts = context.index.counts()
    summary = (
        f"{counts[PATIENT]} patients, {counts[STUDY]} studies, {counts[INSTANCE]} images"
    )
    items = "\n".join(
        f'<a class="tile" href="{html.escape(href)}">{html.escape(title)}'
        f"<small>{html.escape(note)}</small></a>"
        for href, title, note in links(context)
    )
    s = context.settings
    return PAGE.format(
        name=html.escape(s.name), summary=html.escape(summary), links=items,
        aet=html.escape(s.dicom_aet), port=s.dicom_port,
        host=html.escape(bottle.request.urlparts.hostname or ""),
    )


def install(app: bottle.Bottle, context: ServerContext) -> None:
    if "/" in context.plugins.served_folders:
        return

    @app.get("/")
    def welcome() -> str:
        bottle.response.content_type = "text/html; charset=utf-8"
        bottle.response.set_header("Cache-Control", "no-cache")
        return render(context)
