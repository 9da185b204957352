"""The roles of HTTP clients (UserRoles, AnonymousRole, AnonymousNetworks) and their checks."""

from __future__ import annotations

import ipaddress
from typing import Any

# From least to most: each role may do what the ones before it may.
STUDENT, TEACHER, ADMIN = "student", "teacher", "admin"
ROLES = (STUDENT, TEACHER, ADMIN)
RANK = {role: rank for rank, role in enumerate(ROLES)}


def networks(values: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """AnonymousNetworks parsed (host bits allowed: "10.42.0.1/24" is 10.42.0.0/24)."""
    return [ipaddress.ip_network(v, strict=False) for v in values]


def access_problems(settings: Any) -> list[str]:
    """What is wrong with UserRoles, AnonymousRole and AnonymousNetworks (one line each)."""
    problems = []
    for user, role in settings.user_roles.items():
        if role not in ROLES:
            problems.append(f"UserRoles.{user}: must be one of {', '.join(ROLES)}")
        elif user not in settings.registered_users:
            problems.append(f"UserRoles.{user}: not in RegisteredUsers")
    if settings.anonymous_role not in ("", STUDENT):
        problems.append('AnonymousRole: must be "" (no anonymous access) or "student"')
    for value in settings.anonymous_networks:
        try:
            networks([value])
        except ValueError:
            problems.append(f"AnonymousNetworks: {value!r} is not a network such as 10.42.0.0/24")
    return problems
