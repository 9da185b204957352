"""What a person would observe on a Pi converged by the base role (see ../converge.yml)."""

import re
import time

import pytest
from pipacs_molecule import assert_no_changes, run_playbook


def test_hostname_is_set_and_resolves(host):
    assert host.check_output("hostname") == "pi-a1"
    assert host.file("/etc/hostname").content_string.strip() == "pi-a1"
    hosts = host.file("/etc/hosts").content_string
    assert re.search(r"^127\.0\.1\.1\s+pi-a1\.school\.lan pi-a1$", hosts, re.MULTILINE), hosts
    assert host.check_output("getent hosts pi-a1").split()[0] == "127.0.1.1"


def test_timezone(host):
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Europe/London"
    assert host.check_output("timedatectl show --property=Timezone --value") == "Europe/London"


def test_locales_generated_and_default(host):
    available = host.check_output("locale -a").split()
    assert "en_GB.utf8" in available
    assert "fr_FR.utf8" in available
    assert host.file("/etc/default/locale").contains("^LANG=en_GB.UTF-8$")


def test_wifi_country(host):
    modprobe = host.file("/etc/modprobe.d/pipacs-wifi-country.conf")
    assert modprobe.contains("^options cfg80211 ieee80211_regdom=FR$")
    assert host.file("/etc/default/crda").contains("^REGDOMAIN=FR$")


@pytest.mark.parametrize("package", ["chrony", "locales", "tzdata", "ca-certificates", "less", "rsync"])
def test_packages_installed(host, package):
    assert host.package(package).is_installed


def test_pipacs_user_cannot_log_in(host):
    user = host.user("pipacs")
    assert user.exists
    assert user.group == "pipacs"
    assert user.home == "/var/lib/pipacs"
    assert user.shell == "/usr/sbin/nologin"
    assert user.uid < 1000, "a system account"
    home = host.file("/var/lib/pipacs")
    assert home.is_directory
    assert (home.user, home.group, home.mode) == ("pipacs", "pipacs", 0o750)
    assert host.run("su -s /bin/sh -c true pipacs").rc == 0
    assert host.run("su -c true pipacs").rc != 0, "the login shell must refuse"


def test_journald_capped_and_volatile(host):
    dropin = host.file("/etc/systemd/journald.conf.d/50-pipacs.conf")
    assert dropin.exists
    assert dropin.contains("^Storage=volatile$")
    assert dropin.contains("^SystemMaxUse=48M$")
    assert dropin.contains("^RuntimeMaxUse=16M$")
    assert host.service("systemd-journald").is_running
    # journald applied it: with Storage=volatile it writes nothing under /var/log/journal.
    assert "/run/log/journal" in host.check_output("journalctl --header | grep 'File path'")


def test_chrony_configured_to_serve_the_classroom(host):
    conf = host.file("/etc/chrony/chrony.conf")
    assert conf.contains("^server 10.42.0.1 iburst$")
    assert conf.contains("^allow 10.42.0.0/24$")
    assert conf.contains("^local stratum 10 orphan$")
    assert host.run("chronyd -p -f /etc/chrony/chrony.conf").rc == 0
    assert host.service("chrony").is_enabled
    # In a container the clock belongs to the host: the unit's CAP_SYS_TIME condition
    # keeps chrony stopped, and systemd-timesyncd was replaced.
    assert not host.package("systemd-timesyncd").is_installed


def test_no_failed_units(host):
    assert host.check_output("systemctl --failed --no-legend --plain") == ""


def test_a_stale_clock_is_found_and_reported(host):
    """A container shares the host's clock and must never set it, so the step itself (`date
    --set` on a real Pi) cannot run here: the controller's time is moved a day ahead instead,
    and the role must see the Pi a day behind and say so, changing nothing."""
    ahead = int(time.time()) + 86400
    run = run_playbook("converge.yml", "--tags", "base_clock", "-e", f"__base_controller_epoch={ahead}")
    assert run.returncode == 0, run.output
    found = re.search(r"differs from the controller's by (\d+) s", run.output)
    assert found, run.output
    assert 86400 - 60 <= int(found.group(1)) <= 86400 + 60
    assert run.recap()["changed"] == 0, run.output
    # In step with the controller: nothing to report.
    run = run_playbook("converge.yml", "--tags", "base_clock")
    assert run.returncode == 0, run.output
    assert "differs from the controller's" not in run.output


def test_apt_proxy_written_and_removed(host):
    proxy = "/etc/apt/apt.conf.d/90pipacs-proxy"
    run = run_playbook("converge.yml", "--tags", "base_install", "-e", "base_apt_proxy=http://10.42.0.9:3142")
    assert run.returncode == 0, run.output
    assert host.file(proxy).contains('^Acquire::http::Proxy "http://10.42.0.9:3142";$')
    run = run_playbook("converge.yml", "--tags", "base_install")
    assert run.returncode == 0, run.output
    assert not host.file(proxy).exists


def test_check_mode_reports_no_changes():
    """`--check --diff` on a converged host reports nothing to change."""
    assert_no_changes(run_playbook("converge.yml", "--check", "--diff"))
