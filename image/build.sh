#!/usr/bin/env bash
# Build a flashable SD card image of a classroom PACS Pi, without mounting anything but /proc,
# /sys and /dev into a chroot (this kind of machine has no vfat module and no device-mapper).
#
#   image/build.sh build arm64|armhf [--base RASPIOS.img[.xz]] [--inventory DIR] [--out DIR]
#                  [--reuse] [--rootfs-only] [--rootfs-tar TAR]  (reuse: start from the last
#                  unconverged root file system; rootfs-only: stop after making it; rootfs-tar:
#                  start from that tarball instead, no kernel: a quick check, not for Pis)
#                  [--ssh-key FILE.pub] [--user NAME]  (the account Ansible logs in with:
#                  default pi, with ~/.ssh/id_ed25519.pub, id_ecdsa.pub or id_rsa.pub)
#   image/build.sh extract IMAGE.img DIR [PIPACS_TXT]  root file system into DIR, boot files into
#                                            DIR/boot/firmware (debugfs + mtools, no mount)
#   image/build.sh disk ROOTFS BOOTDIR OUT.img   the disk step alone (partition table, FAT, ext4)
#   image/build.sh import IMAGE.img TAG [PIPACS_TXT]  the image as a podman image (tests), with
#                                            PIPACS_TXT written on its boot partition first
#   image/build.sh testimage arm64|armhf     for molecule/image-*: build if missing, import
#
# build: (1) a root file system, from debootstrap (Debian bookworm, raspi-firmware, a Debian
# kernel, Wi-Fi firmware from non-free-firmware, as Debian's own Raspberry Pi images) or from
# a Raspberry Pi OS Lite image given with --base; (2) playbooks/image.yml (site.yml's roles and
# the firstboot role) applied inside it: the folder is booted with podman --rootfs, systemd as
# init, qemu-user running the ARM binaries, and Ansible connects with the podman connection;
# apt's maintainer scripts start nothing (policy-rc.d); (3) the disk image: FAT boot partition
# written with mtools, ext4 filled from the folder with mkfs.ext4 -d, an MBR from sfdisk, the
# pieces joined with dd; then .img.xz and .sha256.
#
# Environment: PIPACS_TESTBED_MIRROR (Debian mirror, default: the host's),
# PIPACS_TESTBED_SECURITY_MIRROR (its security suite, default: the host's, else
# security.debian.org), PIPACS_IMAGE_NO_SECURITY=1 (build without the security suite when the
# mirror's is broken: sources.list gets it back at the end, for the Pi's next online apt run),
# PIPACS_TESTBED_CACHE
# (package cache shared with molecule/resources/testbed.sh, default /var/cache/pipacs-testbed),
# PIPACS_IMAGE_XZ=0 (skip the .xz), ANSIBLE_VAULT_PASSWORD_FILE (your inventory's vault).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
SUITE=bookworm
CACHE_DIR=${PIPACS_TESTBED_CACHE:-/var/cache/pipacs-testbed}
# The host name the image is built as; the first boot replaces it (image/README.md).
BUILD_HOST=pipacs
BOOT_MB=256
ROOT_LABEL=RASPIROOT
BOOT_LABEL=RASPIFIRM
# The MBR's disk identifier: random, or a base image's (base_rootfs).
DISK_ID=${PIPACS_IMAGE_DISK_ID:-}

# debootstrap: what a Raspberry Pi OS Lite image also has (the test bed's list), plus SSH for
# Ansible, growpart for the first boot's resize, and the tools the disk and Wi-Fi need.
BOOTSTRAP_PACKAGES=systemd,systemd-sysv,systemd-timesyncd,dbus,python3,python3-apt,sudo,iproute2,procps,ca-certificates,locales,tzdata,kmod,less,openssh-server,cloud-guest-utils,fdisk,dosfstools,e2fsprogs,iw,wireless-regdb,apt-utils
# Installed after debootstrap (their scripts want /proc): firmware and kernel per architecture.
# ifupdown and a DHCP client for the wired LAN, as Debian's Raspberry Pi images have.
FIRMWARE_PACKAGES="raspi-firmware firmware-brcm80211 initramfs-tools ifupdown isc-dhcp-client"
declare -A KERNEL=([arm64]=linux-image-arm64 [armhf]=linux-image-armmp-lpae)

log() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, chroot and rootful podman need it)"

# ---------------------------------------------------------------------------------------------
# Root file system
# ---------------------------------------------------------------------------------------------
# host_mirror and security_mirror, shared with the test bed's image build.
# shellcheck source=molecule/resources/mirrors.sh
source "$repo/molecule/resources/mirrors.sh"

# The security suite's sources.list line, kept aside while building without it
# (PIPACS_IMAGE_NO_SECURITY=1) and put back by clean_rootfs.
DEFERRED_SOURCES=etc/apt/pipacs-deferred-sources.list

CHROOT_MOUNTS=()
chroot_mount() {
    local root=$1 d
    for d in proc sys dev dev/pts; do
        mkdir -p "$root/$d"
        mount --bind "/$d" "$root/$d"
        CHROOT_MOUNTS=("$root/$d" "${CHROOT_MOUNTS[@]}")
    done
}
chroot_umount() {
    local m
    for m in "${CHROOT_MOUNTS[@]}"; do umount -l "$m" 2>/dev/null || true; done
    CHROOT_MOUNTS=()
}

# policy-rc.d: no package script starts a service while the image is built.
no_services() { printf '#!/bin/sh\nexit 101\n' >"$1/usr/sbin/policy-rc.d"; chmod 0755 "$1/usr/sbin/policy-rc.d"; }

