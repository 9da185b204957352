"""What staff would observe after site.yml on a simulated school (see ../molecule.yml): two
classroom PACS Pis (pipacs-site-a1, -b1) and classroom A's repeater Pi (pipacs-site-a2).

No Wi-Fi radio exists here (this kernel has no cfg80211, so no simulated one either): hostapd's
configuration is checked by hostapd's own parser and its unit is enabled, not started. DHCP,
DNS and NTP-by-DHCP run for real: dnsmasq answers a DHCP client in a network namespace joined
to a veth named like the radio (the only stand-in), and DNS queries on the Pi itself.
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from pipacs_molecule import run_playbook
from pipacs_probe import container_ip, echoscu, http_json, sample_instance, storescu
from pipacs_wifi_probe import dhcp_offer, dns_answer

# From inventory/example: group_vars/pacs (and the vault) plus ../host_vars.
ADMIN = ("admin", "example-teacher-password")
HTTP_PORT, DICOM_PORT = 8042, 4242
# From inventory/example/group_vars/classroom_a and classroom_b.
CLASSROOMS = {
    "pipacs-site-a1": ("PiPACS Classroom A", "10.42.0.1", "2.4"),
    "pipacs-site-b1": ("PiPACS Classroom B", "10.42.2.1", "5"),
}


def name_of(host) -> str:
    return host.backend.name


KIND = {"pipacs-site-a1": "pacs", "pipacs-site-b1": "pacs", "pipacs-site-a2": "repeater"}


def of_kind(host, kind: str):
    """The host, for a test about one kind of Pi (the repeater runs no pipacs)."""
    if KIND[name_of(host)] != kind:
        pytest.skip(f"{kind} Pis only")
    return host


@pytest.fixture
def pacs(host):
    return of_kind(host, "pacs")


@pytest.fixture
def repeater(host):
    return of_kind(host, "repeater")


def aet_of(host) -> str:
    return "PACS_" + name_of(host)[-2].upper()


def config(host, name: str) -> dict:
    text = host.file(f"/etc/pipacs/{name}").content_string
    return json.loads(re.sub(r"^\s*//.*$", "", text, flags=re.MULTILINE))


def test_base_on_every_pi(host):
    assert host.check_output("hostname") == name_of(host)
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Europe/London"


def test_server_on_the_pacs_pis(pacs):
    assert pacs.service("pipacs").is_enabled
    assert pacs.service("pipacs").is_running


def test_configuration_from_the_inventory_and_vault(pacs):
    host = pacs
    cfg = config(host, "server.json")
    letter = name_of(host)[-2].upper()
    assert cfg["Name"] == f"Classroom {letter} PACS"
    assert cfg["DicomAet"] == aet_of(host)
    assert cfg["RegisteredUsers"] == {"admin": "example-teacher-password"}
    assert (cfg["MaximumStorageSize"], cfg["MaximumPatientCount"]) == (20000, 500)
    assert cfg["DicomAlwaysAllowFind"] is True
    other = next(iter(cfg["DicomModalities"].values()))
    assert other["Host"] != name_of(host) and other["Host"].startswith("pipacs-site-")
    assert "libOrthancDicomWeb.so" in config(host, "plugins.json")["Plugins"]
    assert host.check_output("systemctl show --property=MemoryMax --value pipacs") == str(400 * 1024 * 1024)


def test_the_other_classroom_resolves_and_answers(pacs):
    host = pacs
    other = "pipacs-site-b1" if name_of(host).endswith("a1") else "pipacs-site-a1"
    other_aet = "PACS_" + other[-2].upper()
    echo = host.run("pipacs-echo %s %s %s", other, str(DICOM_PORT), other_aet)
    assert echo.rc == 0, echo.stderr


def test_echo_store_and_count_from_the_controller(pacs, tmp_path):
    host = pacs
    ip = container_ip(name_of(host))
    echo = echoscu(ip, DICOM_PORT, aet_of(host))
    assert echo.returncode == 0, echo.stderr
    before = http_json_remote(host, "/statistics")["CountInstances"]
    sample_instance(tmp_path / "site.dcm", patient_id=f"SITE-{name_of(host)}")
    store = storescu(ip, DICOM_PORT, aet_of(host), tmp_path / "site.dcm")
    assert store.returncode == 0, store.stderr
    assert http_json_remote(host, "/statistics")["CountInstances"] == before + 1
    assert http_json(host, HTTP_PORT, "/changes?last", *ADMIN)["Last"] > 0


def http_json_remote(host, path: str) -> dict:
    """The REST API from the controller, as a student's laptop would use it (RemoteAccessAllowed)."""
    import base64
    import urllib.request

    req = urllib.request.Request(f"http://{container_ip(name_of(host))}:{HTTP_PORT}{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode())
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.loads(answer.read())


# ---- The classroom Wi-Fi: hotspot on the PACS Pis, then the repeater --------------------------
def conf(host, path: str) -> dict[str, str]:
    """key=value lines of a configuration file, comments left out."""
    text = host.file(path).content_string
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def test_each_pacs_pi_serves_its_classroom_wifi(pacs):
    ssid, _, band = CLASSROOMS[name_of(pacs)]
    c = conf(pacs, "/etc/hostapd/wlan0.conf")
    assert (c["ssid"], c["country_code"], c["hw_mode"]) == (ssid, "GB", "g" if band == "2.4" else "a")
    # hostapd's own parser, as in the hotspot scenario; no radio to start it with.
    assert pacs.run("/usr/local/sbin/pipacs-hostapd-check /etc/hostapd/wlan0.conf").rc == 0
    assert pacs.service("hostapd@wlan0.service").is_enabled
    assert not pacs.service("hostapd@wlan0.service").is_running, "no radio in a container"
    assert pacs.service("dnsmasq").is_running


def test_classroom_names_resolve_to_the_pacs_pi(pacs):
    address = CLASSROOMS[name_of(pacs)][1]
    assert dns_answer(pacs, "pacs.classroom") == ["rcode", "0", address]
    assert dns_answer(pacs, "captive.apple.com") == ["rcode", "0", address], "captive-portal answer"


def test_a_tablet_gets_an_address_and_the_pi_for_dns_and_time(pacs):
    address = CLASSROOMS[name_of(pacs)][1]
    offer = dhcp_offer(pacs, "wlan0", f"{address}/24")
    assert offer["offer"].rsplit(".", 1)[0] == address.rsplit(".", 1)[0]
    assert (offer["router"], offer["dns"], offer["ntp"]) == (address, address, address)
    assert pacs.file("/etc/chrony/conf.d/pipacs-hotspot-wlan0.conf").contains(f"^allow {address}/24$")


def test_the_repeater_extends_classroom_a(repeater):
    # The classroom's name and passphrase come from its PACS Pi's inventory values.
    a1 = conf(repeater, "/etc/hostapd/wlan1.conf")
    assert a1["ssid"] == "PiPACS Classroom A"
    assert a1["channel"] == "11"
    assert repeater.run("/usr/local/sbin/pipacs-hostapd-check /etc/hostapd/wlan1.conf").rc == 0
    uplink = repeater.file("/etc/wpa_supplicant/wpa_supplicant-wlan0.conf").content_string
    assert 'ssid="PiPACS Classroom A"' in uplink
    assert f'psk="{a1["wpa_passphrase"]}"' in uplink
    assert 'iifname "wlan1" oifname "wlan0" masquerade' in repeater.check_output("nft list table ip pipacs_repeater")
    # Its own subnet, names asked of the classroom Pi, time from the classroom Pi.
    assert repeater.service("dnsmasq").is_running
    assert "server=10.42.0.1\n" in repeater.file("/etc/dnsmasq.d/pipacs-hotspot-wlan1.conf").content_string
    assert repeater.file("/etc/chrony/sources.d/pipacs-classroom.sources").contains("^server 10.42.0.1 iburst$")
    offer = dhcp_offer(repeater, "wlan1", "10.42.1.1/24")
    assert offer["offer"].startswith("10.42.1.")
    assert (offer["dns"], offer["ntp"]) == ("10.42.1.1", "10.42.1.1")


def test_no_failed_units(host):
    assert host.check_output("systemctl --failed --no-legend --plain") == ""


# ---- Without a mirror ------------------------------------------------------------------------
# converge.yml took the mirror away (a closed port) and aged the apt lists; Molecule's
# idempotence step has already re-run site.yml like that with changed=0.
def test_a_missing_package_without_a_mirror_names_the_pi_and_the_way_out(host):
    if name_of(host) != "pipacs-site-a1":
        return  # one Pi is enough
    assert "127.0.0.1:9" in host.file("/etc/apt/sources.list").content_string
    run = run_playbook(
        "converge.yml", "--limit", "pipacs-site-a1", "--tags", "base_install", "-e", '{"base_packages_extra": ["sl"]}'
    )
    assert run.returncode != 0
    said = " ".join(run.output.split())  # however the message was wrapped
    assert "pipacs-site-a1 needs sl (the base system)" in said, run.output
    assert "base_apt_proxy" in said and "apt-cacher-ng" in said
    assert not host.package("sl").is_installed


# ---- config.yml with a Pi that does not answer -----------------------------------------------
def test_config_yml_configures_the_pis_that_answer(host, tmp_path):
    """A PACS Pi that is off comes first in the inventory: with batches made before anyone
    was reached it was the canary, its batch failed whole and stopped the rollout. It is now
    left out, named at the end, and the Pi that answers is configured."""
    if name_of(host) != "pipacs-site-a1":
        return  # one run covers the play
    offline = tmp_path / "offline.yml"
    offline.write_text(
        "all:\n  children:\n    pacs:\n      hosts:\n        pi-offline:\n"
        "          ansible_connection: ssh\n          ansible_host: 127.0.0.1\n          ansible_port: 9\n"
    )
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="false")
    playbook = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "config.yml"
    cmd = ["ansible-playbook", "--inventory", str(offline), "--inventory", os.environ["MOLECULE_INVENTORY_FILE"]]
    cmd += ["--limit", "pi-offline,pipacs-site-a1", str(playbook)]
    proc = subprocess.run(
        cmd, cwd=playbook.parents[1], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 4, output  # 4: some host unreachable, none failed
    recap = {m.group(1): m.group(2) for m in re.finditer(r"^(\S+)\s*:\s*(ok=.*)$", output, re.MULTILINE)}
    assert "unreachable=1" in recap["pi-offline"], output
    ok = int(re.search(r"ok=(\d+)", recap["pipacs-site-a1"]).group(1))
    assert ok > 10 and "failed=0" in recap["pipacs-site-a1"], output
    assert "TASK [daemon : " in output, "the Pi that answered went through the daemon role"
    assert "Not configured, they did not answer: pi-offline." in " ".join(output.split())


def test_check_mode_reports_no_changes(host):
    # Before the reboot test: a container's runtime rewrites its hostname and /etc/hosts at
    # every start (a Pi does not), which a check run would then rightly report.
    if not name_of(host).endswith("a1"):
        return  # the run covers both hosts
    run = run_playbook("converge.yml", "--check", "--diff")
    assert run.returncode == 0, run.output
    assert run.recap()["changed"] == 0, run.output


def test_pipacs_is_back_after_a_reboot(host):
    if not name_of(host).endswith("a1"):
        return  # one reboot is enough
    subprocess.run(["podman", "restart", "--time", "20", name_of(host)], check=True, timeout=120)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if host.run("pipacs-echo").rc == 0:
            break
        time.sleep(2)
    assert host.check_output("systemctl is-active pipacs") == "active"
    assert http_json_remote(host, "/statistics")["CountInstances"] >= 1, "the stored study survived"
