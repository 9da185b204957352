"""Shared pieces of the limits against hostile clients (issue 13, SECURITY.md): the largest
image drawn, and warnings about one address at most every few seconds, so that a flood does
not flood the log."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

# Largest width or height of an image drawn for a client: /instances/../rendered, the
# DICOMweb viewport and WADO-URI's rows and columns (a 30000-px request took 2.8 GB).
# 4096 px is a 4K screen's side; an 8-bit RGB image of that size is 50 MB.
MAX_IMAGE_SIZE = 4096

LOG_EVERY = 10.0  # seconds between two warnings about the same address


class AddressWarnings:
    """`warning(address, ...)`: logged unless the same address had one in `every` seconds."""

    def __init__(self, logger: logging.Logger, every: float = LOG_EVERY):
        self.logger = logger
        self.every = every
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def warning(self, address: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(address, -self.every) < self.every:
                return
            if len(self._last) > 10_000:  # many addresses: forget the old ones
                self._last = {a: t for a, t in self._last.items() if now - t < self.every}
            self._last[address] = now
        self.logger.warning(message, *args)
