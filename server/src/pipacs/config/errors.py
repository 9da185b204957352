"""The error a configuration that cannot be used raises, naming every bad key."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration cannot be used; `problems` names every bad key."""

    def __init__(self, problems: list[str], notes: list[str] | None = None):
        self.problems = problems
        self.notes = notes or []
        super().__init__("; ".join(problems))
