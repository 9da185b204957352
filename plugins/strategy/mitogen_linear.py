"""Ansible's linear strategy run through Mitogen for Ansible, found without a venv path.

Mitogen's own strategy plugins live inside its Python package, whose folder depends on where
the controller's venv is and on its Python version; ansible.cfg points ``strategy_plugins``
at this folder instead and names this strategy as the default (``strategy``);
``ANSIBLE_STRATEGY=linear`` runs Ansible's own (roles/fleet/README.md, "Speed"). Mitogen
(``mitogen`` in requirements.txt) must be importable by the Python that runs
ansible-playbook; the error below says so when it is not.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: mitogen_linear
short_description: the linear strategy with Mitogen's connections (one Python per host)
description:
  - Every host runs each task before the next task starts, as with ansible.builtin.linear,
    but through Mitogen for Ansible, which keeps one Python interpreter per host for the
    whole run instead of starting one per module.
  - Needs the mitogen package (requirements.txt). Mitogen takes over only the short
    connection names (ssh, local, podman, ...).
author: PiPACS contributors
"""

try:
    import ansible_mitogen.loaders
    import ansible_mitogen.strategy
except ImportError as exc:  # pragma: no cover - depends on the controller's venv
    from ansible.errors import AnsibleError

    raise AnsibleError(
        "the mitogen_linear strategy needs Mitogen for Ansible in the controller's Python: "
        ".venv/bin/pip install -r requirements.txt (or set ANSIBLE_STRATEGY=linear to run "
        f"Ansible's own strategy): {exc}"
    ) from exc

_Linear = ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, _Linear):
    """Mitogen's connection and action wrappers around the linear strategy."""

    def run(self, iterator, play_context):  # type: ignore[no-untyped-def]
        # Each task runs in a worker forked from this process, and each worker would list every
        # Jinja filter and test plugin again the first time it templates. Listed here once,
        # they are inherited by every fork.
        from ansible.plugins.loader import filter_loader, test_loader

        for loader in (filter_loader, test_loader):
            for _plugin in loader.all():
                pass
        return super().run(iterator, play_context)
