"""Fleet benchmark: the playbooks on N simulated Pis, timed phase by phase.

Starts N systemd containers from the simulated-Pi image (molecule/resources/testbed.sh), on a
podman network of their own, writes an inventory for them (podman connection, the example
inventory's group_vars and vault, host_vars of their own), and times what a school's IT team
runs:

  site        site.yml from scratch on every Pi
  again       site.yml again: must change nothing (changed=0 on every Pi)
  one         site.yml again limited to one Pi (the everyday "fix one Pi" re-run)
  config      config.yml after one Pi's setting changed (rolling: canary, then 25 %)
  upgrade     upgrade.yml to a newer build of pipacs (canary first)
  report      report.yml (read-only: changed=0)

For each phase: wall time, the controller's CPU (ansible-playbook and its children), the Pis'
CPU (the containers' cgroups: their Pythons, sshd, apt, pip), changed counts, and whether every
Pi ended ok. With every Pi on the controller's cores, wall time is about the sum of both CPU
figures over the cores; on a real fleet each Pi brings its own CPU, and the controller's
figure alone bounds the wall time (controller CPU / its cores). ``--profile`` adds
ansible.posix.profile_tasks and prints the slowest tasks of each phase. Everything runs on
this machine: the containers reach only the Debian mirror (for packages the roles install),
and are removed at the end unless ``--keep``.

    sudo .venv/bin/python bench/fleet.py                   # 30 Pis, every phase (about 1 h)
    sudo .venv/bin/python bench/fleet.py --pis 3 --phases site,again,one
    sudo .venv/bin/python bench/fleet.py --pis 30 --forks 30 --profile
    sudo .venv/bin/python bench/fleet.py --pis 5 --strategy linear

``--connection ssh`` reaches the Pis as a real fleet is reached: OpenSSH with the bundle's
ansible.cfg (pipelining, ControlPersist), as user ``pi`` with sudo, on an image derived once from
the simulated-Pi image with openssh-server added (``localhost/pipacs-bookworm-ssh:amd64``) and a key
made for the run; the default. ``--connection podman`` runs every module through ``podman exec``
and ``podman cp`` instead (no pipelining: three or four podman processes per module run), which
costs the controller about three times what SSH does; its figures are an upper bound.

The playbooks run under ansible.cfg's strategy, Mitogen for Ansible (``mitogen_linear``,
requirements.txt, plugins/strategy); ``--strategy linear`` runs Ansible's own. Over ssh
Mitogen takes the SSH connection; over podman the Pis are reached with the short connection
name ``podman``, the one Mitogen replaces with its own (it leaves ``containers.podman.podman``
to Ansible).

The exit status says whether every phase did what it must: every Pi ok, nothing changed by
``again``, ``one`` and ``report``, only the renamed Pi by ``config``, every Pi moved by
``upgrade``. ``make fleet-smoke`` (in ``make test``, so in CI) runs every phase on 2 Pis;
``make bench-fleet`` the 30.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import loadavg, print_table  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"
IMAGE = os.environ.get("PIPACS_TESTBED_IMAGE", "localhost/pipacs-bookworm:amd64")
SSH_IMAGE = os.environ.get("PIPACS_TESTBED_SSH_IMAGE", "localhost/pipacs-bookworm-ssh:amd64")
NETWORK = "pipacs-fleetbench"
PREFIX = "pipacs-fb-"
PHASES = ["site", "again", "one", "config", "upgrade", "report"]
# 30 systemd containers need more inotify instances than the default 128.
INOTIFY_INSTANCES = 1024
RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)
PROFILE_LINE = re.compile(r"^(?P<task>.+?) -+ (?P<secs>\d+\.\d+)s$", re.MULTILINE)


@dataclass
class Phase:
    name: str
    playbook: str
    seconds: float = 0.0
    controller_cpu: float = 0.0
    pis_cpu: float = 0.0
    rc: int = 0
    changed: dict[str, int] = field(default_factory=dict)
    failed_hosts: list[str] = field(default_factory=list)
    slowest: list[tuple[str, float]] = field(default_factory=list)


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, capture_output=True, check=False, **kw)  # type: ignore[call-overload, no-any-return]


def host_fixes() -> None:
    """What 30 containers need from the host besides testbed.sh's fixes."""
    knob = Path("/proc/sys/fs/inotify/max_user_instances")
    if int(knob.read_text()) < INOTIFY_INSTANCES:
        knob.write_text(str(INOTIFY_INSTANCES))
        print(f"fs.inotify.max_user_instances raised to {INOTIFY_INSTANCES}")