debian_rootfs() {
    local arch=$1 rootfs=$2 mirror
    mirror=$(host_mirror)
    [[ -n $mirror ]] || die "no Debian mirror found in /etc/apt: set PIPACS_TESTBED_MIRROR"
    mkdir -p "$CACHE_DIR/debs-$arch" "$CACHE_DIR/image-debs-$arch"
    rm -rf "$rootfs"
    log "debootstrap $SUITE/$arch from $mirror"
    debootstrap --variant=minbase --arch="$arch" --cache-dir="$CACHE_DIR/debs-$arch" \
        --components=main,non-free-firmware --include="$BOOTSTRAP_PACKAGES" \
        "$SUITE" "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
        || die "debootstrap failed, see $WORK/debootstrap.log"
    local security security_line
    security=$(security_mirror)
    security_line="deb ${security:-http://security.debian.org/debian-security} $SUITE-security main non-free-firmware"
    cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $SUITE main non-free-firmware
deb $mirror $SUITE-updates main non-free-firmware
EOF
    if [[ ${PIPACS_IMAGE_NO_SECURITY:-0} == 1 ]]; then
        log "WARNING: building without $SUITE-security (PIPACS_IMAGE_NO_SECURITY=1): the image has" \
            "none of its updates; sources.list names it for the Pi's next online apt run"
        echo "$security_line" >"$rootfs/$DEFERRED_SOURCES"
    else
        echo "$security_line" >>"$rootfs/etc/apt/sources.list"
    fi
    no_services "$rootfs"
    # raspi-firmware writes cmdline.txt from this (the hook runs again on kernel upgrades).
    mkdir -p "$rootfs/etc/default" "$rootfs/boot/firmware"
    cat >"$rootfs/etc/default/raspi-firmware" <<EOF
ROOTPART=LABEL=$ROOT_LABEL
CONSOLES="ttyS1,115200 tty0"
EOF
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    mkdir -p "$rootfs/var/cache/apt/archives"
    chroot_mount "$rootfs"
    mount --bind "$CACHE_DIR/image-debs-$arch" "$rootfs/var/cache/apt/archives"
    CHROOT_MOUNTS=("$rootfs/var/cache/apt/archives" "${CHROOT_MOUNTS[@]}")
    log "kernel and firmware: ${KERNEL[$arch]} $FIRMWARE_PACKAGES"
    # A mirror in the middle of a sync serves index files that do not match their Release
    # ("File has unexpected size"): wait and ask again, three times, before giving up.
    local try
    for try in 1 2 3 4; do
        chroot "$rootfs" apt-get update -qq -o Acquire::Retries=3 && break
        ((try < 4)) || { chroot_umount; die "apt-get update failed four times: the mirror's index files" \
            "do not match its Release (see above). Try later or another mirror (PIPACS_TESTBED_MIRROR," \
            "PIPACS_TESTBED_SECURITY_MIRROR); if only $SUITE-security fails, PIPACS_IMAGE_NO_SECURITY=1" \
            "builds without its updates"; }
        log "apt-get update failed (try $try of 4): again in $((try * 30)) s"
        sleep $((try * 30))
    done
    # Two steps: initramfs-tools and the firmware first, then the kernel, whose postinst makes
    # the initramfs once (together, the initramfs-tools trigger made it a second time: each
    # takes many minutes under qemu-user). confold keeps our /etc/default/raspi-firmware,
    # which the package also ships (dpkg would ask, and fail without a terminal).
    local step
    : >"$WORK/kernel.log"
    for step in "$FIRMWARE_PACKAGES" "${KERNEL[$arch]}"; do
        # shellcheck disable=SC2086 # word splitting: the package list
        DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get install -y -qq \
            --no-install-recommends -o Dpkg::Options::=--force-confdef \
            -o Dpkg::Options::=--force-confold $step >>"$WORK/kernel.log" 2>&1 \
            || { chroot_umount; die "kernel install failed, see $WORK/kernel.log"; }
    done
    chroot_umount
    : >"$rootfs/etc/resolv.conf"
    [[ -s $rootfs/boot/firmware/config.txt && -n $(ls "$rootfs"/boot/firmware/vmlinuz* 2>/dev/null) ]] \
        || die "raspi-firmware left no config.txt/kernel in /boot/firmware (see $WORK/kernel.log)"

    cat >"$rootfs/etc/fstab" <<EOF
# Written by image/build.sh: the SD card's two partitions, by label.
LABEL=$ROOT_LABEL / ext4 rw,noatime 0 1
LABEL=$BOOT_LABEL /boot/firmware vfat rw,noatime,umask=0022 0 2
EOF
    # The wired LAN (where Ansible reaches the Pi) by DHCP; the Wi-Fi is the hotspot role's.
    mkdir -p "$rootfs/etc/network/interfaces.d"
    printf '# Written by image/build.sh: wired Ethernet by DHCP.\nallow-hotplug eth0\niface eth0 inet dhcp\n' \
        >"$rootfs/etc/network/interfaces.d/eth0"
}

