"""What a person would observe on a Pi converged by the hotspot role (see ../converge.yml).

The container has no Wi-Fi radio (this kernel has no cfg80211, so no simulated one either):
hostapd's configuration is checked by hostapd's own parser, and its unit is enabled but not
started. DHCP and DNS run for real here (dnsmasq); tests/test_hotspot_dhcp.py gives a lease
to a client in a network namespace.
"""

import re

import pytest
from pipacs_molecule import assert_no_changes, run_playbook
from pipacs_wifi_probe import dhcp_offer, dns_answer

HOSTAPD = "/etc/hostapd/wlan0.conf"
DNSMASQ = "/etc/dnsmasq.d/pipacs-hotspot-wlan0.conf"


def conf(host, path: str) -> dict[str, str]:
    """key=value lines of a configuration file, comments left out."""
    text = host.file(path).content_string
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


@pytest.mark.parametrize("package", ["hostapd", "dnsmasq", "iw", "rfkill"])
def test_packages_installed(host, package):
    assert host.package(package).is_installed


def test_hostapd_configuration(host):
    f = host.file(HOSTAPD)
    assert (f.user, f.group, f.mode) == ("root", "root", 0o600), "it holds the passphrase"
    c = conf(host, HOSTAPD)
    assert c["interface"] == "wlan0"
    assert c["ssid"] == "PiPACS Classroom A"
    assert c["ignore_broadcast_ssid"] == "1"
    assert (c["country_code"], c["ieee80211d"]) == ("FR", "1")
    assert (c["hw_mode"], c["channel"], c["ieee80211ac"]) == ("a", "44", "1")
    assert c["max_num_sta"] == "25"
    assert c["ap_isolate"] == "1"
    assert c["wpa"] == "2"
    assert c["wpa_key_mgmt"] == "WPA-PSK SAE"
    assert c["ieee80211w"] == "1"
    assert c["wpa_passphrase"] == "molecule-test-passphrase"


def test_hostapd_parses_its_configuration(host):
    """hostapd's own parser accepts the file; a broken copy is refused with its line number."""
    assert host.run(f"/usr/local/sbin/pipacs-hostapd-check {HOSTAPD}").rc == 0
    host.check_output(f"sed 's/^max_num_sta=.*/max_num_sta=lots/;$ a no_such_key=1' {HOSTAPD} > /tmp/broken.conf")
    broken = host.run("/usr/local/sbin/pipacs-hostapd-check /tmp/broken.conf")
    assert broken.rc == 1
    assert "errors found in configuration file" in broken.stderr
    assert "no_such_key" in broken.stderr


def test_hostapd_enabled_not_started(host):
    """Enabled, and wanted by wlan0's device unit: it starts when the radio appears."""
    for unit in ("hostapd@wlan0.service", "pipacs-hotspot-address-wlan0.service"):
        assert host.service(unit).is_enabled, unit
        assert host.file(f"/etc/systemd/system/sys-subsystem-net-devices-wlan0.device.wants/{unit}").is_symlink
    assert not host.service("hostapd@wlan0.service").is_running


def test_address_unit(host):
    unit = host.file("/etc/systemd/system/pipacs-hotspot-address-wlan0.service").content_string
    assert "ExecStart=/usr/sbin/ip address replace 10.42.7.1/24 dev wlan0" in unit
    assert "ExecStartPre=-/usr/sbin/iw reg set FR" in unit
    assert host.run("systemd-analyze verify /etc/systemd/system/pipacs-hotspot-address-wlan0.service").rc == 0


def test_dnsmasq_configuration(host):
    text = host.file(DNSMASQ).content_string
    assert re.search(r"^interface=wlan0$", text, re.MULTILINE)
    assert re.search(
        r"^host-record=pi-a1,pi-a1\.classroom,pacs\.classroom,viewer\.classroom,10\.42\.7\.1$", text, re.MULTILINE
    )
    assert re.search(r"^address=/#/10\.42\.7\.1$", text, re.MULTILINE)
    assert re.search(r"^dhcp-range=10\.42\.7\.100,10\.42\.7\.199,4h$", text, re.MULTILINE)
    assert re.search(r"^no-resolv$", text, re.MULTILINE)
    assert host.run(f"dnsmasq --test --conf-file={DNSMASQ}").rc == 0
    assert host.run("dnsmasq --test --conf-dir=/etc/dnsmasq.d").rc == 0


def test_dnsmasq_refuses_a_broken_file(host):
    host.check_output(f"sed 's/^dhcp-range=.*/dhcp-range=not-an-address/' {DNSMASQ} > /tmp/broken-dnsmasq.conf")
    broken = host.run("dnsmasq --test --conf-file=/tmp/broken-dnsmasq.conf")
    assert broken.rc != 0
    assert "dhcp-range" in broken.stderr or "bad" in broken.stderr


def test_dnsmasq_running(host):
    assert host.service("dnsmasq").is_enabled
    assert host.service("dnsmasq").is_running


