"""Fleet jobs on three simulated classroom Pis, run from the controller as staff would.

The tests run in order and build on each other (the scenario's verify step runs them once):
config.yml, upgrade.yml to a newer build and then to a broken one, backup.yml and
restore.yml, content.yml and report.yml. Every playbook run is timed; the timings are
written to .cache/molecule-logs/fleet-timings.txt (and printed by the last test).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import testinfra
from pipacs_molecule import PlaybookRun, run_playbook
from pipacs_probe import container_ip, echoscu, http_json, sample_instance, storescu

NAMES = ["pipacs-fleet-1", "pipacs-fleet-2", "pipacs-fleet-3"]
AETS = {name: f"PACS_F{name[-1]}" for name in NAMES}
ADMIN = ("admin", "example-teacher-password")
HTTP_PORT, DICOM_PORT = 8042, 4242
EPHEMERAL = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/tmp"))
PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
TIMINGS: list[tuple[str, float, str]] = []
PER_HOST = re.compile(r"^(?P<host>pipacs-fleet-\d)\s*:\s*ok=\d+\s+changed=(?P<changed>\d+)", re.MULTILINE)


@pytest.fixture(scope="module")
def pis():
    return {name: testinfra.get_host(f"podman://{name}") for name in NAMES}


def play(label: str, playbook: str, *args: str, timeout: int = 1200) -> PlaybookRun:
    """Run one of the repository's playbooks against the fleet and time it."""
    start = time.monotonic()
    run = run_playbook(PROJECT / "playbooks" / playbook, *args, timeout=timeout)
    recap = run.recap()
    TIMINGS.append((label, time.monotonic() - start, f"rc={run.returncode} changed={recap['changed']}"))
    (EPHEMERAL / f"fleet-{len(TIMINGS):02d}-{playbook}.log").write_text(run.output)
    return run


def changed_by_host(run: PlaybookRun) -> dict[str, int]:
    """changed= of each host in the PLAY RECAP."""
    return {m["host"]: int(m["changed"]) for m in PER_HOST.finditer(run.output)}


def main_pid(host) -> int:
    return int(host.check_output("systemctl show --property=MainPID --value pipacs"))


def release(host) -> str:
    return host.check_output("readlink /opt/pipacs/current")


def version(host) -> str:
    return host.check_output("/opt/pipacs/current/bin/pipacs --version")


def schema(host) -> dict:
    return json.loads(host.check_output("/opt/pipacs/current/bin/pipacs --schema /etc/pipacs"))


def stats(host) -> dict:
    return http_json(host, HTTP_PORT, "/statistics", *ADMIN)


def healthy(name: str, host) -> None:
    """What the health checks look at, seen from outside: C-ECHO from the controller, HTTP."""
    assert host.service("pipacs").is_running, name
    echo = echoscu(container_ip(name), DICOM_PORT, AETS[name])
    assert echo.returncode == 0, (name, echo.stderr)
    assert http_json(host, HTTP_PORT, "/changes?last", *ADMIN)["Last"] >= 0


