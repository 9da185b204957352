"""HTTP access control: loopback-only access, HTTP Basic authentication (one decoder), and
the role of the client (UserRoles, AnonymousRole); what each role may do is http/access.py."""

from __future__ import annotations

import base64
import functools
import hmac
import ipaddress
import logging
from collections.abc import Callable
from typing import Any

import bottle

from .. import tls
from ..config.roles import ADMIN, STUDENT, networks
from ..context import ServerContext

logger = logging.getLogger(__name__)


def basic_header(user: str, password: str) -> str:
    """The Authorization value of HTTP Basic for these credentials."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of an HTTP Basic Authorization value; None when it is not one."""
    if not header.startswith("Basic "):
        return None
    try:
        user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return user, password


# The WSGI environment keys access_check sets: the user a request authenticated as, and
# the client's role (config/roles.py).
USER_KEY = "pipacs.user"
# The key of a request the server makes to itself, in process (no HTTP client can set it:
# a header becomes an HTTP_* key).
INTERNAL_KEY = "pipacs.internal"
ROLE_KEY = "pipacs.role"


def remote_user() -> str:
    """The user the request authenticated as: "" when AuthenticationEnabled is false, where
    an Authorization header is not checked, so its user name is not believed either."""
    return str(bottle.request.environ.get(USER_KEY, ""))


@functools.lru_cache(maxsize=1024)
def _is_loopback(addr: str) -> bool:
    try:
        return ipaddress.ip_address(addr.split("%")[0]).is_loopback
    except ValueError:
        return False


def _credential_headers(users: dict[str, str]) -> dict[str, str]:
    """The Authorization value each registered user's client sends, mapped to the user."""
    return {basic_header(user, password): user for user, password in users.items()}


def _log_refusal(header: str, users: dict[str, str], env: dict[str, Any]) -> None:
    """Log a refused login: the client and a registered user's name, never what was typed
    as a password (nor an unknown user name, which may be a password typed in that field)."""
    credentials = basic_credentials(header)
    user = credentials[0] if credentials else ""
    who = f"user {user!r}" if user in users else "an unknown user"
    logger.info("HTTP %s %s from %s: wrong credentials for %s", env.get("REQUEST_METHOD"),
                env.get("PATH_INFO"), env.get("REMOTE_ADDR"), who)


def _authorised(header: str, known: dict[str, str], users: dict[str, str]) -> str | None:
    """The registered user HTTP Basic names, if the password is right (else None). The
    usual encoding is a dictionary hit; anything else is decoded."""
    if header in known:
        return known[header]
    credentials = basic_credentials(header)
    if credentials is None:
        return None
    user, password = credentials
    expected = users.get(user)
    if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
        return None
    return user


def credentials_check(users: dict[str, str]) -> Callable[[str], bool]:
    """Whether an Authorization value names a registered user with the right password (for
    the HTTP channel, which refuses a large body without before reading it)."""
    credentials = _credential_headers(users)
    return lambda header: _authorised(header, credentials, users) is not None


def challenge(context: ServerContext) -> dict[str, str]:
    """The header that makes a browser ask for a login."""
    return {"WWW-Authenticate": f'Basic realm="{context.settings.name}"'}


def access_check(context: ServerContext) -> Callable[[dict[str, Any]], None]:
    """The check every request passes first: loopback only (RemoteAccessAllowed false),
    then the registered users (AuthenticationEnabled); it sets the client's role, which
    access.RoutePermission compares with each route's.

    A client without credentials is a student when AnonymousRole is "student" and its address
    is in AnonymousNetworks (or that list is empty); otherwise it must log in. A registered
    user's role is in UserRoles, "admin" when not listed (every user was an admin before
    roles existed). Wrong credentials are refused even where anonymous clients are let in.
    With AuthenticationEnabled false every client is the admin, as in Orthanc.

    Access control is decided once here, not on every request: with RemoteAccessAllowed
    false the server only listens on loopback (and the TLS front refuses other peers), so
    the address check is a second line of defence and is cached per address."""
    s = context.settings
    check_remote = not s.remote_access_allowed
    check_auth = s.authentication_enabled
    credentials = _credential_headers(s.registered_users) if check_auth else {}
    roles = {user: s.user_roles.get(user, ADMIN) for user in s.registered_users}
    anonymous = check_auth and s.anonymous_role == STUDENT
    anonymous_networks = networks(s.anonymous_networks)
    refusal = challenge(context)

    @functools.lru_cache(maxsize=1024)
    def anonymous_allowed(address: str) -> bool:
        if not anonymous_networks:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        return any(ip in net for net in anonymous_networks)

    def check(env: dict[str, Any]) -> None:
        if env.get(INTERNAL_KEY) is True:
            env[ROLE_KEY] = ADMIN  # the server calling its own API (Lua's RestApi*): no login
            return
        # Behind the TLS front, the client's own address and port replace the front's in
        # env: the log, the hooks and the instances' RemoteIP see the client.
        address = tls.real_address(context.tls_front, env)
        if check_remote and not _is_loopback(address):
            raise bottle.HTTPResponse(status=403, body="remote access is not allowed\n")
        if not check_auth:
            env[ROLE_KEY] = ADMIN
            return
        header = env.get("HTTP_AUTHORIZATION", "")
        if not header and anonymous and anonymous_allowed(address):
            env[ROLE_KEY] = STUDENT
            return
        user = _authorised(header, credentials, s.registered_users)
        if user is None:
            if header:  # a browser's first try comes without: nothing to report
                _log_refusal(header, s.registered_users, env)
            raise bottle.HTTPResponse(status=401, body="authentication required\n",
                                      headers=refusal)
        env[USER_KEY] = user
        env[ROLE_KEY] = roles[user]

    return check
