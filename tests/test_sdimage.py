"""The SD card image's disk step (image/build.sh disk / extract), without mounting anything.

A small root file system and boot folder go through the same code `make image` uses: the
partition table is read back with `sfdisk --json`, the FAT with mtools, the ext4 with debugfs,
and a round trip through `extract` must give back every file, mode, owner and link. If a full
image was built (`make image`), its boot partition is checked too: the Pi firmware, the
kernel, cmdline.txt pointing at the root file system by label, and pipacs.txt.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "image" / "build.sh"
SECTOR = 512
MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("mformat", "mcopy", "sfdisk", "debugfs")),
    reason="needs root, mtools, fdisk (sfdisk) and e2fsprogs (make setup installs them)",
)


def sh(*cmd: str | Path) -> str:
    run = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, f"{cmd}: {run.stdout}{run.stderr}"
    return run.stdout


def partitions(img: Path) -> tuple[dict, list[dict]]:
    table = json.loads(sh("sfdisk", "--json", img))["partitiontable"]
    return table, table["partitions"]


def fat(img: Path, part: dict) -> str:
    """mtools' -i FILE@@OFFSET: the FAT partition inside the image."""
    return f"{img}@@{part['start'] * SECTOR}"


def small_tree(base: Path) -> tuple[Path, Path]:
    rootfs, boot = base / "rootfs", base / "boot"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "boot/firmware").mkdir(parents=True)
    (rootfs / "home/pi").mkdir(parents=True)
    (rootfs / "etc/fstab").write_text("LABEL=RASPIROOT / ext4 rw,noatime 0 1\n")
    (rootfs / "etc/shadow").write_text("root:*:20000::::::\n")
    os.chmod(rootfs / "etc/shadow", 0o640)
    (rootfs / "home/pi/notes.txt").write_text("x" * 5000)
    os.chown(rootfs / "home/pi", 1000, 1000)
    os.chown(rootfs / "home/pi/notes.txt", 1000, 1000)
    os.symlink("/usr/share/zoneinfo/Europe/Paris", rootfs / "etc/localtime")
    (boot / "overlays").mkdir(parents=True)
    (boot / "config.txt").write_text("arm_64bit=1\n")
    (boot / "cmdline.txt").write_text("console=tty0 root=LABEL=RASPIROOT rw fsck.repair=yes rootwait\n")
    (boot / "overlays/disable-bt.dtbo").write_bytes(b"\xd0\x0d\xfe\xed" * 64)
    return rootfs, boot


def describe(tree: Path) -> dict[str, tuple]:
    out = {}
    for path in sorted(tree.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(tree))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_dir():
            out[rel] = ("dir", oct(st.st_mode & 0o7777), st.st_uid, st.st_gid)
        else:
            out[rel] = ("file", oct(st.st_mode & 0o7777), st.st_uid, st.st_gid, path.read_bytes())
    return out


