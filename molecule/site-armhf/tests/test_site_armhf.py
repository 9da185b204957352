"""site.yml on one emulated 32-bit (armhf) classroom Pi with no route to the Internet (see
../molecule.yml): the offline path of Pis that have no numpy/Pillow wheels on PyPI."""

import pipacs_probe as probe

NAME = "pipacs-site-armhf"
AET = "PACS_ARMHF"
ADMIN = probe.EXAMPLE_ADMIN
HTTP_PORT, DICOM_PORT = 8042, 4242


def test_the_pi_cannot_reach_pypi(host):
    assert host.check_output("ip route show default") == ""
    attempt = host.run(
        "python3 -c %s",
        "import socket; socket.create_connection(('pypi.org', 443), timeout=5)",
    )
    assert attempt.rc != 0, "the Pi reaches PyPI: the install was not offline"


def test_the_pi_runs_a_32_bit_userland(host):
    probe.assert_architecture(host, "armv7l", "armhf")


def test_numpy_and_pillow_are_the_os_packages_carried_from_the_controller(host):
    for package in ("python3-numpy", "python3-pil", "python3-venv"):
        assert host.package(package).is_installed, package
    archives = host.check_output("ls /var/cache/apt/archives").split()
    assert any(a.startswith("python3-numpy_") and a.endswith("_armhf.deb") for a in archives), archives
    where = host.check_output(
        "/opt/pipacs/current/bin/python -c %s",
        "import numpy, PIL; print(numpy.__file__); print(PIL.__file__)",
    ).split()
    assert all(w.startswith("/usr/lib/python3/dist-packages/") for w in where), where


def test_the_wheelhouse_holds_the_locks_pure_python_wheels_only(host):
    wheels = host.check_output("ls /opt/pipacs/wheelhouse").split()
    compiled = [w for w in wheels if w.endswith(".whl") and not w.endswith("-none-any.whl")]
    assert compiled == [], compiled
    names = {w.split("-")[0].lower() for w in wheels if w.endswith(".whl")}
    assert {"pydicom", "pynetdicom", "bottle", "waitress", "pipacs"} <= names, names
    assert not names & {"numpy", "pillow"}, names


def test_the_release_id_holds_the_locks_hash(host):
    probe.assert_release_holds_lock(host, "armhf")


def test_base_then_server(host):
    probe.assert_site_pi_serves(host, NAME, "Classroom ARMHF PACS", AET)


def test_store_from_the_controller_and_render_with_the_os_numpy(host, tmp_path):
    ip = probe.container_ip(NAME)
    echo = probe.echoscu(ip, DICOM_PORT, AET)
    assert echo.returncode == 0, echo.stderr
    probe.sample_instance(tmp_path / "armhf.dcm", patient_id="SITE-ARMHF")
    store = probe.storescu(ip, DICOM_PORT, AET, tmp_path / "armhf.dcm")
    assert store.returncode == 0, store.stderr
    instances = probe.http_json(host, HTTP_PORT, "/instances", *ADMIN)
    assert instances, "the stored instance is not indexed"
    # A PNG preview: pixel data through numpy and Pillow (the OS's, under emulation).
    script = (
        "import base64, sys, urllib.request\n"
        "req = urllib.request.Request(sys.argv[1])\n"
        "req.add_header('Authorization', 'Basic ' + base64.b64encode(sys.argv[2].encode()).decode())\n"
        "with urllib.request.urlopen(req, timeout=120) as r:\n"
        "    print(r.status, r.headers['Content-Type'], r.read()[:8].hex())\n"
    )
    url = f"http://127.0.0.1:{HTTP_PORT}/instances/{instances[0]}/preview"
    out = host.check_output("python3 -c %s %s %s", script, url, ":".join(ADMIN))
    assert out.split() == ["200", "image/png", "89504e470d0a1a0a"], out
