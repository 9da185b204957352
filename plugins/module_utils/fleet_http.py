# -*- coding: utf-8 -*-
"""pipacs' REST API on the Pi's loopback, for the fleet modules (through ansible.module_utils.urls)."""

from __future__ import annotations

import json
from urllib.error import HTTPError, URLError

from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url


class PacsError(Exception):
    """pipacs did not answer as expected; the message says what to check, code is the HTTP status."""

    def __init__(self, message, code=None):
        Exception.__init__(self, message)
        self.code = code


class Pacs(object):
    """HTTP calls to one pipacs, with HTTP Basic authentication when a user is given.

    No proxy and no ~/.netrc: pipacs answers on the Pi itself, with the fleet's account. Over
    HTTPS, its certificate is verified against ca_path (the server role's certificate.pem)
    unless validate_certs is false.
    """

    def __init__(self, url, user, password, timeout, ca_path=None, validate_certs=True):
        self.url = url.rstrip("/")
        self.user = user
        self.password = password
        self.timeout = timeout
        self.ca_path = ca_path or None
        self.validate_certs = validate_certs

    def call(self, method, path, body=None, ok_missing=False, content_type="application/json"):
        """The answer as JSON (or text when it is not JSON); None for a 404 when ok_missing."""
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            answer = open_url(
                self.url + path, data=body, method=method, headers=headers, timeout=self.timeout,
                url_username=self.user or None, url_password=self.password if self.user else None,
                force_basic_auth=bool(self.user), use_proxy=False, use_netrc=False,
                validate_certs=self.validate_certs, ca_path=self.ca_path)
            raw = answer.read()
        except HTTPError as e:
            if e.code == 404 and ok_missing:
                return None
            if e.code == 401:
                raise PacsError("pipacs refused the HTTP account (401): check fleet_http_user/password", 401) from None
            detail = e.read()[:300].decode("utf-8", "replace")
            raise PacsError("%s %s answered %s: %s" % (method, path, e.code, detail), e.code) from None
        except (URLError, UrlsConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise PacsError("pipacs does not answer at %s (%s %s): %s" % (self.url, method, path, reason)) from None
        text = raw.decode("utf-8", "replace")
        try:
            return json.loads(text) if text.strip() else ""
        except ValueError:
            return text

    def get_json(self, path):
        """GET path and insist on a JSON object or list."""
        answer = self.call("GET", path)
        if not isinstance(answer, (dict, list)):
            raise PacsError("GET %s did not answer JSON" % path)
        return answer
