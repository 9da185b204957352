"""The hotspot role's dnsmasq configuration and captive-portal responder, run for real.

The role's templates are rendered by Ansible, then served in a network namespace that this
test creates: an "access point" namespace and a "tablet" namespace joined by a veth pair.
The veth stands in for the Wi-Fi radio, the only thing mocked here (this machine's kernel has
no cfg80211, so no radio can be simulated); DHCP, DNS and HTTP are the real programs:

  tablet: busybox udhcpc  --DHCP-->  dnsmasq (rendered pipacs-hotspot.conf)  :access point
  tablet: dig, busybox wget --DNS, HTTP-->  dnsmasq, systemd-socket-activate + hotspot-portal

Needs root and dnsmasq, busybox, iproute2, dig (bind9-dnsutils), systemd-socket-activate
(systemd); missing Debian packages are installed first.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playbook_run import ansible_playbook

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Binary -> Debian package that provides it.
TOOLS = {
    "dnsmasq": "dnsmasq-base",
    "busybox": "busybox",
    "ip": "iproute2",
    "dig": "bind9-dnsutils",
    "systemd-socket-activate": "systemd",
}
AP_ADDRESS = "10.42.0.1"
FRIENDLY = "pacs.classroom"
WELCOME = "http://pacs.classroom:8042/"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


@pytest.fixture(scope="module")
def tools() -> None:
    """Install the Debian packages the test needs, only those missing."""
    missing = sorted(
        {pkg for tool, pkg in TOOLS.items() if not shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")}
    )
    if missing:
        if not shutil.which("apt-get"):
            pytest.skip(f"missing {', '.join(missing)} and no apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env, timeout=600
        )


def render_role(dest: Path, role: str, templates: dict[str, tuple[str, str]], **variables: object) -> dict[str, Path]:
    """Render templates of a role (name -> (template, output file name)) into `dest`, with the
    role's defaults and vars and `variables`, as Ansible would on a Pi."""
    role_dir = ROOT / "roles" / role
    playbook = dest / f"render-{role}.yml"
    extra = dest / f"vars-{role}.json"
    extra.write_text(json.dumps({"ansible_python_interpreter": sys.executable, **variables}))
    targets = {name: (src, dest / out) for name, (src, out) in templates.items()}
    tasks = [
        {
            "name": f"Render {name}",
            "ansible.builtin.template": {"src": str(role_dir / "templates" / src), "dest": str(out), "mode": "0755"},
        }
        for name, (src, out) in targets.items()
    ]
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": f"Render the {role} templates",
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "vars_files": [str(role_dir / "defaults" / "main.yml"), str(role_dir / "vars" / "main.yml")],
                    "tasks": tasks,
                }
            ]
        )
    )
    ansible_playbook("-i", "localhost,", str(playbook), "-e", f"@{extra}",
                     env={"ANSIBLE_VAULT_PASSWORD_FILE": None})
    return {name: out for name, (_, out) in targets.items()}


def render(dest: Path, **variables: object) -> dict[str, Path]:
    """The hotspot role's dnsmasq configuration and captive-portal responder."""
    templates = {
        "dnsmasq": ("etc/dnsmasq.d/pipacs-hotspot.conf.j2", "dnsmasq.conf"),
        "portal": ("usr/local/lib/pipacs/hotspot-portal.j2", "hotspot-portal"),
    }
    return render_role(dest, "hotspot", templates, **variables)


