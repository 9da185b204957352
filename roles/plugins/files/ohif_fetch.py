#!/usr/bin/env python3
"""Fetch an OHIF Viewer build from the npm registry once, for Pis that never go online.

    ohif_fetch.py DEST [--version 3.13.2] [--registry https://registry.npmjs.org] [--pack]

Downloads `@ohif/app`'s published tarball, checks it against the registry's sha512
integrity, and unpacks its `dist/` into DEST/<version>/ without the source maps (24 files
nobody on a Pi reads), then writes a `.gz` next to every compressible file (JavaScript, CSS,
WebAssembly, JSON), which pipacs sends to browsers that accept gzip: the Pi never compresses.

One change to the build: its bundles load their chunks from the public path "/" fixed when
OHIF was built; here it is read when the page runs, from `window.PUBLIC_URL` (which pipacs
sets to the basename it serves OHIF under) or, in a web worker, from the worker's own URL,
so the same files work under /ohif/ or any other basename.
Runs on the controller (the plugins role, `make setup` for the tests). Idempotent: a complete
DEST/<version>/ (it holds `.complete`) is left as it is. Prints the folder.

--pack also writes DEST/<version>.tar.gz for the Pis (one transfer instead of a copy per
file): names sorted, owner 0, every mtime that of `.complete` (the fetch's time: a refetched
build gets new ETags on the Pi), gzip without a time stamp, so packing the same build again
gives the same bytes. A fetch removes a stale tarball. Prints the tarball instead.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

COMPRESSIBLE = (".js", ".css", ".wasm", ".json", ".jsonc", ".svg", ".xml")
FIXED_PUBLIC_PATH = b'__webpack_require__.p = "/"'
RUNTIME_PUBLIC_PATH = (b'__webpack_require__.p = (self.PUBLIC_URL || self.location.pathname'
                       b'.replace(/[^/]*$/, "") || "/")')
TIMEOUT = 120


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
        return answer.read()


def unpack(tarball: bytes, into: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("package/")
            if not name.startswith("dist/") or name.endswith(".map"):
                continue
            if not (member.isfile() or member.isdir()) or ".." in Path(name).parts:
                continue  # no links, devices or paths out of the folder
            rel = Path(name).relative_to("dist")
            target = into / rel
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            data = source.read()
            if target.suffix == ".js":
                data = data.replace(FIXED_PUBLIC_PATH, RUNTIME_PUBLIC_PATH)
            target.write_bytes(data)
            if target.suffix in COMPRESSIBLE and member.size > 1024:
                target.with_name(target.name + ".gz").write_bytes(
                    gzip.compress(target.read_bytes(), compresslevel=9, mtime=0))


def pack(build: Path, tarball: Path) -> None:
    """The build as a reproducible .tar.gz (see the module's docstring), written atomically."""
    mtime = int((build / ".complete").stat().st_mtime)
    paths = sorted((p for p in build.rglob("*") if p.name != ".complete"),
                   key=lambda p: p.relative_to(build).as_posix())
    part = tarball.with_name(tarball.name + ".part")
    with part.open("wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            if not (path.is_file() or path.is_dir()) or path.is_symlink():
                continue
            info = tar.gettarinfo(str(path), arcname=path.relative_to(build).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = mtime
            info.mode = 0o755 if info.isdir() else 0o644
            if info.isdir():
                tar.addfile(info)
            else:
                with path.open("rb") as data:
                    tar.addfile(info, data)
    part.rename(tarball)


def fetch_build(dest: Path, version: str, registry: str) -> Path:
    """DEST/<version>/ complete, fetched when it is not."""
    final = dest / version
    if (final / ".complete").is_file():
        return final
    try:
        meta = json.loads(fetch(f"{registry}/@ohif%2fapp/{version}"))
        dist = meta["dist"]
        algorithm, _, expected = dist["integrity"].partition("-")
        if algorithm != "sha512":
            raise SystemExit(f"@ohif/app {version}: unexpected integrity {dist['integrity']}")
        tarball = fetch(dist["tarball"])
    except (OSError, ValueError, KeyError) as error:  # URLError is an OSError
        reason = getattr(error, "reason", None) or error
        raise SystemExit(f"@ohif/app {version} could not be fetched from {registry} ({reason}) "
                         f"and {final} holds no complete build") from None
    digest = base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != expected:
        raise SystemExit(f"@ohif/app {version}: the tarball does not match the registry's "
                         "sha512: not unpacked")
    dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=dest))
    try:
        unpack(tarball, work)
        if not (work / "index.html").is_file():
            raise SystemExit(f"@ohif/app {version} has no dist/index.html: not a build")
        (work / ".complete").write_text(f"{dist['integrity']}\npublic path read at run time\n")
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
        dest.joinpath(f"{version}.tar.gz").unlink(missing_ok=True)  # packed from another build
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--version", default="3.13.2")
    ap.add_argument("--registry", default="https://registry.npmjs.org")
    ap.add_argument("--pack", action="store_true",
                    help="also write DEST/VERSION.tar.gz (reproducible) and print its path")
    args = ap.parse_args()
    final = fetch_build(args.dest, args.version, args.registry.rstrip("/"))
    if not args.pack:
        print(final)
        return 0
    tarball = args.dest / f"{args.version}.tar.gz"
    if not tarball.is_file():
        pack(final, tarball)
    print(tarball)
    return 0


if __name__ == "__main__":
    sys.exit(main())