def test_disk_layout_and_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rootfs, boot = small_tree(tmp_path)
    img = tmp_path / "out" / "test.img"
    img.parent.mkdir()
    # A Raspberry Pi OS base keeps its disk id (its cmdline.txt says root=PARTUUID=<id>-02).
    monkeypatch.setenv("PIPACS_IMAGE_DISK_ID", "0x5e3da3da")
    sh(BUILD, "disk", rootfs, boot, img)

    table, parts = partitions(img)
    assert table["label"] == "dos"
    assert table["id"] == "0x5e3da3da"
    assert [p["type"] for p in parts] == ["c", "83"]
    assert parts[0].get("bootable") is True
    # Aligned to 4 MiB / 1 MiB as SD cards like it; the root right after the boot partition
    # and the image ending with it (growpart takes the rest of the card on the first boot).
    assert parts[0]["start"] * SECTOR == 4 * MIB
    assert parts[0]["size"] * SECTOR == 256 * MIB
    assert parts[1]["start"] == parts[0]["start"] + parts[0]["size"]
    assert img.stat().st_size == (parts[1]["start"] + parts[1]["size"]) * SECTOR

    # The FAT: its label and files, read with mtools.
    assert "RASPIFIRM" in sh("mlabel", "-s", "-i", fat(img, parts[0]), "::")
    listing = sh("mdir", "-/", "-b", "-i", fat(img, parts[0]), "::")
    assert {line.strip() for line in listing.splitlines()} >= {
        "::/config.txt",
        "::/cmdline.txt",
        "::/overlays/disable-bt.dtbo",
    }
    # The ext4: labelled, its boot/firmware an empty mount point.
    ext4 = tmp_path / "root.ext4"
    sh(
        "dd",
        f"if={img}",
        f"of={ext4}",
        "bs=1M",
        f"skip={parts[1]['start'] * SECTOR}",
        "iflag=skip_bytes",
        "status=none",
    )
    assert "RASPIROOT" in sh("dumpe2fs", "-h", ext4)
    names = [line.split("/")[5] for line in sh("debugfs", "-R", "ls -p /boot/firmware", ext4).splitlines() if line]
    assert sorted(names) == [".", ".."]
    sh("e2fsck", "-fn", ext4)

    # Round trip, with pipacs.txt written on the FAT as staff would after flashing.
    pipacs_txt = tmp_path / "pipacs.txt"
    pipacs_txt.write_text("hostname=pi-c7\n")
    back = tmp_path / "back"
    sh(BUILD, "extract", img, back, pipacs_txt)
    got = describe(back)
    assert got.pop("boot/firmware/pipacs.txt")[-1] == b"hostname=pi-c7\n"
    want = describe(rootfs)
    for name, value in describe(boot).items():
        want[f"boot/firmware/{name}"] = value
    # FAT keeps neither owners nor Unix modes: compare the boot files' contents only.
    for name in list(want):
        if name.startswith("boot/firmware/") and want[name][0] == "file":
            assert got.pop(name)[-1] == want.pop(name)[-1], name
        elif name.startswith("boot/firmware/"):
            got.pop(name)
            want.pop(name)
    got.pop("lost+found", None)
    assert got == want


@pytest.mark.parametrize("arch", ["arm64", "armhf"])
def test_built_image_boot_partition(arch: str) -> None:
    img = ROOT / ".cache" / "image" / f"pipacs-bookworm-{arch}.img"
    if not img.is_file():
        pytest.skip(f"no {img.name}: make image ARCH={arch}")
    _, parts = partitions(img)
    files = {line.strip().lower() for line in sh("mdir", "-/", "-b", "-i", fat(img, parts[0]), "::").splitlines()}
    assert {"::/config.txt", "::/cmdline.txt", "::/pipacs.txt"} <= files
    assert any(f.startswith("::/vmlinuz-") for f in files) and any(f.startswith("::/initrd.img-") for f in files)
    # Debian kernels carry the upstream device trees (bcm2836 is the Pi 2, bcm2711 the Pi 4).
    dtb = "bcm2711-rpi-4-b.dtb" if arch == "arm64" else "bcm2836-rpi-2-b.dtb"
    assert f"::/{dtb}" in files
    cmdline = sh("mtype", "-i", fat(img, parts[0]), "::cmdline.txt")
    assert "root=LABEL=RASPIROOT" in cmdline
    pipacs_txt = sh("mtype", "-i", fat(img, parts[0]), "::pipacs.txt")
    assert "#hostname=pipacs" in pipacs_txt and "#wifi_passphrase=\n" in pipacs_txt.replace("\r\n", "\n")


@pytest.mark.parametrize("arch", ["arm64", "armhf"])
def test_built_image_root_files_are_readable(arch: str, tmp_path: Path) -> None:
    """Files every account reads: podman --rootfs, which the build boots, leaves its mount
    points for them behind (/etc/hosts 0700 made pipacs's own lookups fail)."""
    img = ROOT / ".cache" / "image" / f"pipacs-bookworm-{arch}.img"
    if not img.is_file():
        pytest.skip(f"no {img.name}: make image ARCH={arch}")
    _, parts = partitions(img)
    root = tmp_path / "root.ext4"
    sh("dd", f"if={img}", f"of={root}", "bs=1M", "status=none", "conv=sparse",
       "iflag=skip_bytes,count_bytes", f"skip={parts[1]['start'] * SECTOR}", f"count={parts[1]['size'] * SECTOR}")
    for path in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/etc/fstab", "/etc/apt/sources.list"):
        stat = sh("debugfs", "-R", f"stat {path}", root)
        mode = re.search(r"Mode:\s+(\d+)", stat)
        assert mode and int(mode[1], 8) & 0o777 == 0o644, f"{path} in {img.name}: {stat.splitlines()[:3]}"


TESTBED_CACHE = Path(os.environ.get("PIPACS_TESTBED_CACHE", "/var/cache/pipacs-testbed"))