# A Raspberry Pi OS Lite image (or anything shaped like it: MBR, FAT first, ext4 second).
base_rootfs() {
    local base=$1 rootfs=$2 img=$base
    if [[ $base == *.xz ]]; then
        img=$WORK/base.img
        log "unpacking $base"
        xz -dc "$base" >"$img"
    fi
    extract "$img" "$rootfs"
    no_services "$rootfs"
    # Raspberry Pi OS boots with root=PARTUUID=<disk id>-02 (no initramfs to find a label):
    # the new disk keeps the base image's disk id, so its PARTUUIDs stay the same.
    DISK_ID=$(sfdisk --json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"].get("id", ""))')
    [[ $img == "$WORK/base.img" ]] && rm -f "$img"
}

# An existing root file system (a tarball, e.g. the test bed's debootstrap cache): no kernel
# or firmware, so its image does not boot a Pi; it checks the roles, the disk and the first
# boot in far less time (the kernel step under qemu-user is most of a Debian build).
tar_rootfs() {
    local tarball=$1 rootfs=$2
    rm -rf "$rootfs" && mkdir -p "$rootfs/boot/firmware"
    tar -C "$rootfs" --numeric-owner -xf "$tarball"
    no_services "$rootfs"
    mkdir -p "$rootfs/boot/firmware"
    printf 'LABEL=%s / ext4 rw,noatime 0 1\nLABEL=%s /boot/firmware vfat rw,noatime,umask=0022 0 2\n' \
        "$ROOT_LABEL" "$BOOT_LABEL" >"$rootfs/etc/fstab"
}

# ---------------------------------------------------------------------------------------------
# The roles, applied in a container that runs the folder itself
# ---------------------------------------------------------------------------------------------
# What systemd needs to run as a podman container under qemu-user (test bed notes), added for
# the build and removed before the disk is made.
SHIM_MASKS="systemd-udevd.service systemd-udev-trigger.service systemd-udevd-control.socket systemd-udevd-kernel.socket getty.target console-getty.service"
SHIM_CRED_UNITS="systemd-sysusers.service systemd-tmpfiles-setup.service systemd-tmpfiles-setup-dev.service"
container_shims() {
    local action=$1 rootfs=$2 unit
    # No SD card in a container: its fstab entries would wait for devices that never come.
    if [[ $action == add && ! -e $rootfs/etc/fstab.pipacs-image ]]; then
        mv "$rootfs/etc/fstab" "$rootfs/etc/fstab.pipacs-image"
        : >"$rootfs/etc/fstab"
    elif [[ $action == remove && -e $rootfs/etc/fstab.pipacs-image ]]; then
        mv "$rootfs/etc/fstab.pipacs-image" "$rootfs/etc/fstab"
    fi
    for unit in $SHIM_MASKS; do
        if [[ $action == add ]]; then
            [[ -e $rootfs/etc/systemd/system/$unit ]] || ln -s /dev/null "$rootfs/etc/systemd/system/$unit"
        elif [[ $(readlink "$rootfs/etc/systemd/system/$unit" 2>/dev/null) == /dev/null ]]; then
            rm -f "$rootfs/etc/systemd/system/$unit"
        fi
    done
    for unit in $SHIM_CRED_UNITS; do
        if [[ $action == add ]]; then
            mkdir -p "$rootfs/etc/systemd/system/$unit.d"
            printf '[Service]\nLoadCredential=\n' >"$rootfs/etc/systemd/system/$unit.d/qemu-no-credentials.conf"
        else
            rm -f "$rootfs/etc/systemd/system/$unit.d/qemu-no-credentials.conf"
            rmdir "$rootfs/etc/systemd/system/$unit.d" 2>/dev/null || true
        fi
    done
}

converge() {
    local arch=$1 rootfs=$2 inventory=$3 name=pipacs-image-build-$1
    container_shims add "$rootfs"
    echo "$BUILD_HOST" >"$rootfs/etc/hostname"
    : >"$rootfs/etc/machine-id"
    podman rm -f "$name" >/dev/null 2>&1 || true
    log "booting $rootfs as container $name"
    # --rootfs is a switch: the first argument is then the folder, not an image.
    podman run -d --name "$name" --systemd=always \
        --cap-add SYS_ADMIN,NET_ADMIN,NET_RAW --hostname "$BUILD_HOST" --stop-timeout=2 \
        --env container=podman --rootfs "$rootfs" /sbin/init >/dev/null
    # Wait for the boot to end before the first module: under qemu-user and load the boot takes
    # minutes. The first build that reached this step (load 18) failed its first module with
    # "No module named 'ansible'", its payload most likely removed from /tmp by the boot's
    # systemd-tmpfiles; after this wait the same root file system converged.
    local state="" waited=0
    # "offline" until systemd answers on its bus, then "initializing"/"starting".
    until [[ $state == running || $state == degraded ]]; do
        ((waited < 900)) || die "$name did not finish booting in 900 s (systemd: ${state:-no answer})"
        sleep 3
        waited=$((waited + 3))
        state=$(podman exec "$name" systemctl is-system-running 2>/dev/null) || true
    done
    log "$name booted after about $waited s ($state)"
    cat >"$WORK/hosts.yml" <<EOF
# Written by image/build.sh: the image being built, a PACS Pi of no classroom yet.
classroom:
  children:
    pacs:
      hosts:
        $BUILD_HOST:
          ansible_connection: containers.podman.podman
          ansible_host: $name
          ansible_user: root
          ansible_become: false
          ansible_python_interpreter: /usr/bin/python3
          # qemu-user: pipacs starts several times slower than on a Pi.
          daemon_health_timeout: 300
EOF
    log "playbooks/image.yml on $name (log: $WORK/converge.log)"
    local rc=0
    (cd "$repo" && PATH=$repo/.venv/bin:$PATH ANSIBLE_ROLES_PATH=$repo/roles \
        ansible-playbook -i "$inventory" -i "$WORK/hosts.yml" --limit "$BUILD_HOST" \
        playbooks/image.yml) >"$WORK/converge.log" 2>&1 || rc=$?
    podman stop -t 2 "$name" >/dev/null 2>&1 || true
    podman rm -f "$name" >/dev/null 2>&1 || true
    ((rc == 0)) || { tail -n 30 "$WORK/converge.log" >&2; die "playbooks/image.yml failed"; }
    grep -E '^\S+\s+: ok=' "$WORK/converge.log" >&2 || true
    container_shims remove "$rootfs"
}

# The account Ansible logs in with afterwards (the inventory's ansible_user, with become):
# SSH keys only, no password. Raspberry Pi OS bases make theirs at their own first boot.
login_account() {
    local rootfs=$1 user=$2 key=$3
    [[ -n $key ]] || { log "no SSH key (--ssh-key): the Pi has no account Ansible can log in with"; return 0; }
    chroot "$rootfs" id "$user" >/dev/null 2>&1 || chroot "$rootfs" useradd -m -s /bin/bash -G sudo "$user"
    printf '%s ALL=(ALL) NOPASSWD: ALL\n' "$user" >"$rootfs/etc/sudoers.d/50-pipacs-image"
    chmod 0440 "$rootfs/etc/sudoers.d/50-pipacs-image"
    install -d -m 0700 "$rootfs/home/$user/.ssh"
    install -m 0600 "$key" "$rootfs/home/$user/.ssh/authorized_keys"
    chroot "$rootfs" chown -R "$user:$user" "/home/$user/.ssh"
    log "account $user with the SSH key $key"
}

# What one Pi must not share with the next: identities made on first boot.
clean_rootfs() {
    local rootfs=$1
    if [[ -f $rootfs/$DEFERRED_SOURCES ]]; then
        cat "$rootfs/$DEFERRED_SOURCES" >>"$rootfs/etc/apt/sources.list"
        rm -f "$rootfs/$DEFERRED_SOURCES"
    fi
    rm -f "$rootfs/usr/sbin/policy-rc.d" "$rootfs"/etc/ssh/ssh_host_*key* "$rootfs/var/lib/dbus/machine-id"
    : >"$rootfs/etc/machine-id"
    echo "$BUILD_HOST" >"$rootfs/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$BUILD_HOST" >"$rootfs/etc/hosts"
    : >"$rootfs/etc/resolv.conf"
    # podman --rootfs made these three as mount points (hosts 0700: unreadable for pipacs).
    chmod 0644 "$rootfs/etc/hostname" "$rootfs/etc/hosts" "$rootfs/etc/resolv.conf"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/journal/* "$rootfs"/tmp/* "$rootfs"/var/tmp/*
    find "$rootfs/var/log" -type f -exec truncate -s 0 {} +
}

# ---------------------------------------------------------------------------------------------
# Disk image
# ---------------------------------------------------------------------------------------------
# disk ROOTFS BOOTDIR OUT: BOOTDIR's files on a FAT32 partition labelled RASPIFIRM (4 MiB in,
# BOOT_MB long), ROOTFS (its boot/firmware left empty: the mount point) as ext4 RASPIROOT.
disk() {
    local rootfs=$1 bootdir=$2 out=$3 tmp
    tmp=$(dirname "$out")
    local used_mb root_mb
    used_mb=$(du -sxm --exclude=./boot/firmware "$rootfs" | cut -f1)
    # ext4 metadata and reserved blocks, plus room for the first boots before growpart.
    root_mb=$((used_mb * 13 / 10 + 256))
    log "disk: boot ${BOOT_MB} MiB, root ${root_mb} MiB (${used_mb} MiB used)"
    rm -f "$tmp/boot.vfat" "$tmp/root.ext4" "$out"
    truncate -s "${BOOT_MB}M" "$tmp/boot.vfat"
    mformat -i "$tmp/boot.vfat" -F -v "$BOOT_LABEL" -N "$(sha256sum <<<"$out" | cut -c1-8)" ::
    mcopy -s -p -m -i "$tmp/boot.vfat" "$bootdir"/* ::/
    truncate -s "${root_mb}M" "$tmp/root.ext4"
    mkfs.ext4 -q -L "$ROOT_LABEL" -d "$rootfs" -E root_owner=0:0 "$tmp/root.ext4"
    # The mount point of the boot partition must be empty in the root file system.
    debugfs -R "ls -l /boot/firmware" "$tmp/root.ext4" 2>/dev/null | awk '$NF != "." && $NF != ".." && NF > 1 {exit 1}' \
        || die "boot/firmware is not empty in $rootfs"
    local boot_start=$((4 * 2048)) boot_sectors=$((BOOT_MB * 2048)) root_sectors=$((root_mb * 2048))
    local root_start=$((boot_start + boot_sectors))
    truncate -s $(((root_start + root_sectors) * 512)) "$out"
    sfdisk --quiet "$out" <<EOF
label: dos
${DISK_ID:+label-id: $DISK_ID}
unit: sectors

start=$boot_start, size=$boot_sectors, type=c, bootable
start=$root_start, size=$root_sectors, type=83
EOF
    dd if="$tmp/boot.vfat" of="$out" bs=1M seek=$((boot_start * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
    dd if="$tmp/root.ext4" of="$out" bs=1M seek=$((root_start * 512)) oflag=seek_bytes conv=notrunc,sparse status=none
    rm -f "$tmp/boot.vfat" "$tmp/root.ext4"
}

# extract IMAGE DIR: the second partition's files into DIR (debugfs rdump), the first's into
# DIR/boot/firmware (mcopy), without mounting either.
extract() {
    local img=$1 dir=$2 boot_file=${3:-} json starts sizes
    json=$(sfdisk --json "$img")
    mapfile -t starts < <(python3 -c 'import json,sys; [print(p["start"]) for p in json.load(sys.stdin)["partitiontable"]["partitions"]]' <<<"$json")
    mapfile -t sizes < <(python3 -c 'import json,sys; [print(p["size"]) for p in json.load(sys.stdin)["partitiontable"]["partitions"]]' <<<"$json")
    ((${#starts[@]} >= 2)) || die "$img: expected a boot and a root partition"
    local tmp
    tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/pipacs-extract.XXXXXX")
    dd if="$img" of="$tmp/boot.vfat" bs=1M skip=$((starts[0] * 512)) count=$((sizes[0] * 512)) \
        iflag=skip_bytes,count_bytes status=none
    dd if="$img" of="$tmp/root.ext4" bs=1M skip=$((starts[1] * 512)) count=$((sizes[1] * 512)) \
        iflag=skip_bytes,count_bytes conv=sparse status=none
    # Staff edit pipacs.txt on the FAT partition after flashing: the same, with mtools.
    [[ -z $boot_file ]] || mcopy -o -i "$tmp/boot.vfat" "$boot_file" ::pipacs.txt
    rm -rf "$dir"
    mkdir -p "$dir"
    # rdump writes the root's content into a folder named after it: dump "/" as DIR's parts.
    local entry
    for entry in $(debugfs -R "ls -p /" "$tmp/root.ext4" 2>/dev/null | awk -F/ '$6 != "." && $6 != ".." && $6 != "" {print $6}'); do
        debugfs -R "rdump /$entry $dir" "$tmp/root.ext4" >/dev/null 2>&1 \
            || die "debugfs rdump /$entry failed"
    done
    mkdir -p "$dir/boot/firmware"
    mcopy -s -p -m -n -i "$tmp/boot.vfat" ::/* "$dir/boot/firmware/"
    rm -rf "$tmp"
}

# import IMAGE TAG [PIPACS_TXT]: the image's two partitions (pipacs.txt written on the FAT
# first, if given) as a podman image that boots like the Pi, for molecule/image-*.
import_image() {
    local img=$1 tag=$2 boot_file=${3:-} dir
    dir=$(mktemp -d "${TMPDIR:-/var/tmp}/pipacs-import.XXXXXX")
    extract "$img" "$dir/root" "$boot_file"
    container_shims add "$dir/root"
    local arch oci_arch variant=()
    arch=$(sed -n 's/^Architecture: //p' "$dir/root/var/lib/dpkg/status" | grep -v '^all$' | sort | uniq -c | sort -rn | awk 'NR==1 {print $2}')
    oci_arch=$arch
    if [[ $arch == armhf ]]; then oci_arch=arm variant=(--variant v7); fi
    log "importing $img ($arch) as $tag"
    tar -C "$dir/root" --numeric-owner -c . | podman import --quiet --arch "$oci_arch" "${variant[@]}" \
        --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' --change 'ENV container=podman' \
        --message "PiPACS SD card image $(basename "$img")" - "$tag" >/dev/null
    rm -rf "$dir"
}

# testimage ARCH: the image molecule/image-ARCH boots (built when missing, without the .xz),
# imported with that scenario's pipacs.txt on its boot partition.
testimage() {
    local arch=$1 img=$repo/.cache/image/pipacs-$SUITE-$1.img
    if [[ ! -s $img ]]; then
        PIPACS_IMAGE_XZ=0 build "$arch"
    fi
    import_image "$img" "localhost/pipacs-sdimage:$arch" "$repo/molecule/image-$arch/pipacs.txt"
}

build() {
    local arch=${1:-} base="" inventory=$repo/inventory/example out=$repo/.cache/image reuse=0 rootfs_only=0 rootfs_tar=""
    local ssh_key="" login_user=pi k
    for k in ~/.ssh/id_ed25519.pub ~/.ssh/id_ecdsa.pub ~/.ssh/id_rsa.pub; do
        [[ -z $ssh_key && -r $k ]] && ssh_key=$k
    done
    shift || true
    while (($#)); do
        case $1 in
            --reuse) reuse=1; shift ;;
            --rootfs-tar) rootfs_tar=$2; shift 2 ;;
            --ssh-key) ssh_key=$2; shift 2 ;;
            --user) login_user=$2; shift 2 ;;
            --rootfs-only) rootfs_only=1; shift ;;
            --base) base=$2; shift 2 ;;
            --inventory) inventory=$2; shift 2 ;;
            --out) out=$2; shift 2 ;;
            *) die "build: unknown argument '$1'" ;;
        esac
    done
    [[ $arch == arm64 || $arch == armhf ]] || die "build: arm64 or armhf, not '$arch'"
    inventory=$(cd "$inventory" && pwd)
    # The example inventory's vault opens with the example password file (never a real one).
    if [[ -z ${ANSIBLE_VAULT_PASSWORD_FILE:-} && $inventory == "$repo/inventory/example" ]]; then
        export ANSIBLE_VAULT_PASSWORD_FILE=$repo/inventory/example/.vault-pass.example
    fi
    [[ -z $base || -r $base ]] || die "no such base image: $base"
    [[ $arch == "$(dpkg --print-architecture)" ]] || "$repo/molecule/resources/testbed.sh" host-fixes --arm64
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    WORK=$out/work-$arch${rootfs_tar:+-tar}
    mkdir -p "$WORK"
    local rootfs=$WORK/rootfs start=$SECONDS
    trap chroot_umount EXIT
    # The unconverged root file system is kept as a tarball: --reuse starts from it again.
    local pristine=$WORK/rootfs-${base:+base-}pristine.tar
    if ((reuse)) && [[ -s $pristine ]]; then
        log "reusing $pristine"
        rm -rf "$rootfs" && mkdir -p "$rootfs"
        tar -C "$rootfs" --numeric-owner -xf "$pristine"
    else
        if [[ -n $rootfs_tar ]]; then tar_rootfs "$rootfs_tar" "$rootfs"
        elif [[ -n $base ]]; then base_rootfs "$base" "$rootfs"
        else debian_rootfs "$arch" "$rootfs"; fi
        tar -C "$rootfs" --numeric-owner -cf "$pristine.part" . && mv "$pristine.part" "$pristine"
    fi
    log "root file system ready after $((SECONDS - start)) s"
    ((rootfs_only)) && return 0
    converge "$arch" "$rootfs" "$inventory"
    log "converged after $((SECONDS - start)) s"
    [[ -n $base ]] || login_account "$rootfs" "$login_user" "$ssh_key"
    clean_rootfs "$rootfs"
    local bootdir=$WORK/boot
    rm -rf "$bootdir"
    mkdir -p "$bootdir"
    # The boot partition's files leave the root file system (its mount point stays, empty).
    find "$rootfs/boot/firmware" -mindepth 1 -maxdepth 1 -exec mv -t "$bootdir" {} +
    local name=pipacs-$SUITE-$arch
    disk "$rootfs" "$bootdir" "$out/$name.img"
    # Keep the folder as it will boot (boot files back in place) for a quick re-run of disk.
    cp -a "$bootdir"/. "$rootfs/boot/firmware/"
    if [[ ${PIPACS_IMAGE_XZ:-1} != 0 ]]; then
        log "compressing (xz)"
        nice -n 5 xz -T2 -6 -f -k "$out/$name.img"
    else
        rm -f "$out/$name.img.xz"  # an earlier build's: it must not pass for this one's
    fi
    (cd "$out" && sha256sum "$name".img* >"$name.sha256")
    log "built $out/$name.img in $((SECONDS - start)) s: $(du -m --apparent-size "$out/$name.img" | cut -f1) MiB$(
        [[ -e $out/$name.img.xz ]] && echo ", xz $(du -m "$out/$name.img.xz" | cut -f1) MiB")"
}

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; }

# main and exit on one line: bash has read the whole script before anything runs, so editing
# it during a build is harmless.
main() {
    WORK=${TMPDIR:-/var/tmp}
    case ${1:-} in
        build) shift; build "$@" ;;
        extract) shift; (($# == 2 || $# == 3)) || { usage; exit 2; }; extract "$@" ;;
        disk) shift; (($# == 3)) || { usage; exit 2; }; disk "$@" ;;
        testimage) shift; (($# == 1)) || { usage; exit 2; }; testimage "$1" ;;
        import) shift; (($# == 2 || $# == 3)) || { usage; exit 2; }; import_image "$@" ;;
        *) usage; exit 2 ;;
    esac
}

main "$@"; exit
