"""Secrets stay out of Ansible's output: no_log on secret options, no --diff of files holding them.

Every role's meta/argument_specs.yml is read: an option whose name says password, passphrase,
secret, key or token must be `no_log: true` (Ansible then hides its value when it checks the
spec). The variables holding a secret are those options, the options with a secret sub-option
(server_peers' password) and, to a fixed point, every variable of defaults/ and vars/ whose
value names one. A task that writes a file from one (template whose source names one, copy or
lineinfile whose text does) must set `diff: false` or `no_log: true`, itself or on its block:
`--diff` would print the old and new file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists())
SECRET_WORDS = {"password", "passwords", "passphrase", "secret", "secrets", "key", "keys", "token", "tokens"}
# Modules that write a file from text given in the task or a template.
WRITERS = {"template", "copy", "lineinfile", "blockinfile", "ini_file"}


def says_secret(name: str) -> bool:
    return bool(SECRET_WORDS & set(name.lower().split("_")))


def walk_options(options: dict[str, Any], path: str = "") -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(dotted path, name, spec) of every option and sub-option."""
    for name, spec in (options or {}).items():
        spec = spec or {}
        yield f"{path}{name}", name, spec
        yield from walk_options(spec.get("options") or {}, f"{path}{name}.")


def specs() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    for role in ROLES:
        data = yaml.safe_load((role / "meta" / "argument_specs.yml").read_text())
        for entry, body in (data.get("argument_specs") or {}).items():
            for dotted, name, spec in walk_options(body.get("options") or {}):
                yield f"{role.name}:{entry}", dotted, name, spec


def secret_options() -> list[tuple[str, str, dict[str, Any]]]:
    return [(where, dotted, spec) for where, dotted, name, spec in specs() if says_secret(name)]


def role_variables() -> dict[str, str]:
    """Every variable of the roles' defaults/ and vars/, with its value as YAML text."""
    found: dict[str, str] = {}
    for role in ROLES:
        for folder in ("defaults", "vars"):
            for file in sorted((role / folder).rglob("*.yml")):
                data = yaml.safe_load(file.read_text()) or {}
                for name, value in data.items():
                    found[name] = found.get(name, "") + "\n" + yaml.safe_dump(value)
    return found


def secret_variables() -> set[str]:
    secrets = set()
    for _where, dotted, name, spec in specs():
        if says_secret(name) or spec.get("no_log"):
            secrets.add(dotted.split(".")[0])
    variables = role_variables()
    while True:
        more = {name for name, text in variables.items() if name not in secrets and names_any(text, secrets)}
        if not more:
            return secrets
        secrets |= more


def names_any(text: str, names: set[str]) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", text) for n in names)


def module_of(task: dict[str, Any]) -> tuple[str, Any] | None:
    for key, args in task.items():
        if key.split(".")[-1] in WRITERS and key not in ("name", "vars"):
            return key.split(".")[-1], args
    return None


def tasks_in(items: Any, hidden: bool = False) -> Iterator[tuple[dict[str, Any], bool]]:
    """Each task, with whether it or an enclosing block hides its diff."""
    for task in items or []:
        if not isinstance(task, dict):
            continue
        quiet = hidden or task.get("diff") is False or task.get("no_log") is True
        if "block" in task:
            for part in ("block", "rescue", "always"):
                yield from tasks_in(task.get(part), quiet)
        else:
            yield task, quiet


def task_files() -> Iterator[tuple[Path, Path, Any]]:
    """(file, templates folder, task list) of every role's tasks and handlers and every play."""
    for role in sorted((ROOT / "roles").iterdir()):
        for folder in ("tasks", "handlers"):
            for file in sorted((role / folder).glob("*.yml")):
                yield file, role / "templates", yaml.safe_load(file.read_text())
    for file in sorted((ROOT / "playbooks").glob("*.yml")):
        for play in yaml.safe_load(file.read_text()) or []:
            for part in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                yield file, ROOT / "playbooks" / "templates", play.get(part)


def writers_of_secrets() -> list[tuple[str, str, bool]]:
    """(file, task name, hidden) of every task that writes a file holding a secret."""
    secrets = secret_variables()
    found = []
    for file, templates, tasks in task_files():
        for task, hidden in tasks_in(tasks):
            module = module_of(task)
            if module is None:
                continue
            kind, args = module
            text = yaml.safe_dump(args)
            if kind == "template" and isinstance(args, dict) and "{{" not in str(args.get("src", "{{")):
                source = templates / args["src"]
                text += source.read_text() if source.exists() else ""
            if names_any(text, secrets):
                found.append((str(file.relative_to(ROOT)), task.get("name", "?"), hidden))
    return found


def test_the_specs_are_read() -> None:
    names = {dotted for _where, dotted, _spec in secret_options()}
    assert {"server_admin_password", "server_peers.password", "hotspot_passphrase"} <= names, names


@pytest.mark.parametrize(
    ("where", "option", "spec"), secret_options(), ids=[f"{w}:{d}" for w, d, _s in secret_options()]
)
def test_secret_options_are_no_log(where: str, option: str, spec: dict[str, Any]) -> None:
    assert spec.get("no_log") is True, f"{where} {option}: add `no_log: true` to its argument spec"


def test_secrets_reach_the_files_that_hold_them() -> None:
    secrets = secret_variables()
    assert {"server_users", "server_peers", "__server_all_users", "__server_ssl_key_text"} <= secrets, secrets
    written = {(file, name) for file, name, _hidden in writers_of_secrets()}
    assert ("roles/server/tasks/configure.yml", "Write the server configuration") in written, written
    assert ("roles/hotspot/tasks/configure.yml", "Configure the access point (hostapd)") in written, written


def test_files_holding_secrets_are_never_diffed() -> None:
    shown = [f"{file}: {name}" for file, name, hidden in writers_of_secrets() if not hidden]
    assert shown == [], "set `diff: false` (or `no_log: true`) on: " + "; ".join(shown)