def test_first_boot_of_an_image_under_systemd(tmp_path: Path) -> None:
    """disk -> import (pipacs.txt written on the FAT) -> boot with systemd under qemu-user,
    no network: the first-boot unit runs before the services and names the Pi. The root is the
    test bed's arm64 debootstrap (no converge: role-shaped files stand in for the roles')."""
    tarballs = sorted(TESTBED_CACHE.glob("rootfs-bookworm-arm64-*.tar"))
    if not tarballs or not shutil.which("podman"):
        pytest.skip("no arm64 test bed root (molecule/resources/testbed.sh image arm64)")
    from test_hotspot_dhcp import render_role

    rootfs, boot = tmp_path / "rootfs", tmp_path / "boot"
    rootfs.mkdir()
    boot.mkdir()
    sh("tar", "-C", rootfs, "--numeric-owner", "-xf", tarballs[-1])
    role = ROOT / "roles/firstboot"
    out = render_role(
        tmp_path,
        "firstboot",
        {
            "unit": ("etc/systemd/system/pipacs-firstboot.service.j2", "unit"),
            "txt": ("boot/firmware/pipacs.txt.j2", "txt"),
        },
        inventory_hostname_short="pipacs",
    )
    shutil.copy(role / "files/pipacs-firstboot", rootfs / "usr/local/sbin/pipacs-firstboot")
    shutil.copy(out["unit"], rootfs / "etc/systemd/system/pipacs-firstboot.service")
    wants = rootfs / "etc/systemd/system/sysinit.target.wants"
    wants.mkdir(exist_ok=True)
    (wants / "pipacs-firstboot.service").symlink_to("/etc/systemd/system/pipacs-firstboot.service")
    for path, text in {
        "etc/pipacs/server.json": '{\n  "Name": "PiPACS pipacs",\n  "DicomAet": "PIPACS",\n  "DicomPort": 4242\n}\n',
        "etc/hostapd/wlan0.conf": "interface=wlan0\nssid=PiPACS-pipacs\ncountry_code=GB\nwpa_passphrase=image pass\n",
        "etc/hostname": "pipacs\n",
        "etc/fstab": "LABEL=RASPIROOT / ext4 rw,noatime 0 1\nLABEL=RASPIFIRM /boot/firmware vfat rw,noatime 0 2\n",
    }.items():
        (rootfs / path).parent.mkdir(parents=True, exist_ok=True)
        (rootfs / path).write_text(text)
    shutil.copy(out["txt"], boot / "pipacs.txt")
    img = tmp_path / "probe.img"
    sh(BUILD, "disk", rootfs, boot, img)
    shutil.rmtree(rootfs)
    tag, name = "localhost/pipacs-sdimage-test:arm64", f"pipacs-sdimage-test-{os.getpid()}"
    sh(BUILD, "import", img, tag, ROOT / "molecule/image-arm64/pipacs.txt")
    try:
        sh(
            "podman",
            "run",
            "-d",
            "--name",
            name,
            "--network=none",
            "--hostname",
            "pipacs",
            "--systemd=always",
            "--cap-add",
            "SYS_ADMIN",
            "--stop-timeout=2",
            tag,
        )
        state = ""
        for _ in range(120):
            state = subprocess.run(
                ["podman", "exec", name, "systemctl", "show", "-P", "ActiveState", "pipacs-firstboot.service"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if state in ("active", "failed"):
                break
            time.sleep(2)
        log = sh("podman", "exec", name, "journalctl", "-b", "-u", "pipacs-firstboot.service", "--no-pager")
        assert state == "active", log
        assert "host name pipacs -> pi-c7" in log and "not grown" in log
        assert sh("podman", "exec", name, "hostname").strip() == "pi-c7"
        server = sh("podman", "exec", name, "cat", "/etc/pipacs/server.json")
        assert '"DicomAet": "PACS_C7",' in server and '"Name": "PiPACS pi-c7",' in server
        hostapd = sh("podman", "exec", name, "cat", "/etc/hostapd/wlan0.conf")
        assert "\nssid=PiPACS Classroom C\n" in hostapd and "\nwpa_passphrase=classroom-c-2026\n" in hostapd
        assert sh("podman", "exec", name, "readlink", "/etc/localtime").strip() == "/usr/share/zoneinfo/Europe/Paris"
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, check=False)
        subprocess.run(["podman", "rmi", tag], capture_output=True, check=False)