def names(count: int) -> list[str]:
    return [f"{PREFIX}{i:02d}" for i in range(1, count + 1)]


def need_base_image() -> None:
    if run(["podman", "image", "exists", IMAGE]).returncode != 0:
        sys.exit(f"{IMAGE} not found: run molecule/resources/testbed.sh all first")


def ssh_image() -> str:
    """The simulated-Pi image with OpenSSH and the login a real Pi has (built once, cached)."""
    if run(["podman", "image", "exists", SSH_IMAGE]).returncode == 0:
        return SSH_IMAGE
    print(f"building {SSH_IMAGE} from {IMAGE} (openssh-server from the Debian mirror), once")
    with tempfile.TemporaryDirectory() as ctx:
        (Path(ctx) / "Containerfile").write_text(
            f"FROM {IMAGE}\n"
            "RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -qy "
            "--no-install-recommends openssh-server && apt-get clean "
            "&& useradd -m -s /bin/bash pi && install -d -m 700 -o pi -g pi /home/pi/.ssh "
            "&& echo 'pi ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/010_pi-nopasswd "
            "&& chmod 440 /etc/sudoers.d/010_pi-nopasswd && systemctl enable ssh\n"
        )
        proc = run(["podman", "build", "-q", "-t", SSH_IMAGE, ctx])
    if proc.returncode != 0:
        sys.exit(f"cannot build {SSH_IMAGE}: {proc.stderr.strip()[-2000:]}")
    return SSH_IMAGE


def start_pis(count: int, image: str = IMAGE) -> None:
    stop_pis()
    if run(["podman", "network", "exists", NETWORK]).returncode != 0:
        run(["podman", "network", "create", NETWORK])
    for name in names(count):
        proc = run([
            "podman", "run", "-d", "--name", name, "--hostname", "pi-unnamed",
            "--network", NETWORK, "--systemd=always", "--cap-add", "SYS_ADMIN",
            "--cap-add", "NET_ADMIN", "--cap-add", "NET_RAW", image, "/sbin/init",
        ])
        if proc.returncode != 0:
            sys.exit(f"cannot start {name}: {proc.stderr.strip()}")
    deadline = time.monotonic() + 120
    for name in names(count):
        while True:
            state = run(["podman", "exec", name, "systemctl", "is-system-running"]).stdout.strip()
            if state in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                sys.exit(f"{name} did not boot (systemd: {state or 'no answer'})")
            time.sleep(1)


def authorize(count: int, public_key: Path) -> dict[str, str]:
    """The run's key in each Pi's ~pi/.ssh; returns each Pi's address on the bench network."""
    addresses = {}
    key = public_key.read_text()
    for name in names(count):
        keys = "/home/pi/.ssh/authorized_keys"
        proc = run(["podman", "exec", "-i", name, "sh", "-c",
                    f"cat >{keys} && chown pi:pi {keys} && chmod 600 {keys}"], input=key)
        if proc.returncode != 0:
            sys.exit(f"cannot authorize the key on {name}: {proc.stderr.strip()}")
        fmt = '{{(index .NetworkSettings.Networks "' + NETWORK + '").IPAddress}}'
        addresses[name] = run(["podman", "inspect", "-f", fmt, name]).stdout.strip()
        if not addresses[name]:
            sys.exit(f"{name} has no address on {NETWORK}")
    return addresses


def stop_pis() -> None:
    listed = run(["podman", "ps", "-a", "--format", "{{.Names}}"]).stdout.split()
    ours = [n for n in listed if n.startswith(PREFIX)]
    if ours:
        run(["podman", "rm", "-f", "-t", "2", *ours])


