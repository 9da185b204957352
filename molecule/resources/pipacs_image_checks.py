"""Checks shared by molecule/image-arm64 and image-armhf: an SD card image booted as pi-c7 with
no network. The first boot took the Pi's identity from pipacs.txt, pipacs and the hotspot's
files work, and site.yml with matching host_vars had nothing of it to change. Each scenario's
test module imports these (`from pipacs_image_checks import *`) and adds its CPU check."""

import json
import re

from pipacs_probe import http_json

NAME = "pi-c7"
AET = "PACS_C7"
SSID = "PiPACS Classroom C"
# From inventory/example: group_vars/pacs and its vault.
ADMIN = ("admin", "example-teacher-password")
HOSTAPD = "/etc/hostapd/wlan0.conf"
DNSMASQ = "/etc/dnsmasq.d/pipacs-hotspot-wlan0.conf"  # the hotspot role: per interface
STATE = "/var/tmp/pipacs-image-test"


def test_no_network(host):
    # Loopback only: whatever the Pi needed was in the image.
    links = host.check_output("ip -o link show").splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]
    assert host.check_output("ip route show") == ""


def test_the_first_boot_named_the_pi(host):
    log = host.file(f"{STATE}/firstboot.log").content_string
    assert "host name pipacs -> pi-c7" in log, log
    assert "applied" in log
    # A container's root is no partition: said, not failed.
    assert "not grown" in log
    assert host.file(f"{STATE}/hostname").content_string.strip() == NAME
    assert host.check_output("hostname") == NAME
    assert host.file("/etc/hostname").content_string == f"{NAME}\n"
    assert re.search(rf"^127\.0\.1\.1\s+{NAME}$", host.file("/etc/hosts").content_string, re.MULTILINE)
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Europe/Paris"
    assert host.service("pipacs-firstboot").is_enabled


def test_ae_title_and_wifi_follow_pipacs_txt(host):
    text = host.file("/etc/pipacs/server.json").content_string
    cfg = json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))
    assert (cfg["DicomAet"], cfg["Name"]) == (AET, f"PiPACS {NAME}")
    hostapd = host.file(HOSTAPD).content_string
    for line in (f"ssid={SSID}", "wpa_passphrase=classroom-c-2026", "country_code=FR"):
        assert f"\n{line}\n" in hostapd
    assert "REGDOMAIN=FR" in host.file("/etc/default/crda").content_string
    assert re.search(rf"^host-record=.*\b{NAME}\b", host.file(DNSMASQ).content_string, re.MULTILINE)


def test_systemd_runs_the_units_as_the_first_boot_wrote_them(host):
    # Recorded before site.yml (which reloads systemd anyway): the first boot rewrote units
    # systemd had already loaded, so it must have made systemd read them again.
    shown = host.file(f"{STATE}/units-loaded").content_string
    units = [dict(line.split("=", 1) for line in block.splitlines()) for block in shown.strip().split("\n\n")]
    assert [u["Id"] for u in units] == ["pipacs.service", "pipacs-hotspot-address-wlan0.service"], shown
    assert all(u["NeedDaemonReload"] == "no" for u in units), shown
    assert f"({AET})" in units[0]["Description"], shown


def test_hostapd_and_dnsmasq_accept_their_files(host):
    check = host.run(f"/usr/local/sbin/pipacs-hostapd-check {HOSTAPD}")
    assert check.rc == 0, check.stdout + check.stderr
    test = host.run("dnsmasq --test --conf-dir=/etc/dnsmasq.d")
    assert test.rc == 0, test.stderr
    assert host.service("dnsmasq").is_running
    assert host.service("hostapd@wlan0").is_enabled


def test_pipacs_answers_echo_and_changes(host):
    assert host.service("pipacs").is_running
    echo = host.run("pipacs-echo 127.0.0.1 4242 %s", AET)
    assert echo.rc == 0, echo.stdout + echo.stderr
    assert http_json(host, 8042, "/changes?last", *ADMIN)["Last"] >= 0


def test_site_yml_changed_none_of_the_first_boot_files(host):
    check = host.run(f"sha256sum --check --quiet {STATE}/after-firstboot.sha256.files")
    assert check.rc == 0, check.stdout + check.stderr
    link = host.file(f"{STATE}/after-firstboot.localtime").content_string.strip()
    assert host.file("/etc/localtime").linked_to == link
