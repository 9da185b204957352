"""The firstboot role's program: a Pi flashed from an image takes its identity from pipacs.txt.

The roles' own templates are rendered twice by Ansible: once as the image is built (host name
`pipacs`) and once as site.yml would render them for the Pi `pi-c7`. pipacs-firstboot, run on
the first set with a pipacs.txt naming the Pi, must produce the second set byte for byte: that
is what lets a later site.yml with matching host_vars change nothing.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_hotspot_dhcp import render_role

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ROOT / "roles/firstboot/files/pipacs-firstboot"
BUILD_NAME = "pipacs"

# The hotspot role's dnsmasq file for the image's radio, wlan0 (roles/hotspot/vars/Debian.yml).
DNSMASQ_CONF = (
    yaml.safe_load((ROOT / "roles/hotspot/vars/Debian.yml").read_text())["__hotspot_dnsmasq_conf"]
    .replace("{{ hotspot_interface }}", "wlan0").lstrip("/")
)

# Role -> {name: (template, path in the Pi's root)}.
FILES = {
    "hotspot": {
        "hostapd": ("etc/hostapd/hostapd.conf.j2", "etc/hostapd/wlan0.conf"),
        # The name the role gives it (an earlier fixed name here hid a first boot that missed it).
        "dnsmasq": ("etc/dnsmasq.d/pipacs-hotspot.conf.j2", DNSMASQ_CONF),
        "address": ("etc/systemd/system/pipacs-hotspot-address.service.j2",
                    "etc/systemd/system/pipacs-hotspot-address-wlan0.service"),
    },
    "daemon": {
        "unit": ("etc/systemd/system/pipacs.service.j2", "etc/systemd/system/pipacs.service"),
        "echo": ("usr/local/bin/pipacs-echo.j2", "usr/local/bin/pipacs-echo"),
    },
    "server": {"server": ("etc/pipacs/server.json.j2", "etc/pipacs/server.json")},
    "base": {
        "crda": ("etc/default/crda.j2", "etc/default/crda"),
        "modprobe": ("etc/modprobe.d/pipacs-wifi-country.conf.j2", "etc/modprobe.d/pipacs-wifi-country.conf"),
    },
}


def role_vars(name: str, passphrase: str, country: str, **overrides: str) -> dict[str, object]:
    """What the roles' defaults make of inventory_hostname_short = name (Ansible does not let
    -e set that magic variable, so the defaults' expressions are spelled out)."""
    values: dict[str, object] = {
        "base_hostname": name,
        "hotspot_hostname": name,
        "hotspot_ssid": f"PiPACS-{name}",
        "hotspot_passphrase": passphrase,
        "hotspot_country": country,
        "base_wifi_country": country,
        "server_name": f"PiPACS {name}",
        "server_dicom_aet": name.upper()[:16],
        "server_admin_password": "s3cret-admin",
    }
    values.update(overrides)
    return values


def render_pi(dest: Path, variables: dict[str, object]) -> Path:
    """The role-written files of a Pi (plus its /etc/hostname and /etc/hosts) under dest/root."""
    root = dest / "root"
    work = dest / "work"
    work.mkdir(parents=True)
    for role, files in FILES.items():
        templates = {name: (src, name) for name, (src, _) in files.items()}
        # The hotspot's OS variables (paths, unit names) come from vars/Debian.yml on a Pi.
        os_vars = yaml.safe_load((ROOT / "roles/hotspot/vars/Debian.yml").read_text()) if role == "hotspot" else {}
        out = render_role(work, role, templates, **{**os_vars, **variables})
        for name, (_, path) in files.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(out[name].read_text())
    name = str(variables["base_hostname"])
    (root / "etc/hostname").write_text(f"{name}\n")
    (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n")
    (root / "usr/share/zoneinfo/Europe").mkdir(parents=True)
    (root / "usr/share/zoneinfo/Europe/Paris").write_text("TZif")
    return root


def firstboot(root: Path, boot: Path, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROGRAM), "--root", str(root), "--boot", str(boot), "--state", str(state), "--no-system"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def tree(root: Path) -> dict[str, str]:
    """The role-written files and the host name (the time zone is checked on its own)."""
    skip = {"etc/localtime", "etc/timezone"}
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and "zoneinfo" not in p.parts and str(p.relative_to(root)) not in skip
    }


