"""DICOMweb latencies, pipacs next to Orthanc 1.10 with its DICOMweb plugin.

Both servers get the same 110 studies over DICOM (storescu): 100 small studies of 20
instances (``make_small(patients=50)``), one large study of 50 instances and nine of 10
(``make_large``). Then, per server, with one keep-alive HTTP connection:

* QIDO-RS ``GET /dicom-web/studies`` (all 110 studies): median of ``--runs`` calls;
* WADO-RS ``GET /dicom-web/studies/{uid}/metadata`` of the 50-instance study: the first
  call (files read; pipacs then caches) and the median of the following ones; then the
  first call of each 10-instance study (median of the nine, steadier than one call);
* pipacs only: the metadata of every study, then the size of its metadata cache
  (``IndexDirectory/dicomweb-series``, one file per series) next to what the per-instance
  layout before it took for the same metadata (one ``uuid length`` line and the DICOM JSON
  per instance, one file each).

With ``--no-metadata-cache`` pipacs runs with ``EnableMetadataCache`` false, so that every
metadata call reads the files as a first call does (a steadier figure than one first call);
Debian's DICOMweb plugin (1.7) keeps no metadata cache of its own either way.

Usage: ``.venv/bin/python bench/dicomweb.py [--runs 20] [--only pipacs|orthanc] [--keep]
[--no-metadata-cache]``.
Compare ratios taken in the same run (the machine is noisy, see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib
import datagen
import ingest

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class Server(ingest.Server):
    """ingest's server, with the DICOMweb plugin (Orthanc's library, pipacs' built-in)."""

    metadata_cache = True

    def config(self) -> dict[str, object]:
        cfg = super().config()
        cfg["Plugins"] = [PLUGIN]
        web: dict[str, object] = {"Enable": True}
        if self.kind == "pipacs":  # Orthanc's plugin 1.7 has no such cache (it came in 1.15)
            web["EnableMetadataCache"] = self.metadata_cache
        cfg["DicomWeb"] = web
        return cfg


def make_data(folder: Path) -> tuple[list[Path], list[str]]:
    """The 110 studies' files and the UIDs of the 50-instance study then of the nine
    10-instance ones."""
    small = datagen.make_small(folder / "small", patients=50, seed=1)
    big = datagen.make_large(folder / "big", count=50, studies=1, seed=2)
    large = datagen.make_large(folder / "large", count=90, studies=9, seed=3)
    import pydicom

    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID)
            for f in [big[0], *large]]
    return [*small, *big, *large], list(dict.fromkeys(uids))


