"""site.yml on one emulated arm64 classroom Pi (see ../molecule.yml): a reduced check that the
roles, and the offline wheelhouse, work on the Pi's CPU. The `site` scenario checks the rest."""

import pipacs_probe as probe

NAME = "pipacs-site-arm64"
AET = "PACS_ARM"
ADMIN = probe.EXAMPLE_ADMIN
HTTP_PORT, DICOM_PORT = 8042, 4242


def test_the_pi_runs_aarch64(host):
    probe.assert_architecture(host, "aarch64", "arm64")


def test_the_wheelhouse_is_built_for_aarch64(host):
    wheels = host.check_output("ls /opt/pipacs/wheelhouse").split()
    compiled = [w for w in wheels if w.endswith(".whl") and not w.endswith("-none-any.whl")]
    assert any(w.startswith("numpy-") for w in compiled), wheels
    assert any(w.startswith("pillow-") for w in compiled), wheels
    assert all(w.endswith("_aarch64.whl") for w in compiled), compiled
    # numpy imports in the release's venv: the right CPU's binary, offline.
    arch = host.check_output(
        "/opt/pipacs/current/bin/python -c %s",
        "import numpy, PIL.Image, platform; print(platform.machine())",
    )
    assert arch == "aarch64"
    # Chosen by the userland (dpkg) architecture: the arm64 lock.
    probe.assert_release_holds_lock(host, "arm64")


def test_base_then_server(host):
    probe.assert_site_pi_serves(host, NAME, "Classroom ARM PACS", AET)


def test_http_and_echo_answer(host):
    assert probe.http_json(host, HTTP_PORT, "/changes?last", *ADMIN)["Last"] >= 0
    echo = host.run("pipacs-echo 127.0.0.1 %s %s", str(DICOM_PORT), AET)
    assert echo.rc == 0, echo.stderr


def test_echo_and_store_from_the_controller(host, tmp_path):
    ip = probe.container_ip(NAME)
    echo = probe.echoscu(ip, DICOM_PORT, AET)
    assert echo.returncode == 0, echo.stderr
    before = probe.http_json(host, HTTP_PORT, "/statistics", *ADMIN)["CountInstances"]
    probe.sample_instance(tmp_path / "arm64.dcm", patient_id="SITE-ARM64")
    store = probe.storescu(ip, DICOM_PORT, AET, tmp_path / "arm64.dcm")
    assert store.returncode == 0, store.stderr
    assert probe.http_json(host, HTTP_PORT, "/statistics", *ADMIN)["CountInstances"] == before + 1
    assert probe.http_json(host, HTTP_PORT, "/changes?last", *ADMIN)["Last"] > 0
