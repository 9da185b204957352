"""What a person would observe on a Pi converged by the storage role (see ../converge.yml)."""

import re

import pytest
from pipacs_molecule import assert_no_changes, run_playbook


@pytest.mark.parametrize("path", ["/var/lib/pipacs/storage", "/var/lib/pipacs/index"])
def test_folders_belong_to_pipacs(host, path):
    folder = host.file(path)
    assert folder.is_directory
    assert (folder.user, folder.group, folder.mode) == ("pipacs", "pipacs", 0o750)


def test_pipacs_can_write_and_others_cannot_read(host):
    assert host.run("su -s /bin/sh -c 'touch /var/lib/pipacs/storage/probe' pipacs").rc == 0
    assert host.run("su -s /bin/sh -c 'ls /var/lib/pipacs/storage' nobody").rc != 0
    host.run("rm -f /var/lib/pipacs/storage/probe")


def test_no_usb_disk_means_no_fstab_entry(host):
    assert "pipacs" not in host.file("/etc/fstab").content_string


def test_check_mode_reports_no_changes():
    assert_no_changes(run_playbook("converge.yml", "--check", "--diff"))


def refused(host, playbook: str, folder: str) -> str:
    """Run a playbook the role must refuse; check nothing changed; its output on one line."""
    fstab_before = host.file("/etc/fstab").sha256sum
    run = run_playbook(playbook)
    assert run.returncode != 0, run.output
    assert run.recap()["changed"] == 0, run.output
    assert not host.file(folder).exists
    assert host.file("/etc/fstab").sha256sum == fstab_before
    return " ".join(run.output.split())


def test_absent_usb_disk_fails_clearly_and_changes_nothing(host):
    message = refused(host, "absent_disk_playbook.yml", "/srv/pipacs-absent")
    assert "USB disk with label 'PIPACS-NOT-PLUGGED' not found" in message, message
    assert "/dev/disk/by-label/PIPACS-NOT-PLUGGED does not exist" in message, message
    assert "Nothing was changed" in message


def test_an_exfat_disk_is_refused_with_the_reason(host):
    message = refused(host, "fat_disk_playbook.yml", "/srv/pipacs-fat")
    assert "storage_usb_fstype=exfat: FAT and exFAT have no file owners" in message, message
    assert "no hard links" in message and "Nothing was changed" in message, message


def test_low_free_space_fails_naming_path_and_sizes(host):
    run = run_playbook("low_space_playbook.yml")
    assert run.returncode != 0, run.output
    assert run.recap()["changed"] == 0, run.output
    message = " ".join(run.output.split())
    found = re.search(
        r"Not enough free space for /srv/pipacs-full/storage on \S+: (/\S*) has (\d+) MB free, "
        r"999999999 MB required \(storage_min_free_mb\)",
        message,
    )
    assert found, run.output
    assert found.group(1) == "/srv", "the nearest existing folder is measured"
    assert int(found.group(2)) > 0
    assert not host.file("/srv/pipacs-full").exists
