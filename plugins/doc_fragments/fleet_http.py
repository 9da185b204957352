# -*- coding: utf-8 -*-
"""The options every fleet module that calls pipacs' REST API takes (module_utils/fleet_http)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  url:
    description: Base URL of pipacs (http:// or https://).
    type: str
    default: http://127.0.0.1:8042
  ca_path:
    description: Over HTTPS, the certificate (PEM) that pipacs' certificate is verified against.
    type: path
  validate_certs:
    description: Over HTTPS, verify pipacs' certificate.
    type: bool
    default: true
  user:
    description: HTTP Basic user ("" without authentication).
    type: str
    default: ""
  password:
    description: Its password.
    type: str
    default: ""
"""
