"""Configuration: Orthanc's format with comments, folders, environment overrides, validation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ORTHANCPI_CONFIG
from pipacs import config
from pipacs.config import ConfigError, apply_environment, build_settings, load, strip_comments

SEED = ORTHANCPI_CONFIG


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipacs", *args], capture_output=True, text=True, cwd=cwd, timeout=60
    )


def test_comments_are_removed_but_not_inside_strings() -> None:
    text = '{\n// a comment\n"A": "http://x/y", /* block\n comment */ "B": "/* kept */"\n}'
    assert json.loads(strip_comments(text)) == {"A": "http://x/y", "B": "/* kept */"}


def test_seed_configuration_is_understood() -> None:
    settings, notes = load(SEED, environ={})
    assert settings.name == "OrthancPi"
    assert settings.dicom_aet == "ORTHANCPI"
    assert settings.dicom_port == 4242
    assert settings.store_md5_for_attachments is True
    assert set(settings.builtin_plugins) == {
        "serve-folders",
        "web-viewer",
        "dicom-web",
        "worklists",
    }
    assert settings.modalities["Horos"].aet == "HOROS"
    assert settings.modalities["dcm4che"].port == 104
    assert settings.peers["OrthancMac"].url == "http://192.168.123.210:8042/"
    # relative paths are relative to the configuration's folder, as in Orthanc
    assert settings.storage_directory == str(SEED.parent.resolve() / "OrthancStorage")
    assert settings.worklists["Database"] == str(SEED.parent.resolve() / "../WorklistsDatabase")
    # keys that mean nothing to pipacs, and the seed's typos, are named, not fatal
    text = "\n".join(notes)
    assert "JpipTransferSyntaxAccepted" in text
    assert 'DicomWeb.EnableWadoo: unknown option, ignored (did you mean "EnableWado"?)' in text
    assert "DicomWeb.Ss1" in text


def test_check_accepts_the_seed() -> None:
    proc = run_cli("--check", str(SEED))
    assert proc.returncode == 0, proc.stderr
    assert "configuration OK" in proc.stdout


def test_check_names_every_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{ "DicomPort": 70000, "HttpPort": "8042", "DicomAet": "A\\\\B",\n'
        '  "StableAge": 0, "DicomModalities": {"x": ["TOO-LONG-AE-TITLE-HERE", "h", 1]},\n'
        '  "Nmae": "typo" }'
    )
    proc = run_cli("--check", str(bad))
    assert proc.returncode == 1
    for key in (
        "DicomPort",
        "HttpPort: must be an integer",
        "DicomAet",
        "StableAge",
        "DicomModalities.x",
    ):
        assert key in proc.stderr, proc.stderr
    assert 'Nmae: unknown configuration key, ignored (did you mean "Name"?)' in proc.stderr


def test_check_reports_json_syntax_errors_with_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{\n  "Name": "x",\n  "HttpPort": 8042\n  "DicomPort": 4242\n}\n')
    proc = run_cli("--check", str(bad))
    assert proc.returncode == 1
    assert "line 4" in proc.stderr


def test_wrong_type_fails_at_start_with_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text('{"StorageDirectory": "s", "MaximumStorageSize": "lots"}')
    proc = run_cli(str(cfg), cwd=tmp_path)
    assert proc.returncode == 2
    assert "MaximumStorageSize: must be an integer" in proc.stderr
    assert not (tmp_path / "s").exists()


def test_default_configuration_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "default.json"
    assert run_cli(f"--config={out}").returncode == 0
    text = out.read_text()
    assert "//" in text  # commented
    settings, notes = load(out, environ={})
    assert settings.dicom_aet == "PIPACS"
    assert not [n for n in notes if "unknown" in n]
    assert run_cli("--check", str(out)).returncode == 0


def test_folder_of_files_is_merged_and_duplicates_refused(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"Name": "Pi", "DicomPort": 1104}')
    (tmp_path / "b.json").write_text('// plugins\n{"DicomWeb": {"Enable": true}}')
    settings, _ = load(tmp_path, environ={})
    assert (settings.name, settings.dicom_port, settings.dicom_web) == (
        "Pi",
        1104,
        {"Enable": True},
    )
    (tmp_path / "c.json").write_text('{"Name": "Other"}')
    with pytest.raises(ConfigError, match="Name: set in both a.json and c.json"):
        load(tmp_path, environ={})


def test_environment_overrides_follow_orthanc_docker() -> None:
    data: dict = {"DicomWeb": {"Enable": False}}
    notes = apply_environment(
        data,
        {
            "ORTHANC__DICOM_AET": "CLASSROOM1",
            "ORTHANC__DICOM_PORT": "11112",
            "ORTHANC__DICOM_WEB__ROOT": "/dw/",
            "ORTHANC__DICOM_WEB__ENABLE": "true",
            "ORTHANC__NAME": "1234",
            "ORTHANC__NO_SUCH_THING": "x",
            "HOME": "/root",
        },
    )
    assert data["DicomAet"] == "CLASSROOM1"
    assert data["DicomPort"] == 11112
    assert data["DicomWeb"] == {"Enable": True, "Root": "/dw/"}
    assert data["Name"] == "1234"  # a string key keeps a numeric-looking value as text
    assert notes == ["environment ORTHANC__NO_SUCH_THING: no configuration key matches it"]


def test_environment_override_is_validated(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text("{}")
    with pytest.raises(ConfigError, match="DicomPort"):
        load(cfg, environ={"ORTHANC__DICOM_PORT": "0"})


def test_modality_object_form_and_manufacturer() -> None:
    settings, _ = build_settings(
        {
            "DicomModalities": {
                "a": ["A", "127.0.0.1", 104, "StoreScp"],
                "b": {"AET": "B", "Host": "localhost", "Port": "105", "AllowStore": False},
            }
        },
        Path("/"),
    )
    assert settings.modalities["a"].manufacturer == "StoreScp"
    assert settings.modalities["b"].port == 105
    assert settings.modalities["b"].allow_store is False
    with pytest.raises(ConfigError, match="Manufacturer"):
        build_settings({"DicomModalities": {"c": ["C", "h", 1, "Nope"]}}, Path("/"))


def test_unknown_plugin_is_a_warning_not_an_error() -> None:
    settings, notes = build_settings({"Plugins": ["/usr/lib/libSomething.so"]}, Path("/"))
    assert settings.builtin_plugins == []
    assert any("libSomething.so is not a plugin pipacs knows" in n for n in notes)


def test_user_metadata_numbers_are_checked() -> None:
    with pytest.raises(ConfigError, match="UserMetadata.x: must be a number between 1024"):
        build_settings({"UserMetadata": {"x": 12}}, Path("/"))


def test_every_seed_key_is_known() -> None:
    data = config.load_json_with_comments(SEED)
    known = set(config.known_keys())
    assert set(data) <= known
