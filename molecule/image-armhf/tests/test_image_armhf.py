"""The armhf SD card image booted as pi-c7 with no network (see ../molecule.yml); the checks
common to every architecture are in molecule/resources/pipacs_image_checks.py."""

# The shared tests, collected in this module.
from pipacs_image_checks import *


def test_the_image_runs_armhf(host):
    assert host.check_output("uname -m") in ("armv7l", "armv8l", "aarch64")
    assert host.check_output("dpkg --print-architecture") == "armhf"
