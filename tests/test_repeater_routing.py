"""A routed repeater, run for real in network namespaces: the classroom Pi, the repeater Pi and a
tablet, joined by veth pairs named as the radios are on the Pis (wlan0, wlan1).

  tablet wlan0 --- wlan1 repeater wlan0 --- wlan0 classroom Pi (10.42.0.1)
  10.42.1.x        10.42.1.1    10.42.0.x   dnsmasq, captive portal on :80

The veth pairs stand in for the Wi-Fi association, the only thing mocked (no radio can exist
on this machine). Everything else is the real program with the roles' rendered files: the
classroom Pi's dnsmasq (hotspot role), the repeater's dnsmasq (the hotspot role's template
with the values the repeater role passes it), its nftables NAT (repeater role) and IP
forwarding; busybox udhcpc for the repeater's uplink lease and the tablet's lease; dig; and an
HTTP probe through the repeater to the classroom Pi's captive-portal responder.

Needs root, and the Debian packages of test_hotspot_dhcp.py plus nftables (installed if missing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_hotspot_dhcp import PROBE, WELCOME, Dnsmasq, Lease, render, render_role, sh, udhcpc

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

TOOLS = {"dnsmasq": "dnsmasq-base", "busybox": "busybox", "dig": "bind9-dnsutils", "nft": "nftables",
         "systemd-socket-activate": "systemd"}  # fmt: skip


@pytest.fixture(scope="module")
def tools() -> None:
    missing = sorted({pkg for tool, pkg in TOOLS.items() if not shutil.which(tool, path="/usr/sbin:/usr/bin")})
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env, timeout=600
        )


@dataclass
class Room:
    classroom: str
    repeater: str
    tablet: str
    workdir: Path
    uplink: Lease | None = None
    lease: Lease | None = None


def link(a: str, a_name: str, b: str, b_name: str, tag: str) -> None:
    """A veth pair between namespaces a and b, named a_name and b_name inside them."""
    tmp_a, tmp_b = f"pa{tag}", f"pb{tag}"
    sh("ip", "link", "add", tmp_a, "netns", a, "type", "veth", "peer", "name", tmp_b, "netns", b)
    sh("ip", "-n", a, "link", "set", tmp_a, "name", a_name)
    sh("ip", "-n", b, "link", "set", tmp_b, "name", b_name)
    sh("ip", "-n", a, "link", "set", a_name, "up")
    sh("ip", "-n", b, "link", "set", b_name, "up")


@pytest.fixture(scope="module")
def room(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Room]:
    tag = f"{os.getpid() % 100000}"
    r = Room(f"pipacs-cls-{tag}", f"pipacs-rep-{tag}", f"pipacs-rtab-{tag}", tmp_path_factory.mktemp("repeater"))
    servers: list[Dnsmasq] = []
    portal: subprocess.Popen[bytes] | None = None
    try:
        for ns in (r.classroom, r.repeater, r.tablet):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        link(r.classroom, "wlan0", r.repeater, "wlan0", tag)
        link(r.repeater, "wlan1", r.tablet, "wlan0", f"{tag}b")

        # The classroom Pi: the hotspot role's defaults (captive portal "welcome").
        classroom_dir = r.workdir / "classroom"
        classroom_dir.mkdir()
        sh("ip", "-n", r.classroom, "address", "add", "10.42.0.1/24", "dev", "wlan0")
        hotspot = render(classroom_dir, hotspot_hostname="pi-a1")
        servers.append(Dnsmasq(r.classroom, hotspot["dnsmasq"], "10.42.0.1", "pacs.classroom"))
        portal = subprocess.Popen(
            ["ip", "netns", "exec", r.classroom, "systemd-socket-activate", "--listen", "10.42.0.1:80",
             "--accept", "--inetd", str(hotspot["portal"])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        # The repeater: its uplink joins the classroom network by DHCP, like a Wi-Fi client.
        repeater_dir = r.workdir / "repeater"
        repeater_dir.mkdir()
        r.uplink = udhcpc(r.repeater, "wlan0", repeater_dir, servers[0])
        sh("ip", "netns", "exec", r.repeater, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        nat = render_role(repeater_dir, "repeater", {"nat": ("etc/pipacs/repeater-nat.nft.j2", "nat.nft")})["nat"]
        assert sh("ip", "netns", "exec", r.repeater, "nft", "--check", "--file", str(nat)).returncode == 0
        sh("ip", "netns", "exec", r.repeater, "nft", "--file", str(nat))
        # Its access point side: the hotspot role's template with what tasks/main.yml of the
        # repeater role passes for routed mode (defaults: 10.42.1.1/24, DNS from the classroom Pi).
        sh("ip", "-n", r.repeater, "address", "add", "10.42.1.1/24", "dev", "wlan1")
        served = render(
            repeater_dir,
            hotspot_interface="wlan1",
            hotspot_hostname="pi-a2",
            hotspot_address="10.42.1.1",
            hotspot_dhcp_start="10.42.1.50",
            hotspot_dhcp_end="10.42.1.250",
            hotspot_dns_upstream=[r.uplink.router],
            hotspot_friendly_names=[],
        )
        servers.append(Dnsmasq(r.repeater, served["dnsmasq"], "10.42.1.1", "pi-a2"))

        # The tablet joins the repeater.
        r.lease = udhcpc(r.tablet, "wlan0", r.workdir, servers[1])
        Path(f"/etc/netns/{r.tablet}").mkdir(parents=True, exist_ok=True)
        Path(f"/etc/netns/{r.tablet}/resolv.conf").write_text(f"nameserver {r.lease.dns}\n")
        yield r
    finally:
        if portal:
            portal.terminate()
            portal.wait(timeout=10)
        for server in servers:
            server.stop()
        for ns in (r.classroom, r.repeater, r.tablet):
            sh("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(f"/etc/netns/{r.tablet}", ignore_errors=True)


def test_repeater_uplink_gets_a_classroom_lease(room: Room) -> None:
    assert room.uplink is not None
    assert room.uplink.ip.startswith("10.42.0.")
    assert room.uplink.router == "10.42.0.1"


def test_tablet_gets_a_lease_from_the_repeater(room: Room) -> None:
    assert room.lease is not None
    last = int(room.lease.ip.rsplit(".", 1)[1])
    assert room.lease.ip.startswith("10.42.1.") and 50 <= last <= 250
    assert (room.lease.router, room.lease.dns) == ("10.42.1.1", "10.42.1.1")


@pytest.mark.parametrize("name", ["pacs.classroom", "pi-a1.classroom", "captive.apple.com"])
def test_names_are_answered_by_the_classroom_pi_through_the_repeater(room: Room, name: str) -> None:
    start = time.monotonic()
    answer = sh("ip", "netns", "exec", room.tablet, "dig", "+short", "+time=2", "+tries=1", "@10.42.1.1", name)
    assert answer.stdout.split() == ["10.42.0.1"]
    assert time.monotonic() - start < 1.0


def test_repeater_answers_its_own_name(room: Room) -> None:
    answer = sh("ip", "netns", "exec", room.tablet, "dig", "+short", "+time=2", "+tries=1", "@10.42.1.1", "pi-a2")
    assert answer.stdout.split() == ["10.42.1.1"]


def test_probe_reaches_the_classroom_portal_through_the_nat(room: Room) -> None:
    """The classroom Pi has no route to the repeater's subnet: the answer comes back only
    because the repeater masquerades the tablet behind its uplink address."""
    route = sh("ip", "-n", room.classroom, "route", "get", "10.42.1.50", check=False)
    assert route.returncode != 0, "no route back: the NAT carries the reply"
    fetch = sh(
        "ip", "netns", "exec", room.tablet, sys.executable, "-c", PROBE, "captive.apple.com", "/hotspot-detect.html"
    )
    assert fetch.stdout.split() == ["302", WELCOME]
