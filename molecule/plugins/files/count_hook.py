"""A Python hook for pipacs deployed by the plugins role's test: it only logs."""

import logging

logger = logging.getLogger("pipacs.hooks.count")
logger.info("count hook loaded")
