"""Built-in plugins, switched on by the configuration as Orthanc's libraries would be.

Each plugin module has `NAME` (as in config.PLUGIN_EQUIVALENTS), `SECTION` (its
configuration key, or "") and `install(app, context) -> None`, which adds its routes to the
Bottle app and its hooks to the context. `enabled` decides, from the settings, which run.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import bottle

from ..config import Settings
from ..context import ServerContext

logger = logging.getLogger(__name__)

# name -> (module, configuration section). Listed here so `/plugins` can name them all.
BUILTINS: dict[str, tuple[str, str]] = {
    "dicom-web": ("dicomweb", "dicom_web"),
    "worklists": ("worklists", "worklists"),
    "serve-folders": ("servefolders", "serve_folders"),
    "web-viewer": ("viewer", "web_viewer"),
    "ohif": ("ohif", "ohif"),
    # Python hooks run whenever PythonScripts lists something (as Orthanc's LuaScripts do),
    # or when "python" (libOrthancPython) is in Plugins.
    "python": ("hooks", "python_scripts"),
    # Lua scripts, as Orthanc runs them, when LuaScripts lists something or ExecuteLuaEnabled.
    "lua": ("lua", "lua_scripts"),
}


# Plugins whose routes Orthanc always has: switched off, they answer that they are off
# (their module's `install_off(app)`), not a 404.
ANSWERED_WHEN_OFF = ("lua",)


def enabled(settings: Settings, name: str, section_key: str) -> bool:
    """Orthanc's rule, extended for pipacs: a plugin runs when its library (or its pipacs
    name) is in `Plugins`, or its section says "Enable": true; "Enable": false always wins."""
    if name == "lua" and settings.execute_lua_enabled:
        return True
    section = getattr(settings, section_key, None) if section_key else None
    if isinstance(section, list) and section:
        return True  # a list section (PythonScripts) switches its plugin on when not empty
    if isinstance(section, dict) and section.get("Enable") is False:
        return False
    if name in settings.builtin_plugins or name in settings.plugins:
        return True
    return isinstance(section, dict) and section.get("Enable") is True


def install_all(app: bottle.Bottle | None, context: ServerContext) -> list[str]:
    """Install every enabled built-in plugin (app is None without HTTP); return their names."""
    started = []
    for name, (module, section_key) in BUILTINS.items():
        if not enabled(context.settings, name, section_key):
            if name in ANSWERED_WHEN_OFF and app is not None:
                importlib.import_module(f"{__name__}.{module}").install_off(app)
            continue
        mod: Any = importlib.import_module(f"{__name__}.{module}")
        mod.install(app, context)
        started.append(name)
        logger.info("plugin %s enabled", name)
    return started
