"""HTTP access control: loopback-only access and HTTP Basic authentication (one decoder)."""

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


# The WSGI environment key access_check sets to the user a request authenticated as.
USER_KEY = "pipacs.user"
# The key of a request the server makes to itself, in process (no HTTP client can set it:
# a header becomes an HTTP_* key).
INTERNAL_KEY = "pipacs.internal"


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


def access_check(context: ServerContext) -> Callable[[dict[str, Any]], None]:
    """The check every request passes first: loopback only (RemoteAccessAllowed false),
    then the registered users (AuthenticationEnabled).

    Access control is decided once here, not on every request: with RemoteAccessAllowed
    false the server only listens on loopback (and the TLS front refuses other peers), so
    the address check is a second line of defence and is cached per address."""
    s = context.settings
    check_remote = not s.remote_access_allowed
    check_auth = s.authentication_enabled
    credentials = _credential_headers(s.registered_users) if check_auth else {}
    challenge = {"WWW-Authenticate": f'Basic realm="{s.name}"'}

    def check(env: dict[str, Any]) -> None:
        if env.get(INTERNAL_KEY) is True:
            return  # the server calling its own API (Lua's RestApi*): no client, no login
        # Behind the TLS front, the client's own address and port replace the front's in
        # env: the log, the hooks and the instances' RemoteIP see the client.
        address = tls.real_address(context.tls_front, env)
        if check_remote and not _is_loopback(address):
            raise bottle.HTTPResponse(status=403, body="remote access is not allowed\n")
        if check_auth:
            header = env.get("HTTP_AUTHORIZATION", "")
            user = _authorised(header, credentials, s.registered_users)
            if user is None:
                if header:  # a browser's first try comes without: nothing to report
                    _log_refusal(header, s.registered_users, env)
                raise bottle.HTTPResponse(status=401, body="authentication required\n",
                                          headers=challenge)
            env[USER_KEY] = user

    return check