@dataclass
class Classroom:
    """Two namespaces on a veth pair; the access point side has the classroom address."""

    ap: str
    tablet: str
    ap_if: str
    tablet_if: str
    workdir: Path

    def ap_run(self, *cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ap, *cmd, **kw)  # type: ignore[arg-type]

    def tablet_run(self, *cmd: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.tablet, *cmd, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def classroom(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Classroom]:
    tag = f"{os.getpid() % 100000}"
    room = Classroom(
        ap=f"pipacs-ap-{tag}",
        tablet=f"pipacs-tab-{tag}",
        ap_if=f"pap{tag}",
        tablet_if=f"ptab{tag}",
        workdir=tmp_path_factory.mktemp("classroom"),
    )
    try:
        sh("ip", "netns", "add", room.ap)
        sh("ip", "netns", "add", room.tablet)
        sh(
            "ip",
            "link",
            "add",
            room.ap_if,
            "netns",
            room.ap,
            "type",
            "veth",
            "peer",
            "name",
            room.tablet_if,
            "netns",
            room.tablet,
        )
        room.ap_run("ip", "link", "set", "lo", "up")
        room.ap_run("ip", "address", "add", f"{AP_ADDRESS}/24", "dev", room.ap_if)
        room.ap_run("ip", "link", "set", room.ap_if, "up")
        room.tablet_run("ip", "link", "set", "lo", "up")
        room.tablet_run("ip", "link", "set", room.tablet_if, "up")
        yield room
    finally:
        sh("ip", "netns", "delete", room.ap, check=False)
        sh("ip", "netns", "delete", room.tablet, check=False)
        shutil.rmtree(f"/etc/netns/{room.tablet}", ignore_errors=True)


class Dnsmasq:
    """dnsmasq in a namespace with a rendered configuration, ready once it answers `probe`."""

    def __init__(self, namespace: str, conf: Path, address: str = AP_ADDRESS, probe: str = FRIENDLY) -> None:
        self.log = conf.with_suffix(".log")
        self.proc = subprocess.Popen(
            [
                "ip", "netns", "exec", namespace, "dnsmasq", "--keep-in-foreground", f"--conf-file={conf}",
                f"--pid-file={conf.with_suffix('.pid')}", f"--dhcp-leasefile={conf.with_suffix('.leases')}",
                "--user=root", "--group=root", f"--log-facility={self.log}", "--log-queries", "--log-dhcp",
            ]
        )  # fmt: skip
        for _ in range(50):
            ready = sh("ip", "netns", "exec", namespace, "dig", "+short", "+time=1", "+tries=1", f"@{address}", probe,
                       check=False)  # fmt: skip
            if ready.stdout.strip():
                return
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"dnsmasq did not answer: {self.log.read_text() if self.log.exists() else ''}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)


@dataclass
class Lease:
    ip: str
    router: str
    dns: str
    domain: str
    lease: int
    ntp: str


def dig(room: Classroom, server: str, name: str, rtype: str = "A") -> tuple[str, list[str], float]:
    """(status, answers, seconds) of one query from the tablet."""
    start = time.monotonic()
    out = room.tablet_run("dig", "+time=2", "+tries=1", f"@{server}", name, rtype).stdout
    took = time.monotonic() - start
    status = out.split("status: ", 1)[1].split(",", 1)[0]
    answers = room.tablet_run("dig", "+short", "+time=2", "+tries=1", f"@{server}", name, rtype).stdout.split()
    return status, answers, took


def udhcpc(namespace: str, interface: str, workdir: Path, server: Dnsmasq) -> Lease:
    """Get a lease on `interface` with busybox udhcpc, as a tablet does; apply it (address and
    default route) and return it."""
    # udhcpc calls this with the lease in its environment.
    script = workdir / f"udhcpc-{namespace}.sh"
    lease_file = workdir / f"lease-{namespace}.env"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = bound ]; then\n'
        '  ip address flush dev "$interface"\n'
        '  ip address add "$ip/$subnet" dev "$interface"\n'
        '  ip route replace default via "$router" dev "$interface"\n'
        '  printf "ip=%s\\nrouter=%s\\ndns=%s\\ndomain=%s\\nlease=%s\\nntp=%s\\n" '
        f'"$ip" "$router" "$dns" "$domain" "$lease" "$ntpsrv" > {lease_file}\n'
        "fi\n"
    )
    script.chmod(0o755)
    lease_file.unlink(missing_ok=True)
    # -O ntpsrv: ask for the NTP servers too, as tablets do.
    command = ["busybox", "udhcpc", "-i", interface, "-f", "-q", "-n", "-t", "5", "-T", "1", "-O", "ntpsrv"]
    command += ["-s", str(script)]
    got = sh("ip", "netns", "exec", namespace, *command, timeout=30, check=False)
    assert lease_file.exists(), got.stdout + got.stderr + server.log.read_text()
    values = dict(line.split("=", 1) for line in lease_file.read_text().splitlines())
    return Lease(values["ip"], values["router"], values["dns"], values["domain"], int(values["lease"]), values["ntp"])