@pytest.mark.parametrize(
    "name", ["pacs.classroom", "viewer.classroom", "pi-a1", "pi-a1.classroom", "captive.apple.com"]
)
def test_dns_answers_the_classroom_names_with_the_ap_address(host, name):
    assert dns_answer(host, name) == ["rcode", "0", "10.42.7.1"]


def test_dhcp_offers_an_address_and_this_pi_for_router_dns_and_time(host):
    """A tablet's DISCOVER on the radio (a veth here) gets an address of the range, and this
    Pi as router, DNS and NTP server (chrony serves the classroom, see the next test)."""
    offer = dhcp_offer(host, "wlan0", "10.42.7.1/24")
    assert offer["offer"].startswith("10.42.7.")
    assert 100 <= int(offer["offer"].rsplit(".", 1)[1]) <= 199
    assert (offer["router"], offer["dns"], offer["ntp"]) == ("10.42.7.1",) * 3


def test_chrony_serves_the_classroom_network(host):
    assert host.file("/etc/chrony/conf.d/pipacs-hotspot-wlan0.conf").contains("^allow 10.42.7.1/24$")
    assert host.run("chronyd -p").rc == 0, "chrony's whole configuration parses"


def test_captive_portal_socket_listens_on_the_ap_address(host):
    socket = host.service("pipacs-hotspot-portal.socket")
    assert socket.is_enabled and socket.is_running
    assert host.socket("tcp://10.42.7.1:80").is_listening


@pytest.mark.parametrize(
    "request_line",
    ["GET /hotspot-detect.html HTTP/1.1", "GET /generate_204 HTTP/1.1", "GET / HTTP/1.0"],
)
def test_captive_portal_redirects_to_the_welcome_page(host, request_line):
    answer = host.check_output(
        f"printf '{request_line}\\r\\nHost: captive.apple.com\\r\\n\\r\\n' | /usr/local/lib/pipacs/hotspot-portal"
    )
    assert answer.startswith("HTTP/1.1 302 Found")
    assert "Location: http://pacs.classroom:8042/\r\n" in answer  # pipacs' welcome page


def test_no_failed_units(host):
    assert host.check_output("systemctl --failed --no-legend --plain") == ""


def test_open_network_is_refused():
    """An open network needs hotspot_allow_open_network; nothing is changed before the refusal."""
    run = run_playbook("converge.yml", "--tags", "hotspot_preflight", "-e", "hotspot_security=open")
    assert run.returncode != 0
    assert "hotspot_allow_open_network" in run.output


def test_missing_country_is_refused():
    run = run_playbook("converge.yml", "--tags", "hotspot_preflight", "-e", "hotspot_country=''")
    assert run.returncode != 0
    assert "hotspot_country is required" in run.output


def ran(output: str, handler: str) -> bool:
    """Whether a handler of the hotspot role ran (its banner shows even when it is skipped)."""
    banner = f"RUNNING HANDLER [hotspot : {handler}]"
    if banner not in output:
        return False
    section = output.split(banner, 1)[1].split("RUNNING HANDLER", 1)[0].split("PLAY RECAP", 1)[0]
    return "changed: [" in section or "ok: [" in section


def test_controller_on_the_access_point_is_warned_and_restart_deferred(host):
    """Over the classroom Wi-Fi itself, the role says so and restarts hostapd only after the
    play, through a systemd timer, never in the middle of it.

    Simulated here: the SSH connection (the test reaches the container through podman; the
    interface it arrives on is forced to wlan0), and a radio (hotspot_start_radio_services).
    The timer is set an hour ahead and removed by the test, then the converge is re-applied.
    """
    simulated = [
        "-e", "__hotspot_ssh_address=10.42.7.1", "-e", "__hotspot_ssh_interface=wlan0",
        "-e", "hotspot_start_radio_services=true", "-e", "hotspot_apply_delay=3600",
    ]  # fmt: skip
    try:
        run = run_playbook("converge.yml", *simulated, "-e", "hotspot_max_clients=26")
        assert run.returncode == 0, run.output
        assert "WARNING: the controller reaches" in run.output
        assert "over wlan0 (10.42.7.1)" in run.output
        assert not ran(run.output, "Restart hostapd")
        assert ran(run.output, "Restart the access point after the play")
        timer = host.run("systemctl show --property=ActiveState --value pipacs-hotspot-apply.timer")
        assert timer.stdout.strip() == "active"
        command = host.check_output("systemctl show --property=ExecStart --value pipacs-hotspot-apply.service")
        assert "hostapd@wlan0.service" in command
    finally:
        host.run("systemctl stop pipacs-hotspot-apply.timer")
        restored = run_playbook("converge.yml")
        assert restored.returncode == 0, restored.output


def test_check_mode_reports_no_changes():
    """`--check --diff` on a converged host reports nothing to change."""
    assert_no_changes(run_playbook("converge.yml", "--check", "--diff"))