@pytest.fixture(scope="module")
def image_and_pi(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("firstboot")
    image = render_pi(base / "image", role_vars(BUILD_NAME, "image passphrase", "GB"))
    pi = render_pi(base / "pi", role_vars("pi-c7", "classroom-c7-pass", "FR"))
    return image, pi


def copy(root: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(root), str(dest)], check=True)
    return dest


def test_pi_c7_gets_what_site_yml_would_write(image_and_pi: tuple[Path, Path], tmp_path: Path) -> None:
    image, pi = image_and_pi
    image = copy(image, tmp_path / "root")
    boot = tmp_path / "boot"
    boot.mkdir()
    # As staff type it on a laptop: CRLF, a comment, quotes, odd case, a line to ignore.
    (boot / "pipacs.txt").write_bytes(
        b"# classroom C, Pi 7\r\nhostname=PI-C7\r\nwifi_passphrase = 'classroom-c7-pass'\r\n"
        b"wifi_country=fr\r\ntimezone=Europe/Paris\r\nfavourite_colour=blue\r\n"
    )
    before = tree(image)
    assert before != tree(pi)
    run = firstboot(image, boot, tmp_path / "state")
    assert "favourite_colour" in run.stdout
    assert tree(image) == tree(pi), run.stdout
    assert os.readlink(image / "etc/localtime") == "/usr/share/zoneinfo/Europe/Paris"
    assert (image / "etc/timezone").read_text() == "Europe/Paris\n"
    # Applied once: a Pi renamed later by Ansible keeps that name across reboots.
    (image / "etc/hostname").write_text("renamed-by-ansible\n")
    again = firstboot(image, boot, tmp_path / "state")
    assert "already applied" in again.stdout
    assert (image / "etc/hostname").read_text() == "renamed-by-ansible\n"


def test_explicit_values_and_bad_ones(image_and_pi: tuple[Path, Path], tmp_path: Path) -> None:
    root = copy(image_and_pi[0], tmp_path / "root")
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "pipacs.txt").write_text(
        "hostname=pi_c7!\nae_title=RADIOLOGY_ROOM_C7_TOO_LONG\nwifi_ssid=Classroom C\n"
        "wifi_passphrase=short\nwifi_country=France\ntimezone=../../etc/passwd\n"
    )
    run = firstboot(root, boot, tmp_path / "state")
    for key in ("hostname", "ae_title", "wifi_passphrase", "wifi_country", "timezone"):
        assert f"{key} ignored" in run.stdout
    assert (root / "etc/hostname").read_text() == f"{BUILD_NAME}\n"
    hostapd = (root / "etc/hostapd/wlan0.conf").read_text()
    assert "\nssid=Classroom C\n" in hostapd
    assert "\nwpa_passphrase=image passphrase\n" in hostapd
    assert '"DicomAet": "PIPACS"' in (root / "etc/pipacs/server.json").read_text()
    # The Raspberry Pi Imager's custom.toml fills what pipacs.txt leaves out.
    (boot / "pipacs.txt").write_text("ae_title=PACS_C7\n")
    (boot / "custom.toml").write_text('[system]\nhostname = "pi-c8"\n[wlan]\ncountry = "DE"\n')
    firstboot(root, boot, tmp_path / "state")
    assert (root / "etc/hostname").read_text() == "pi-c8\n"
    server = (root / "etc/pipacs/server.json").read_text()
    assert '"DicomAet": "PACS_C7",' in server and '"Name": "PiPACS pi-c8",' in server
    assert "\ncountry_code=DE\n" in (root / "etc/hostapd/wlan0.conf").read_text()
    assert "pi-c8" in (root / DNSMASQ_CONF).read_text()
    digest = (tmp_path / "state/applied.sha256").read_text().strip()
    assert len(digest) == len(hashlib.sha256().hexdigest())
