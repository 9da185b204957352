"""The example inventory describes each classroom's Wi-Fi once: the repeater Pi joins and serves
exactly what its classroom's hotspot Pi serves (the repeater role's defaults, resolved by Ansible
for the example hosts; nothing is contacted)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from playbook_run import ansible_playbook

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHOWN = [
    "repeater_upstream_host",
    "repeater_upstream_ssid",
    "repeater_upstream_passphrase",
    "repeater_upstream_address",
    "repeater_ssid",
    "repeater_passphrase",
    "repeater_country",
    "repeater_channel",
]


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """The repeater role's variables as Ansible resolves them for each example repeater."""
    # A role whose defaults are the repeater role's (lowest precedence, as in a real run), and
    # whose only task shows them.
    workdir = tmp_path_factory.mktemp("inventory")
    role = workdir / "roles" / "show_repeater"
    (role / "defaults").mkdir(parents=True)
    (role / "tasks").mkdir()
    (role / "defaults" / "main.yml").symlink_to(ROOT / "roles" / "repeater" / "defaults" / "main.yml")
    (role / "tasks" / "main.yml").write_text(
        json.dumps(
            [
                {
                    "name": "Show them",
                    "ansible.builtin.debug": {"msg": {name: f"{{{{ {name} }}}}" for name in SHOWN}},
                }
            ]
        )
    )
    playbook = workdir / "show.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "Show the repeater variables",
                    "hosts": "repeaters",
                    "gather_facts": False,
                    "roles": ["show_repeater"],
                }
            ]
        )
    )
    run = ansible_playbook("-i", "inventory/example/hosts.yml", str(playbook), env={
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_VAULT_PASSWORD_FILE": str(ROOT / "inventory" / "example" / ".vault-pass.example"),
        "ANSIBLE_ROLES_PATH": str(workdir / "roles"),
    })
    # The JSON document, then the timer callback's line. Under the linear strategy the task is
    # one entry with every host; under others (Mitogen's, ansible.cfg's default) the json
    # callback writes an entry per host and task: gather the task's entries.
    document, _ = json.JSONDecoder().raw_decode(run.stdout)
    shown: dict[str, dict[str, object]] = {}
    for entry in document["plays"][0]["tasks"]:
        if entry["task"]["name"].endswith("Show them"):
            shown.update({host: result["msg"] for host, result in entry["hosts"].items()})
    return shown


def test_repeater_joins_its_classroom_hotspot(resolved: dict[str, dict[str, object]]) -> None:
    a, b = resolved["pi-a2"], resolved["pi-b2"]
    assert (a["repeater_upstream_host"], b["repeater_upstream_host"]) == ("pi-a1", "pi-b1")
    assert (a["repeater_upstream_ssid"], a["repeater_upstream_address"]) == ("PiPACS Classroom A", "10.42.0.1")
    assert (b["repeater_upstream_ssid"], b["repeater_upstream_address"]) == ("PiPACS Classroom B", "10.42.2.1")
    # From the vault, through the hotspot Pi's hotspot_passphrase.
    assert a["repeater_upstream_passphrase"] == "example-classroom-a-wifi"
    assert b["repeater_upstream_passphrase"] == "example-classroom-b-wifi"


def test_repeater_serves_the_same_network_on_another_channel(resolved: dict[str, dict[str, object]]) -> None:
    for host in ("pi-a2", "pi-b2"):
        values = resolved[host]
        assert values["repeater_ssid"] == values["repeater_upstream_ssid"]
        assert values["repeater_passphrase"] == values["repeater_upstream_passphrase"]
        assert values["repeater_country"] == "GB"
    assert int(resolved["pi-a2"]["repeater_channel"]) == 11, "classroom A's AP is on 6"
