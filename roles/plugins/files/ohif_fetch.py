#!/usr/bin/env python3
"""Fetch an OHIF Viewer build from the npm registry once, for Pis that never go online.

    ohif_fetch.py DEST [--version 3.13.2] [--registry https://registry.npmjs.org]

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--version", default="3.13.2")
    ap.add_argument("--registry", default="https://registry.npmjs.org")
    args = ap.parse_args()
    final = args.dest / args.version
    if (final / ".complete").is_file():
        print(final)
        return 0
    meta = json.loads(fetch(f"{args.registry}/@ohif%2fapp/{args.version}"))
    dist = meta["dist"]
    algorithm, _, expected = dist["integrity"].partition("-")
    if algorithm != "sha512":
        raise SystemExit(f"@ohif/app {args.version}: unexpected integrity {dist['integrity']}")
    tarball = fetch(dist["tarball"])
    digest = base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if digest != expected:
        raise SystemExit(f"@ohif/app {args.version}: the tarball does not match the registry's "
                         "sha512: not unpacked")
    args.dest.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{args.version}-", dir=args.dest))
    try:
        unpack(tarball, work)
        if not (work / "index.html").is_file():
            raise SystemExit(f"@ohif/app {args.version} has no dist/index.html: not a build")
        (work / ".complete").write_text(f"{dist['integrity']}\npublic path read at run time\n")
        if final.exists():
            shutil.rmtree(final)
        work.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(final)
    return 0


if __name__ == "__main__":
    sys.exit(main())