@pytest.fixture(scope="module", params=["welcome", "off"])
def served(request: pytest.FixtureRequest, classroom: Classroom) -> Iterator[tuple[str, Lease]]:
    """dnsmasq with the rendered configuration (hotspot_captive_portal = the param), and a
    tablet that got a lease from it and uses it as its resolver."""
    mode = request.param
    workdir = classroom.workdir / mode
    workdir.mkdir()
    files = render(
        workdir,
        hotspot_interface=classroom.ap_if,
        hotspot_hostname="pi-a1",
        hotspot_dhcp_lease_time="4h",
        hotspot_captive_portal=mode,
    )
    checked = sh("dnsmasq", "--test", f"--conf-file={files['dnsmasq']}", check=False)
    assert checked.returncode == 0, checked.stderr
    server = Dnsmasq(classroom.ap, files["dnsmasq"])
    try:
        lease = udhcpc(classroom.tablet, classroom.tablet_if, workdir, server)
        # The tablet's resolver, as its lease says (`ip netns exec` mounts this file over
        # /etc/resolv.conf inside the namespace).
        Path(f"/etc/netns/{classroom.tablet}").mkdir(parents=True, exist_ok=True)
        Path(f"/etc/netns/{classroom.tablet}/resolv.conf").write_text(
            f"nameserver {lease.dns}\nsearch {lease.domain}\n"
        )
        yield mode, lease
    finally:
        server.stop()


def test_tablet_gets_a_lease_from_the_classroom_range(served: tuple[str, Lease]) -> None:
    _, lease = served
    last = int(lease.ip.rsplit(".", 1)[1])
    assert lease.ip.startswith("10.42.0.") and 50 <= last <= 250, lease
    assert lease.router == AP_ADDRESS
    assert lease.dns == AP_ADDRESS
    assert lease.domain == "classroom"
    assert lease.lease == 4 * 3600
    assert lease.ntp == AP_ADDRESS, "the classroom Pi is the tablets' time server"


@pytest.mark.parametrize("name", [FRIENDLY, "pi-a1", "pi-a1.classroom"])
def test_classroom_names_resolve_to_the_access_point(
    classroom: Classroom, served: tuple[str, Lease], name: str
) -> None:
    status, answers, _ = dig(classroom, served[1].dns, name)
    assert (status, answers) == ("NOERROR", [AP_ADDRESS])


@pytest.mark.parametrize(
    "name", ["captive.apple.com", "connectivitycheck.gstatic.com", "www.msftconnecttest.com", "example.org"]
)
def test_every_other_name_answers_at_once(classroom: Classroom, served: tuple[str, Lease], name: str) -> None:
    """Offline, nothing waits for an upstream server that cannot answer: with the captive
    portal every name is the access point, without it every unknown name is NXDOMAIN."""
    mode, lease = served
    status, answers, took = dig(classroom, lease.dns, name)
    if mode == "off":
        assert (status, answers) == ("NXDOMAIN", [])
    else:
        assert (status, answers) == ("NOERROR", [AP_ADDRESS])
    assert took < 1.0


# An iPad's probe: resolve the host, GET the page, print the status and the Location header.
PROBE = """
import http.client, sys
connection = http.client.HTTPConnection(sys.argv[1], 80, timeout=5)
connection.request("GET", sys.argv[2], headers={"User-Agent": "CaptiveNetworkSupport/1.0 wispr"})
answer = connection.getresponse()
print(answer.status, answer.getheader("Location"))
"""


@pytest.mark.parametrize("served", ["welcome"], indirect=True)
def test_probe_is_redirected_to_the_welcome_page(classroom: Classroom, served: tuple[str, Lease]) -> None:
    """What an iPad does on joining: resolve captive.apple.com, fetch its probe page over HTTP.

    The responder runs as its systemd socket unit runs it (Accept=yes, the connection on
    stdin/stdout), here through systemd-socket-activate in the access point namespace.
    """
    portal = classroom.workdir / "welcome" / "hotspot-portal"
    listener = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            classroom.ap,
            "systemd-socket-activate",
            "--listen",
            f"{AP_ADDRESS}:80",
            "--accept",
            "--inetd",
            str(portal),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(50):
            if f"{AP_ADDRESS}:80" in classroom.ap_run("ss", "-ltn").stdout:
                break
            time.sleep(0.1)
        # Resolved by the tablet's own resolver (resolv.conf from its lease), as a browser would.
        fetch = classroom.tablet_run(sys.executable, "-c", PROBE, "captive.apple.com", "/hotspot-detect.html")
        status, location = fetch.stdout.split()
        assert (status, location) == ("302", WELCOME)
    finally:
        listener.terminate()
        listener.wait(timeout=10)
