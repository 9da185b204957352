"""The pipacs command line, following Orthanc's."""

from __future__ import annotations

import argparse
import faulthandler
import gc
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path

from . import __version__
from . import config as config_mod

logger = logging.getLogger("pipacs")


# The options, in the order --help lists them: (flag, metavar of its value or None for a
# switch, help).
_OPTIONS = (
    ("--version", None, "print the version and exit"),
    (
        "--config",
        "FILE",
        "write a commented default configuration to FILE ('-' for standard output) and exit",
    ),
    ("--check", None, "validate CONFIGURATION and exit (non-zero when a key is wrong)"),
    ("--verbose", None, "log information messages"),
    ("--trace", None, "log everything, DICOM traffic too"),
    ("--logdir", "DIR", "also write the log to a file in DIR"),
    ("--upgrade", None, "migrate an index made by an older pipacs to this version's schema"),
    (
        "--reindex",
        None,
        "rebuild the index from the storage area (the old index is kept aside) and exit",
    ),
    (
        "--schema",
        None,
        "print, as JSON, the index's schema version and this release's, and whether "
        "starting with --upgrade would migrate it; then exit",
    ),
    (
        "--backup-index",
        "FILE",
        "copy the index to FILE (consistent, even while pipacs runs) and exit",
    ),
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pipacs",
        description="pipacs: a lightweight mini-PACS for classroom Raspberry Pis. "
        "CONFIGURATION is an Orthanc-style JSON file or a folder of them.",
    )
    p.add_argument("configuration", nargs="?", metavar="CONFIGURATION")
    for flag, metavar, text in _OPTIONS:
        if metavar is None:
            p.add_argument(flag, action="store_true", help=text)
        else:
            p.add_argument(flag, metavar=metavar, help=text)
    return p


# Control characters (line breaks among them) in a message: a client's path, AET or name
# with "\r\n" in it would otherwise write a line of its own making into the log.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


class EscapingFormatter(logging.Formatter):
    """One record, one line: control characters in the message are escaped ("\\n", "\\x1b").
    A traceback, added after the message, keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _CONTROL.sub(_escape, record.message)
        return super().formatMessage(record)


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.trace else logging.INFO if args.verbose else logging.WARNING
    fmt = EscapingFormatter("%(levelname).1s %(asctime)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.logdir:
        Path(args.logdir).mkdir(parents=True, exist_ok=True)
        name = time.strftime("pipacs-%Y%m%d-%H%M%S.log")
        handlers.append(logging.FileHandler(Path(args.logdir) / name))
    for handler in handlers:
        handler.setFormatter(fmt)
    logging.basicConfig(level=level, handlers=handlers, force=True)
    if not args.trace:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        print(f"pipacs {__version__}")
        return 0
    if args.config:
        text = config_mod.default_configuration_text()
        if args.config == "-":
            sys.stdout.write(text)
        else:
            Path(args.config).write_text(text, encoding="utf-8")
        return 0
    _setup_logging(args)
    if args.check:
        return check(args.configuration)
    try:
        settings, notes = config_mod.load_or_default(args.configuration)
    except config_mod.ConfigError as e:
        for problem in e.problems:
            logger.error("configuration: %s", problem)
        for note in e.notes:
            logger.warning("configuration: %s", note)
        return 2
    for note in notes:
        logger.warning("configuration: %s", note)
    if args.configuration is None:
        logger.warning("no configuration given: running on the defaults")
    if args.reindex:
        return _reindex(settings)
    if args.schema or args.backup_index:
        return _maintenance(settings, args)
    from .index import IndexError_
    from .server import Server

    # `kill -USR1` (systemctl kill -s USR1 pipacs) writes every thread's stack to stderr (the
    # journal): what a server that stopped answering is waiting for.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    t0 = time.monotonic()
    try:
        server = Server(settings, upgrade=args.upgrade)
    except IndexError_ as e:
        logger.error("%s", e)
        return 3
    try:
        server.start()
    except OSError as e:
        logger.error("cannot start: %s", e)
        server.stop()
        return 4
    # What the start built (modules, pydicom's dictionaries, the routes) stays for the whole
    # run: moved out of the collector's sight, a full collection (after associations end, or
    # Python's own) no longer walks it: 12 ms -> under 0.1 ms on the test machine.
    gc.collect()
    gc.freeze()
    logger.warning(
        "pipacs %s has started in %.2f s (DICOM %s:%d, HTTP %d)",
        __version__,
        time.monotonic() - t0,
        settings.dicom_aet,
        settings.dicom_port,
        settings.http_port,
    )
    server.wait()
    return 0


def _reindex(settings: config_mod.Settings) -> int:
    from .index import IndexError_
    from .reindex import reindex

    try:
        report = reindex(settings)
    except IndexError_ as e:
        logger.error("%s", e)
        return 3
    print(report.summary())
    return 0


def _maintenance(settings: config_mod.Settings, args: argparse.Namespace) -> int:
    from . import maintenance

    try:
        if args.backup_index:
            info = maintenance.backup_index(settings, args.backup_index)
        else:
            info = maintenance.schema_info(settings)
    except maintenance.MaintenanceError as e:
        logger.error("%s", e)
        return 3
    print(maintenance.dumps(info))
    return 0


def check(path: str | None) -> int:
    """Validate a configuration: every bad key on stderr, exit 0 when it can be used."""
    if path is None:
        print("pipacs --check: give the configuration file to check", file=sys.stderr)
        return 2
    try:
        _, notes = config_mod.load(path, environ=os.environ)
    except config_mod.ConfigError as e:
        print(f"{path}: {len(e.problems)} error(s):", file=sys.stderr)
        for problem in e.problems:
            print(f"  error: {problem}", file=sys.stderr)
        for note in e.notes:
            print(f"  notice: {note}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"  notice: {note}", file=sys.stderr)
    print(f"{path}: configuration OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
