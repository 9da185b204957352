"""What a person would observe on the three repeater Pis (see ../molecule.yml, ../converge.yml).

No radio exists here: uplinks and access points are configured, checked and enabled, not
started. NetworkManager (routed Pi) really parses the uplink profile; nft really loads the NAT
rules; dnsmasq really runs on the routed Pi's and the dual Pi's networks.
"""

import os
from pathlib import Path

import pytest
from pipacs_molecule import PlaybookRun, run_playbook


def converge(*args: str) -> PlaybookRun:
    """converge.yml with Molecule's whole inventory: its extra hosts (pi-a1) are in a file of
    their own beside the one MOLECULE_INVENTORY_FILE names."""
    extra = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent / "hosts"
    return run_playbook("converge.yml", "--inventory", str(extra), *args)


def conf(host, path: str) -> dict[str, str]:
    """key=value lines of a configuration file, comments left out."""
    text = host.file(path).content_string
    return dict(line.strip().split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def name(host) -> str:
    return host.backend.name


@pytest.fixture
def routed(host):
    if name(host) != "pipacs-repeater-routed":
        pytest.skip("routed repeater only")
    return host


@pytest.fixture
def bridged(host):
    if name(host) != "pipacs-repeater-bridged":
        pytest.skip("bridged repeater only")
    return host


@pytest.fixture
def dual(host):
    if name(host) != "pipacs-repeater-dual":
        pytest.skip("Pi with two adapters only")
    return host


# ---- Every mode: the access point on wlan1, with the classroom's name and passphrase -------
def test_access_point_serves_the_classroom_network(host):
    c = conf(host, "/etc/hostapd/wlan1.conf")
    if name(host) == "pipacs-repeater-dual":
        expected = ("PiPACS Classroom B", "molecule-classroom-b", "DE")
    else:
        # From pi-a1's inventory values (the classroom is described once).
        expected = ("PiPACS Classroom A", "molecule-classroom-passphrase", "FR")
    assert (c["ssid"], c["wpa_passphrase"], c["country_code"]) == expected
    assert host.run("/usr/local/sbin/pipacs-hostapd-check /etc/hostapd/wlan1.conf").rc == 0
    assert host.service("hostapd@wlan1.service").is_enabled
    assert not host.service("hostapd@wlan1.service").is_running, "no radio in a container"


def test_no_failed_units(host):
    assert host.check_output("systemctl --failed --no-legend --plain") == ""


# ---- Routed: NetworkManager uplink, NAT, a subnet of its own -------------------------------
def test_routed_uplink_is_a_networkmanager_profile(routed):
    profile = routed.file("/etc/NetworkManager/system-connections/pipacs-uplink-wlan0.nmconnection")
    assert (profile.user, profile.mode) == ("root", 0o600)
    shown = routed.check_output(
        "nmcli -g connection.interface-name,802-11-wireless.ssid,802-11-wireless-security.key-mgmt,"
        "connection.autoconnect connection show pipacs-uplink-wlan0"
    ).splitlines()
    assert shown == ["wlan0", "PiPACS Classroom A", "wpa-psk", "yes"]


def test_routed_networkmanager_leaves_the_access_point_alone(routed):
    merged = routed.check_output("NetworkManager --print-config")
    assert "interface-name:wlan1" in merged
    assert "interface-name:eth0" in merged, "the test bed's own entry is kept (+=)"


def test_routed_nat_loaded(routed):
    assert routed.service("pipacs-repeater-nat.service").is_enabled
    rules = routed.check_output("nft list table ip pipacs_repeater")
    assert 'iifname "wlan1" oifname "wlan0" masquerade' in rules
    assert routed.file("/etc/sysctl.d/90-pipacs-repeater.conf").contains("^net.ipv4.ip_forward = 1$")


def test_routed_dns_asks_the_classroom_pi(routed):
    text = routed.file("/etc/dnsmasq.d/pipacs-hotspot-wlan1.conf").content_string
    assert "server=10.42.0.1\n" in text
    assert "dhcp-range=10.42.1.50,10.42.1.250,12h\n" in text
    assert "address=/#/" not in text, "the classroom Pi answers the catch-all"
    assert "local=/classroom/" not in text, "classroom names are forwarded"
    assert routed.service("dnsmasq").is_running
    assert not routed.file("/etc/systemd/system/pipacs-hotspot-portal.socket").exists
    # The other channel than the classroom's, from host_vars.
    assert conf(routed, "/etc/hostapd/wlan1.conf")["channel"] == "1"


# ---- Bridged: dhcpcd file, wpa_supplicant in 4-address mode, no DHCP of its own -------------
def test_bridged_uplink_unit(bridged):
    unit = bridged.file("/etc/systemd/system/pipacs-repeater-bridge-wlan0.service").content_string
    assert "iw dev wlan0 set 4addr on" in unit
    assert "ip link set wlan0 master br-classroom" in unit
    assert "ip address replace 10.42.0.2/24 dev br-classroom" in unit
    assert "wpa_supplicant -i wlan0 -b br-classroom" in unit
    assert bridged.service("pipacs-repeater-bridge-wlan0.service").is_enabled
    wpa = bridged.file("/etc/wpa_supplicant/wpa_supplicant-wlan0.conf")
    assert wpa.mode == 0o600
    assert 'ssid="PiPACS Classroom A"' in wpa.content_string
    assert 'psk="molecule-classroom-passphrase"' in wpa.content_string


def test_bridged_dhcpcd_keeps_off_both_radios(bridged):
    text = bridged.file("/etc/dhcpcd.conf").content_string
    assert "denyinterfaces wlan0\n" in text
    assert "denyinterfaces wlan1 br-classroom\n" in text
    # Global options come before dhcpcd's own settings, outside any `interface` section.
    assert text.index("denyinterfaces") < text.index("hostname")


def test_bridged_access_point_joins_the_bridge_without_dhcp(bridged):
    c = conf(bridged, "/etc/hostapd/wlan1.conf")
    assert (c["bridge"], c["hw_mode"], c["channel"]) == ("br-classroom", "a", "149")
    assert not bridged.package("dnsmasq").is_installed, "the classroom Pi serves DHCP and DNS"
    assert not bridged.file("/etc/dnsmasq.d/pipacs-hotspot-wlan1.conf").exists


# ---- Second adapter: two access points in one bridge, one network ---------------------------
def test_dual_two_radios_one_bridge(dual):
    first, second = conf(dual, "/etc/hostapd/wlan0.conf"), conf(dual, "/etc/hostapd/wlan1.conf")
    assert first["bridge"] == second["bridge"] == "br-classroom"
    assert first["ssid"] == second["ssid"] == "PiPACS Classroom B"
    assert (first["hw_mode"], first["channel"]) == ("g", "6")
    assert (second["hw_mode"], second["channel"]) == ("a", "36")
    address = dual.file("/etc/systemd/system/pipacs-hotspot-address-wlan1.service").content_string
    assert "address replace" not in address, "the bridge's address belongs to the first radio"


def test_dual_one_dhcp_and_dns_on_the_bridge(dual):
    text = dual.file("/etc/dnsmasq.d/pipacs-hotspot-wlan0.conf").content_string
    assert "interface=br-classroom\n" in text
    assert "dhcp-range=10.42.2.50,10.42.2.200,12h\n" in text
    assert not dual.file("/etc/dnsmasq.d/pipacs-hotspot-wlan1.conf").exists
    assert dual.service("dnsmasq").is_running
    assert dual.service("pipacs-hotspot-portal.socket").is_running


def test_routed_repeater_needs_an_upstream():
    """Without repeater_upstream_host (or an explicit SSID) the role stops before any change."""
    run = converge(
        "--limit",
        "pipacs-repeater-routed",
        "--tags",
        "repeater_preflight",
        "-e",
        "repeater_upstream_host=pipacs-repeater-routed",
    )
    assert run.returncode != 0
    assert "set repeater_upstream_host" in run.output


def test_check_mode_reports_no_changes():
    run = converge("--check", "--diff")
    assert run.returncode == 0, run.output
    recap = run.recap()
    assert recap["failed"] == 0, run.output
    assert recap["changed"] == 0, run.output