def pis_cpu(count: int) -> float:
    """CPU seconds the simulated Pis have used so far (their containers' cgroups, v2 or v1)."""
    total = 0.0
    for name in names(count):
        path = run(["podman", "inspect", "-f", "{{.State.CgroupPath}}", name]).stdout.strip()
        if not path:
            continue
        v2 = Path(f"/sys/fs/cgroup{path}/cpu.stat")
        v1 = Path(f"/sys/fs/cgroup/cpuacct{path}/cpuacct.usage")
        if v2.exists():
            usage = re.search(r"^usage_usec (\d+)", v2.read_text(), re.M)
            total += int(usage[1]) / 1e6 if usage else 0.0
        elif v1.exists():
            total += int(v1.read_text()) / 1e9
    return total


def configured(key: str, default: str) -> str:
    """A [defaults] setting of the repository's ansible.cfg (the bench runs with it)."""
    found = re.search(rf"^{key}\s*=\s*(\S+)", (REPO / "ansible.cfg").read_text(), re.M)
    return found[1] if found else default


def check_mitogen() -> None:
    """Exit unless the venv's Python has Mitogen (ansible.cfg finds its strategy in plugins/)."""
    proc = run([str(VENV_BIN / "python"), "-c", "import ansible_mitogen"])
    if proc.returncode != 0:
        sys.exit("Mitogen is not installed in the venv: .venv/bin/pip install -r requirements.txt")


def write_inventory(folder: Path, count: int, source: Path,
                    connection: str = "containers.podman.podman",
                    addresses: dict[str, str] | None = None) -> Path:
    """An inventory shaped like the example school's, one classroom PACS Pi per container."""
    inventory = folder / "inventory"
    (inventory / "host_vars").mkdir(parents=True)
    (inventory / "group_vars").symlink_to(REPO / "inventory" / "example" / "group_vars")
    hosts = "".join(f"        {n}:\n" for n in names(count))
    (inventory / "hosts.yml").write_text(
        f"all:\n  children:\n    classroom:\n      hosts:\n{hosts}    pacs:\n      hosts:\n{hosts}"
    )
    for i, name in enumerate(names(count), start=1):
        if addresses:  # ssh: user pi with sudo, as group_vars/all has it for real Pis
            login = (f"ansible_host: {addresses[name]}\n"
                     f"ansible_ssh_private_key_file: {folder / 'id_ed25519'}\n"
                     "ansible_host_key_checking: false\n"  # Mitogen's own ssh reads this
                     "ansible_ssh_extra_args: -o StrictHostKeyChecking=no"
                     " -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR\n")
        else:
            login = (f"ansible_connection: {connection}\n"
                     "ansible_user: root\n"
                     "ansible_become: false\n")
        (inventory / "host_vars" / f"{name}.yml").write_text(
            "---\n"
            f"{login}"
            f"server_name: Bench Pi {i}\n"
            f"server_dicom_aet: PACS_FB{i:02d}\n"
            f"base_hostname: pi-fb{i:02d}\n"
            f"server_source_dir: {source}\n"
            f"server_build_dir: {folder / 'build'}\n"
            f"fleet_controller_dir: {folder / 'fleet-data'}\n"
        )
    # As the example inventory's: Mitogen takes become for a task delegated to the controller
    # from the controller's variables (group_vars/all: ansible_become true), not from the
    # task's `become: false`, and would run sudo on the controller.
    shutil.copy(REPO / "inventory" / "example" / "host_vars" / "localhost.yml",
                inventory / "host_vars" / "localhost.yml")
    return inventory


def snapshot_source(dest: Path, version: str | None = None) -> Path:
    """A copy of server/ (colleagues editing it meanwhile do not make a new release)."""
    shutil.copytree(
        REPO / "server", dest,
        ignore=shutil.ignore_patterns("tests", "build", "*.egg-info", "__pycache__"),
    )
    if version:
        init = dest / "src" / "pipacs" / "__init__.py"
        text = re.sub(r'__version__ = "[^"]+"', f'__version__ = "{version}"', init.read_text())
        init.write_text(text)
    return dest