def timed(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    r = client.get(url, headers=headers)
    elapsed = time.perf_counter() - t0
    r.raise_for_status()
    return elapsed, r.content


def measure(kind: str, workdir: Path, files: list[Path], large_studies: list[str],
            runs: int, cache: bool = True) -> dict[str, float]:
    srv = Server(kind, workdir)
    srv.metadata_cache = cache
    srv.start()
    try:
        seconds, errors = ingest.send(srv.dicom_port, [files])
        if errors:
            raise RuntimeError(f"{kind}: storing failed: {errors}")
        n, _ = srv.wait_count(len(files))
        print(f"  {kind}: {n} instances stored in {seconds:.1f} s")
        base = f"http://{ingest.LOOPBACK}:{srv.http_port}/dicom-web"
        accept = {"Accept": "application/dicom+json"}
        out: dict[str, float] = {}
        with httpx.Client(timeout=120) as client:
            studies = []
            for _ in range(runs):
                t, body = timed(client, base + "/studies", accept)
                studies.append(t)
            count = body.count(b'"0020000D"')
            if count != 110:
                print(f"  ! {kind}: /studies answered {count} studies, not 110")
            out["QIDO /studies, 110 studies (median)"] = statistics.median(studies) * 1000
            url = f"{base}/studies/{large_studies[0]}/metadata"
            first, body = timed(client, url, accept)
            if body.count(b'"00080018"') != 50:
                print(f"  ! {kind}: metadata of the large study does not hold 50 instances")
            again = [timed(client, url, accept)[0] for _ in range(runs)]
            out["WADO-RS metadata, 50 instances, first call"] = first * 1000
            out["WADO-RS metadata, 50 instances (median after)"] = statistics.median(again) * 1000
            firsts = [timed(client, f"{base}/studies/{uid}/metadata", accept)[0]
                      for uid in large_studies[1:]]
            out["WADO-RS metadata, 10 instances, first call (median of 9)"] = (
                statistics.median(firsts) * 1000)
            if kind == "pipacs" and cache:
                out.update(cache_sizes(client, base, accept, srv.workdir / "index"))
        return out
    finally:
        srv.stop()


def cache_sizes(client: httpx.Client, base: str, accept: dict[str, str],
                index: Path) -> dict[str, float]:
    """pipacs' metadata cache once every study was asked for, beside the old layout's."""
    from pipacs.plugins.dicomweb_metadata import CACHE_FOLDER, decode_entry

    studies = json.loads(client.get(base + "/studies?includefield=00201206",
                                    headers=accept).content)
    series = 0
    for study in studies:
        uid = study["0020000D"]["Value"][0]
        client.get(f"{base}/studies/{uid}/metadata", headers=accept).raise_for_status()
        series += int(study.get("00201206", {}).get("Value", [0])[0])
    folder = index / CACHE_FOLDER
    files: list[Path] = []
    deadline = time.monotonic() + 60  # written in the background
    while time.monotonic() < deadline:
        files = [f for f in folder.rglob("*") if f.is_file() and not f.name.startswith(".")]
        if len(files) >= series:
            break
        time.sleep(0.2)
    old_bytes = old_disk = instances = 0
    for f in files:
        for uuid, text in (decode_entry(f.read_bytes(), f.name) or {}).values():
            one = len(f"{uuid} {len(text)}\n{text}".encode())
            instances += 1
            old_bytes += one
            old_disk += -(-one // 4096) * 4096
    new_bytes = sum(f.stat().st_size for f in files)
    print(f"  pipacs: metadata cache of {instances} instances in {len(files)} files "
          f"(series: {series}): {new_bytes / 1e6:.2f} MB ({benchlib.dir_size(folder) / 1e6:.2f}"
          f" MB on disk); per-instance layout: {instances} files, {old_bytes / 1e6:.2f} MB "
          f"({old_disk / 1e6:.2f} MB in 4 KB blocks)")
    return {"metadata cache, bytes per instance": new_bytes / max(instances, 1),
            "per-instance layout, bytes per instance": old_bytes / max(instances, 1),
            "cache size ratio (old / new, bytes)": old_bytes / max(new_bytes, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20, help="calls per measure (default 20)")
    ap.add_argument("--only", choices=["orthanc", "pipacs"], help="one server only")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--no-metadata-cache", action="store_true",
                    help="pipacs' EnableMetadataCache false: every metadata call reads the files")
    args = ap.parse_args(argv)
    kinds = [args.only] if args.only else ["orthanc", "pipacs"]
    tmp = Path(tempfile.mkdtemp(prefix="bench-dicomweb-"))
    try:
        print(f"data in {tmp} ...")
        files, large_studies = make_data(tmp / "data")
        results = {}
        for kind in kinds:
            results[kind] = measure(kind, tmp / kind, files, large_studies, args.runs,
                                    not args.no_metadata_cache)
        keys = list(dict.fromkeys(k for r in results.values() for k in r))
        width = max(len(k) for k in keys)
        print()
        print(f"{'ms':<{width}}  " + "  ".join(f"{k:>9}" for k in kinds)
              + ("  pipacs/orthanc" if len(kinds) == 2 else ""))
        for key in keys:
            row = f"{key:<{width}}  " + "  ".join(
                f"{results[k][key]:9.1f}" if key in results[k] else f"{'-':>9}" for k in kinds)
            if len(kinds) == 2 and all(key in results[k] for k in kinds):
                row += f"  {results['pipacs'][key] / results['orthanc'][key]:14.2f}"
            print(row)
    finally:
        benchlib.remove_or_keep(tmp, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