def wait_until_serving(name: str, host, timeout: float = 120) -> None:
    """After a start by hand: wait (not a timing check) until pipacs answers, then check it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if echoscu(container_ip(name), DICOM_PORT, AETS[name]).returncode == 0:
            break
        time.sleep(2)
    healthy(name, host)


def storage_sums(host) -> list[str]:
    """sha256 and path (relative to the storage folder) of every stored file."""
    out = host.check_output(
        "cd /var/lib/pipacs/storage && find . -mindepth 3 -maxdepth 3 -path './[0-9a-f][0-9a-f]/*' -type f"
        " -print0 | sort -z | xargs -0 --no-run-if-empty sha256sum"
    )
    return out.splitlines()


def make_build(name: str, base: Path, version_: str, broken: bool = False) -> Path:
    """A copy of the server source with a new version and one more index migration; a broken
    build also exits just after opening (and migrating) the index, so it never answers."""
    dst = EPHEMERAL / f"server-src-{name}"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(base, dst)
    init = dst / "src" / "pipacs" / "__init__.py"
    text = re.sub(r'__version__ = "[^"]+"', f'__version__ = "{version_}"', init.read_text())
    init.write_text(text)
    index = dst / "src" / "pipacs" / "index" / "schema.py"
    marker = "\n]\nSCHEMA_VERSION = len(MIGRATIONS)"
    text = index.read_text()
    assert marker in text, "index/schema.py changed shape: update make_build"
    table = "fleet_test_" + re.sub(r"\W", "_", version_)
    index.write_text(text.replace(marker, f'\n    "CREATE TABLE {table}(x INTEGER);",{marker}'))
    if broken:
        cli = dst / "src" / "pipacs" / "cli.py"
        marker = "    try:\n        server.start()"
        text = cli.read_text()
        assert marker in text, "cli.py changed shape: update make_build"
        cli.write_text(text.replace(marker, "    os._exit(5)  # deliberately broken (molecule/fleet)\n" + marker))
    return dst


STATE: dict[str, object] = {}


def test_site_converged_the_fleet(pis):
    # Molecule reuses the ephemeral folder between runs: backups and reports start afresh.
    shutil.rmtree(EPHEMERAL / "fleet-data", ignore_errors=True)
    releases = {release(h) for h in pis.values()}
    assert len(releases) == 1, releases
    STATE["release0"] = releases.pop()
    STATE["schema0"] = schema(pis[NAMES[0]])["Index"]
    # Some studies on every Pi before the jobs run: nothing may be lost on the way.
    for name, host in pis.items():
        files = [EPHEMERAL / f"{name}-{i}.dcm" for i in range(3)]
        for i, path in enumerate(files):
            sample_instance(path, patient_id=f"FLEET-{name[-1]}-{i}", name=f"Fleet^{name[-1]}")
        store = storescu(container_ip(name), DICOM_PORT, AETS[name], *files)
        assert store.returncode == 0, store.stderr
        healthy(name, host)
    STATE["counts"] = {name: stats(h)["CountInstances"] for name, h in pis.items()}
    assert all(n >= 3 for n in STATE["counts"].values())


def test_config_change_restarts_only_where_it_changed(pis):
    pids = {name: main_pid(h) for name, h in pis.items()}
    extra = EPHEMERAL / "fleet-extra-inventory.yml"
    extra.write_text("all:\n  hosts:\n    pipacs-fleet-2:\n      server_stable_age: 30\n")
    run = play("config.yml (one Pi's setting changed)", "config.yml", "--inventory", str(extra))
    assert run.returncode == 0, run.output
    changed = changed_by_host(run)
    assert changed["pipacs-fleet-2"] > 0 and changed["pipacs-fleet-1"] == changed["pipacs-fleet-3"] == 0, changed
    after = {name: main_pid(h) for name, h in pis.items()}
    assert after["pipacs-fleet-1"] == pids["pipacs-fleet-1"] and after["pipacs-fleet-3"] == pids["pipacs-fleet-3"]
    assert after["pipacs-fleet-2"] != pids["pipacs-fleet-2"]
    assert '"StableAge": 30' in pis["pipacs-fleet-2"].file("/etc/pipacs/server.json").content_string
    # Rolling: the canary Pi, then a quarter at a time (at least one): three batches.
    assert run.output.count("PLAY [Configuration of the PACS servers, rolling]") == 3
    for name, host in pis.items():
        healthy(name, host)

    again = play("config.yml --check --diff (nothing to change)", "config.yml", "--inventory", str(extra),
                 "--check", "--diff")
    assert again.returncode == 0, again.output
    assert again.recap()["changed"] == 0, again.output
    assert {name: main_pid(h) for name, h in pis.items()} == after


def test_upgrade_to_a_newer_build(pis):
    source = make_build("next", EPHEMERAL / "server-src", "0.99.1")
    args = ["-e", f"server_source_dir={source}", "-e", f"server_build_dir={EPHEMERAL}/build-next"]
    before = {name: release(h) for name, h in pis.items()}
    check = play("upgrade.yml --check (tells, changes nothing)", "upgrade.yml", *args, "--check")
    assert check.returncode == 0, check.output
    assert all(n > 0 for n in changed_by_host(check).values()), check.output
    assert {name: release(h) for name, h in pis.items()} == before
    run = play("upgrade.yml to a newer build (index migration)", "upgrade.yml", *args)
    assert run.returncode == 0, run.output
    assert run.output.count("PLAY [Switch the PACS Pis to the new release, canary first]") == 3
    for name, host in pis.items():
        assert version(host) == "pipacs 0.99.1", name
        info = schema(host)
        assert info["Index"] == info["Release"] == STATE["schema0"] + 1, (name, info)
        backups = host.check_output("ls /var/lib/pipacs/index-backups").split()
        assert len(backups) == 1 and backups[0].startswith("index-"), (name, backups)
        assert stats(host)["CountInstances"] == STATE["counts"][name]
        healthy(name, host)
        releases = host.check_output("ls /opt/pipacs/releases").split()
        assert len(releases) == 2, releases  # the new one, and the previous for a rollback
    STATE["release1"] = release(pis[NAMES[0]])

    again = play("upgrade.yml again (nothing to do)", "upgrade.yml", *args)
    assert again.returncode == 0, again.output
    assert again.recap()["changed"] == 0, again.output


def test_a_broken_build_is_rolled_back_on_the_canary(pis):
    before = {name: (release(h), version(h), schema(h)["Index"], stats(h)["CountInstances"]) for name, h in pis.items()}
    source = make_build("broken", EPHEMERAL / "server-src-next", "0.99.2", broken=True)
    run = play(
        "upgrade.yml to a broken build (canary rolled back)",
        "upgrade.yml",
        "-e", f"server_source_dir={source}",
        "-e", f"server_build_dir={EPHEMERAL}/build-broken",
        "-e", "fleet_upgrade_health_timeout=20",
    )
    assert run.returncode != 0, run.output
    assert "failed its health check and was rolled back" in run.output
    assert "index restored from" in run.output
    # Only the canary batch ran: the rollout stopped there.
    assert run.output.count("PLAY [Switch the PACS Pis to the new release, canary first]") == 1
    # Every Pi is as it was: release, index schema and data; and it serves.
    for name, host in pis.items():
        assert (release(host), version(host), schema(host)["Index"], stats(host)["CountInstances"]) == before[name]
        healthy(name, host)


def backups_of(name: str) -> list[Path]:
    """The complete backups of one Pi on the controller, oldest first."""
    folder = EPHEMERAL / "fleet-data" / "backups" / name
    return sorted(p for p in folder.glob(f"{name}-*") if p.is_dir() and not p.name.endswith(".partial"))


def test_backup_refused_when_the_controller_lacks_room(pis):
    pid = main_pid(pis["pipacs-fleet-1"])
    run = play("backup.yml refused (no room on the controller)", "backup.yml",
               "-e", "fleet_backup_min_free_mb=999999999")
    assert run.returncode != 0, run.output
    message = " ".join(run.output.split())
    assert re.search(r"The controller has [\d.]+ MB free in \S+; the backups of this run bring [\d.]+ MB "
                     r"\(pipacs-fleet-1 [\d.]+ MB, pipacs-fleet-2 [\d.]+ MB, pipacs-fleet-3 [\d.]+ MB\)", message), message
    assert "Nothing was changed" in message
    assert run.recap()["changed"] == 0, run.output
    assert main_pid(pis["pipacs-fleet-1"]) == pid, "pipacs was stopped for a backup that could not fit"
    assert backups_of("pipacs-fleet-1") == []


def test_backup_then_restore_onto_a_new_sd_card(pis):
    source, target = pis["pipacs-fleet-1"], pis["pipacs-fleet-3"]
    run = play("backup.yml (one Pi)", "backup.yml", "--limit", "pipacs-fleet-1")
    assert run.returncode == 0, run.output
    archives = backups_of("pipacs-fleet-1")
    assert len(archives) == 1, archives
    healthy("pipacs-fleet-1", source)

    # A second backup after one more study: a whole tree again, but the files the first one
    # holds are hard links to it; only the new instance (and the index copy) are new.
    late = EPHEMERAL / "second-backup.dcm"
    sample_instance(late, patient_id="SECOND-BACKUP")
    assert storescu(container_ip("pipacs-fleet-1"), DICOM_PORT, AETS["pipacs-fleet-1"], late).returncode == 0
    run = play("backup.yml again (incremental)", "backup.yml", "--limit", "pipacs-fleet-1")
    assert run.returncode == 0, run.output
    first, second = backups_of("pipacs-fleet-1")
    old = {p.relative_to(first): p.stat().st_ino for p in (first / "storage").rglob("*") if p.is_file()}
    new = {p.relative_to(second): p.stat().st_ino for p in (second / "storage").rglob("*") if p.is_file()}
    assert old and set(old) < set(new) and len(new) == len(old) + 1, (old, new)
    assert all(new[rel] == ino for rel, ino in old.items()), "unchanged files were copied, not linked"
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["Previous"] == first.name and manifest["CountInstances"] == stats(source)["CountInstances"]
    assert re.search(r"backed up to \S+: \d+ files, [\d.]+ MB new, %d shared with the previous backup" % len(old),
                     " ".join(run.output.split())), run.output
    archives = [second]
    healthy("pipacs-fleet-1", source)

    # Refused where data already is, with the reason, and nothing touched.
    before = stats(pis["pipacs-fleet-2"])["CountInstances"]
    refused = play("restore.yml refused (Pi holds data)", "restore.yml", "--limit", "pipacs-fleet-2",
                   "-e", f"fleet_restore_archive={archives[0]}")
    assert refused.returncode != 0 and "fleet_restore_force=true" in refused.output, refused.output
    assert stats(pis["pipacs-fleet-2"])["CountInstances"] == before

    # A new SD card: the same Pi provisioned afresh, with no data.
    target.check_output(
        "systemctl stop pipacs && rm -rf /var/lib/pipacs/storage/* /var/lib/pipacs/storage/.incoming "
        "/var/lib/pipacs/index/* && systemctl start pipacs"
    )
    wait_until_serving("pipacs-fleet-3", target)
    assert stats(target)["CountInstances"] == 0
    run = play("restore.yml (onto an empty Pi)", "restore.yml", "--limit", "pipacs-fleet-3",
               "-e", f"fleet_restore_archive={archives[0]}")
    assert run.returncode == 0, run.output
    counts = ["CountPatients", "CountStudies", "CountSeries", "CountInstances"]
    assert [stats(target)[c] for c in counts] == [stats(source)[c] for c in counts]
    assert storage_sums(target) == storage_sums(source)
    healthy("pipacs-fleet-3", target)


def test_backup_on_the_pi_then_forced_restore_from_there(pis):
    name = "pipacs-fleet-2"
    host = pis[name]
    host.check_output("mkdir -p /srv/usb-backup")  # stands for a mounted USB disk
    before, sums = stats(host)["CountInstances"], storage_sums(host)
    run = play("backup.yml to a disk on the Pi", "backup.yml", "--limit", name,
               "-e", "fleet_backup_to=pi", "-e", "fleet_backup_pi_dir=/srv/usb-backup")
    assert run.returncode == 0, run.output
    archives = host.check_output("ls /srv/usb-backup").split()
    assert len(archives) == 1 and re.fullmatch(rf"{name}-\d{{8}}T\d{{6}}Z", archives[0]), archives
    assert host.file(f"/srv/usb-backup/{archives[0]}/manifest.json").exists

    # Stored after the backup: a forced restore brings the Pi back to the backup, and keeps
    # what it replaced aside.
    late = EPHEMERAL / "after-backup.dcm"
    sample_instance(late, patient_id="AFTER-BACKUP")
    assert storescu(container_ip(name), DICOM_PORT, AETS[name], late).returncode == 0
    assert stats(host)["CountInstances"] == before + 1
    run = play("restore.yml forced, archive on the Pi", "restore.yml", "--limit", name,
               "-e", f"fleet_restore_archive=/srv/usb-backup/{archives[0]}",
               "-e", "fleet_restore_archive_on_pi=true", "-e", "fleet_restore_force=true")
    assert run.returncode == 0, run.output
    assert stats(host)["CountInstances"] == before
    assert storage_sums(host) == sums
    aside = host.check_output("ls -A /var/lib/pipacs/storage").split()
    assert any(entry.startswith(".before-restore-") for entry in aside), aside
    healthy(name, host)


def make_library(folder: Path, studies: int = 2, per_study: int = 3) -> int:
    """A teaching library on the controller: studies of small images, one folder each."""
    from pydicom.uid import generate_uid

    count = 0
    for s in range(studies):
        study, series = generate_uid(), generate_uid()
        (folder / f"case-{s + 1}").mkdir(parents=True, exist_ok=True)
        for i in range(per_study):
            path = folder / f"case-{s + 1}" / f"IM{i:04d}"  # no extension, as on CDs
            ds = sample_instance(path, patient_id=f"TEACH-{s + 1}", name=f"Teaching^Case{s + 1}")
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.InstanceNumber = study, series, i + 1
            ds.save_as(path, enforce_file_format=True)
            count += 1
    return count


def test_content_sync_sends_only_what_is_missing_then_nothing(pis):
    library = EPHEMERAL / "teaching-library"
    shutil.rmtree(library, ignore_errors=True)
    sent = make_library(library)
    before = {name: stats(h)["CountInstances"] for name, h in pis.items()}
    args = ["-e", f"fleet_content_library_dir={library}"]
    run = play("content.yml (library new to every Pi)", "content.yml", *args)
    assert run.returncode == 0, run.output
    for name, host in pis.items():
        assert re.search(rf"content {name} studies_present=0\s+studies_sent=2\s+instances_sent={sent}\b", run.output)
        assert stats(host)["CountInstances"] == before[name] + sent
        patients = http_json(host, HTTP_PORT, "/patients?expand", *ADMIN)
        teaching = [p for p in patients if p["MainDicomTags"]["PatientID"].startswith("TEACH-")]
        assert len(teaching) == 2 and all(p["IsProtected"] for p in teaching), teaching

    again = play("content.yml again (nothing to send)", "content.yml", *args)
    assert again.returncode == 0, again.output
    assert again.recap()["changed"] == 0, again.output
    for name, host in pis.items():
        assert re.search(rf"content {name} studies_present=2\s+studies_sent=0\s+instances_sent=0\b", again.output)
        assert stats(host)["CountInstances"] == before[name] + sent


def test_fleet_report(pis):
    run = play("report.yml", "report.yml")
    assert run.returncode == 0, run.output
    assert run.recap()["changed"] == 0, run.output
    import csv

    rows = list(csv.DictReader((EPHEMERAL / "fleet-data" / "reports" / "fleet-report-latest.csv").open()))
    assert sorted(r["host"] for r in rows) == NAMES
    for row in rows:
        host = pis[row["host"]]
        assert (row["version"], row["health"]) == ("0.99.1", "ok"), row
        assert int(row["instances"]) == stats(host)["CountInstances"], row
        assert row["classroom"] == ("classroom_b" if row["host"].endswith("3") else "classroom_a"), row


def test_timings_are_written():
    lines = [f"{label:<55} {seconds:7.1f} s  {what}" for label, seconds, what in TIMINGS]
    out = PROJECT / ".cache" / "molecule-logs" / "fleet-timings.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))
    assert TIMINGS