def play(phase: Phase, inventory: Path, logs: Path, args: list[str], forks: int,
         profile: bool, strategy: str, count: int) -> Phase:
    env = dict(
        os.environ,
        PATH=f"{VENV_BIN}:{os.environ['PATH']}",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_FORKS=str(forks),
        ANSIBLE_VAULT_PASSWORD_FILE=str(REPO / "inventory" / "example" / ".vault-pass.example"),
        ANSIBLE_CACHE_PLUGIN="jsonfile",
        ANSIBLE_CACHE_PLUGIN_CONNECTION=str(inventory.parent / "facts"),
    )
    if strategy:
        env["ANSIBLE_STRATEGY"] = strategy
    if profile:
        env["ANSIBLE_CALLBACKS_ENABLED"] = "ansible.posix.timer,ansible.posix.profile_tasks"
        env["PROFILE_TASKS_TASK_OUTPUT_LIMIT"] = "15"
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory),
           str(REPO / "playbooks" / phase.playbook), *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pis_before = pis_cpu(count)
    start = time.monotonic()
    log = logs / f"{phase.name}.log"  # written as the play goes: `tail -f` it
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                              check=False)
    phase.seconds = time.monotonic() - start
    phase.pis_cpu = pis_cpu(count) - pis_before
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    phase.controller_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    phase.rc = proc.returncode
    output = log.read_text()
    for m in RECAP.finditer(output):
        phase.changed[m["host"]] = int(m["changed"])
        if int(m["failed"]) or int(m["unreachable"]):
            phase.failed_hosts.append(m["host"])
    if profile:
        tail = output.rsplit("PLAY RECAP", 1)[-1]
        phase.slowest = [(m["task"].strip(), float(m["secs"])) for m in PROFILE_LINE.finditer(tail)]
    return phase


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pis", type=int, default=30, metavar="N", help="simulated Pis (30)")
    ap.add_argument("--forks", type=int, default=0, metavar="F",
                    help="Ansible forks (default: ansible.cfg's)")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help=f"comma-separated, in order (default {','.join(PHASES)})")
    ap.add_argument("--profile", action="store_true", help="profile_tasks: slowest tasks")
    ap.add_argument("--strategy", default="", metavar="S",
                    help="Ansible strategy: linear, free, mitogen_linear "
                         "(default: ansible.cfg's)")
    ap.add_argument("--connection", choices=["ssh", "podman"], default="ssh",
                    help="how the controller reaches the Pis: ssh as real Pis (default), or "
                         "podman exec/cp (the earlier figures' transport, an upper bound)")
    ap.add_argument("--keep", action="store_true", help="keep the containers and temp folder")
    args = ap.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    unknown = set(phases) - set(PHASES)
    if unknown:
        ap.error(f"unknown phase(s): {', '.join(sorted(unknown))}")
    if os.geteuid() != 0:
        sys.exit("run as root (rootful podman, as molecule here)")
    forks = args.forks or int(configured("forks", "5"))
    # A SIGTERM (timeout, CI) ends the run through the finally below: the containers go too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    host_fixes()
    folder = Path(tempfile.mkdtemp(prefix="pipacs-fleetbench-"))
    logs = folder / "logs"
    logs.mkdir()
    source = snapshot_source(folder / "server-src")
    # The strategy in effect: --strategy, else ansible.cfg's (mitogen_linear).
    strategy = args.strategy or configured("strategy", "linear")
    mitogen = strategy.startswith("mitogen")
    if mitogen:
        check_mitogen()  # before any container starts
    ssh = args.connection == "ssh"
    need_base_image()  # the SSH image is built from it
    image = ssh_image() if ssh else IMAGE
    print(f"{args.pis} simulated Pis over {args.connection}, forks {forks}, strategy "
          f"{strategy}, load {loadavg()}, logs in {logs}")
    t0 = time.monotonic()
    start_pis(args.pis, image)
    addresses = None
    if ssh:
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "id_ed25519")])
        addresses = authorize(args.pis, folder / "id_ed25519.pub")
    inventory = write_inventory(folder, args.pis, source,
                                "podman" if mitogen else "containers.podman.podman", addresses)
    print(f"containers up in {time.monotonic() - t0:.0f} s")
    first = names(args.pis)[0]
    results: list[Phase] = []
    try:
        for name in phases:
            extra: list[str] = []
            playbook = "site.yml"
            if name == "one":
                extra = ["--limit", first]
            elif name == "config":
                playbook = "config.yml"
                hv = inventory / "host_vars" / f"{first}.yml"
                hv.write_text(hv.read_text().replace("server_name: Bench Pi 1",
                                                     "server_name: Bench Pi 1 (renamed)"))
            elif name == "upgrade":
                playbook = "upgrade.yml"
                newer = snapshot_source(folder / "server-src-next", "0.99.1")
                extra = ["-e", f"server_source_dir={newer}",
                         "-e", f"server_build_dir={folder / 'build-next'}"]
            elif name == "report":
                playbook = "report.yml"
            phase = play(Phase(name, playbook), inventory, logs, extra, forks, args.profile,
                         strategy, args.pis)
            results.append(phase)
            changed = sum(phase.changed.values())
            print(f"{name:8} {phase.seconds:7.1f} s  controller CPU {phase.controller_cpu:.0f} s  "
                  f"Pis CPU {phase.pis_cpu:.0f} s  rc={phase.rc} changed={changed} "
                  f"hosts changed={sum(1 for v in phase.changed.values() if v)}"
                  f"/{len(phase.changed)} failed={len(phase.failed_hosts)}  load {loadavg()}",
                  flush=True)
            if phase.rc != 0 and name == "site":
                print(f"site.yml failed: see {logs / 'site.log'}; later phases skipped")
                break
    finally:
        if not args.keep:
            stop_pis()
    rows = []
    for p in results:
        rows.append([
            f"{p.name} ({p.playbook})", f"{p.seconds:.1f}", f"{p.controller_cpu:.1f}",
            f"{p.pis_cpu:.1f}",
            str(sum(p.changed.values())),
            f"{sum(1 for v in p.changed.values() if v)}/{len(p.changed)}",
            str(len(p.failed_hosts)), str(p.rc),
        ])
    print_table(
        ["phase", "wall s", "controller CPU s", "Pis CPU s", "changed", "Pis changed",
         "Pis failed", "rc"],
        rows, title=f"Fleet of {args.pis} simulated Pis over {args.connection}, forks {forks}, "
                    f"strategy {strategy}",
    )
    for p in results:
        if p.slowest:
            print_table(["task", "s"], [[t, f"{s:.1f}"] for t, s in p.slowest[:15]],
                        title=f"Slowest tasks: {p.name}")
    if args.keep:
        print(f"kept: containers {PREFIX}*, folder {folder}")
    else:
        shutil.rmtree(folder, ignore_errors=True)
    problems = check_results(results, first)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


def check_results(results: list[Phase], first: str) -> list[str]:
    """What each phase must have done; empty when all did (the exit status of the run)."""
    problems = []
    for p in results:
        changed = sorted(h for h, c in p.changed.items() if c)
        if p.rc != 0 or p.failed_hosts:
            problems.append(f"{p.name}: rc={p.rc}, failed or unreachable: "
                            f"{', '.join(p.failed_hosts) or 'none'}")
        if not p.changed:
            problems.append(f"{p.name}: no play recap in its log")
        elif p.name in ("again", "one", "report") and changed:
            problems.append(f"{p.name}: NOT IDEMPOTENT, changed on {', '.join(changed)}")
        elif p.name == "config" and changed != [first]:
            problems.append(f"config: changed {changed or 'nothing'}, expected only {first}")
        elif p.name == "upgrade" and len(changed) != len(p.changed):
            problems.append(f"upgrade: moved {len(changed)} of {len(p.changed)} Pis")
    return problems


if __name__ == "__main__":
    sys.exit(main())
