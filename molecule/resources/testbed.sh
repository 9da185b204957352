#!/usr/bin/env bash
# Prepare this machine to run simulated Raspberry Pis as systemd containers under rootful
# podman, and build their base images. Safe to repeat: every step checks before it changes.
#
#   testbed.sh host-fixes [--arm64|--arm]    packages, cgroup/ulimit/containers.conf fixes
#                                            (--arm64/--arm: qemu-user for ARM images too)
#   testbed.sh image [amd64|arm64|armhf] [--rebuild]  build localhost/pipacs-bookworm:<arch>
#   testbed.sh all [--rebuild]               host-fixes + the amd64 image
#
# Environment:
#   PIPACS_TESTBED_MIRROR  Debian mirror for the image (default: the one this host's apt uses)
#   PIPACS_TESTBED_CACHE   cache folder (default /var/cache/pipacs-testbed)
#
# Facts behind each step are in the team's testbed notes; the short version is in comments.
set -euo pipefail

SUITE=bookworm
IMAGE_REPO=localhost/pipacs-bookworm
CACHE_DIR=${PIPACS_TESTBED_CACHE:-/var/cache/pipacs-testbed}
UNCACHED=0  # set when an image was built without a suite whose lists failed
CONF_D=/etc/containers/containers.conf.d
CONF_FILE=$CONF_D/50-pipacs-testbed.conf

# What a Raspberry Pi OS Lite image also has, so converges do not spend time installing it:
# systemd as init, python3 (+ python3-apt for the apt module), sudo, locales, tzdata,
# ca-certificates, a time daemon, procps and iproute2.
INCLUDE_PACKAGES=systemd,systemd-sysv,systemd-timesyncd,dbus,python3,python3-apt,sudo,iproute2,procps,ca-certificates,locales,tzdata,kmod,less

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (rootful podman is what runs systemd containers here)"

# ---------------------------------------------------------------------------------------------
# host-fixes
# ---------------------------------------------------------------------------------------------
apt_install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# crun refuses a "hybrid" cgroup layout while any controller sits on the cgroup2 mount:
# give each such controller its own cgroup v1 hierarchy. Lost at reboot, so done every time.
fix_cgroups() {
    local unified=/sys/fs/cgroup/unified/cgroup.controllers ctrl
    [[ -r $unified ]] || return 0
    for ctrl in $(cat "$unified"); do
        if ! mountpoint -q "/sys/fs/cgroup/$ctrl"; then
            log "mounting cgroup v1 controller $ctrl"
            mkdir -p "/sys/fs/cgroup/$ctrl"
            mount -t cgroup -o "$ctrl" cgroup "/sys/fs/cgroup/$ctrl"
        fi
    done
}

# podman's default rlimits exceed the hard limits here, and root lacks CAP_SYS_RESOURCE.
fix_containers_conf() {
    local nofile nproc wanted
    nofile=$(ulimit -Hn)
    [[ $nofile == unlimited ]] && nofile=1048576
    nproc=$(ulimit -Hu)
    if [[ $nproc == unlimited || $nproc -gt 32768 ]]; then nproc=32768; fi
    wanted=$(cat <<EOF
# Written by molecule/resources/testbed.sh (PiPACS test bed); safe to delete.
[containers]
default_ulimits = [
  "nofile=${nofile}:${nofile}",
  "nproc=${nproc}:${nproc}",
]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
network_backend = "netavark"
EOF
)
    if [[ ! -f $CONF_FILE || $(cat "$CONF_FILE") != "$wanted" ]]; then
        log "writing $CONF_FILE"
        mkdir -p "$CONF_D"
        printf '%s\n' "$wanted" >"$CONF_FILE"
    fi
}

# ARM images run their binaries through qemu-user, registered with the kernel's binfmt_misc.
# The registration is lost at reboot (the mount too, where no systemd mounts it): done every time.
BINFMT_DIR=/proc/sys/fs/binfmt_misc
fix_binfmt() {
    apt_install_missing qemu-user-static binfmt-support
    if ! mountpoint -q "$BINFMT_DIR"; then
        grep -qw binfmt_misc /proc/filesystems \
            || die "this kernel has no binfmt_misc (not in /proc/filesystems): ARM images cannot run here"
        log "mounting binfmt_misc"
        mount -t binfmt_misc binfmt_misc "$BINFMT_DIR" \
            || die "the kernel refused 'mount -t binfmt_misc binfmt_misc $BINFMT_DIR' (a container without CAP_SYS_ADMIN?)"
    fi
    if [[ $(cat "$BINFMT_DIR/status") != enabled ]]; then
        log "enabling binfmt_misc"
        echo 1 >"$BINFMT_DIR/status"
    fi
    local fmt
    for fmt in qemu-aarch64 qemu-arm; do
        if [[ ! -e $BINFMT_DIR/$fmt ]]; then
            log "enabling binfmt $fmt"
            update-binfmts --enable "$fmt" || die "update-binfmts --enable $fmt failed"
        elif [[ $(sed -n 1p "$BINFMT_DIR/$fmt") != enabled ]]; then
            log "re-enabling binfmt $fmt"
            echo 1 >"$BINFMT_DIR/$fmt"
        fi
        # F (fix binary): the kernel opens qemu now, so it runs inside containers that lack it.
        grep -q '^flags:.*F' "$BINFMT_DIR/$fmt" \
            || die "$fmt is registered without the F flag: remove it (echo -1 >$BINFMT_DIR/$fmt) and run again"
    done
}

host_fixes() {
    local arm=${1:-}
    # netavark needs iptables to set up the bridge ("netavark: No such file or directory").
    apt_install_missing podman crun netavark aardvark-dns debootstrap uidmap iptables
    fix_cgroups
    fix_containers_conf
    [[ $arm == arm64 ]] && fix_binfmt
    return 0
}

# ---------------------------------------------------------------------------------------------
# image
# ---------------------------------------------------------------------------------------------
# host_mirror and security_mirror, shared with image/build.sh.
# shellcheck source=molecule/resources/mirrors.sh
source "$(dirname "${BASH_SOURCE[0]}")/mirrors.sh"

build_rootfs() {
    local arch=$1 rootfs=$2 mirror=$3 security=$4
    local debs=$CACHE_DIR/debs-$arch
    mkdir -p "$debs"
    rm -rf "$rootfs"
    log "debootstrap $SUITE/$arch from $mirror (takes about 1 min for amd64, 3 min for arm64)"
    debootstrap --variant=minbase --arch="$arch" --cache-dir="$debs" \
        --include="$INCLUDE_PACKAGES" "$SUITE" "$rootfs" "$mirror" >"$CACHE_DIR/debootstrap-$arch.log" 2>&1 \
        || die "debootstrap failed, see $CACHE_DIR/debootstrap-$arch.log"

    # apt as on a real Pi: main suite, updates and security, with fresh package lists.
    {
        echo "deb $mirror $SUITE main"
        echo "deb $mirror $SUITE-updates main"
        [[ -n $security ]] && echo "deb $security $SUITE-security main"
    } >"$rootfs/etc/apt/sources.list"
    cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
    if ! chroot "$rootfs" apt-get update -qq; then
        # A mirror caught mid-sync serves an index that does not match its Release file
        # ("File has unexpected size ... Mirror sync in progress?"): try again, then do
        # without the security suite rather than without a test bed (its lists must be
        # consistent, not the newest), and keep that image out of the cache.
        log "apt-get update failed in the $arch image; trying again in 20 s"
        sleep 20
        if ! chroot "$rootfs" apt-get update -qq; then
            [[ -n $security ]] || die "apt-get update failed in the $arch image (see above)"
            log "WARNING: building the $arch image without $SUITE-security: its lists failed twice"
            sed -i '/-security /d' "$rootfs/etc/apt/sources.list"
            chroot "$rootfs" apt-get update -qq \
                || die "apt-get update failed in the $arch image without $SUITE-security too"
            UNCACHED=1
        fi
    fi
    chroot "$rootfs" apt-get clean
    : >"$rootfs/etc/resolv.conf"

    # systemd generates a new machine id on first boot; the hostname comes from podman.
    : >"$rootfs/etc/machine-id"
    rm -f "$rootfs/var/lib/dbus/machine-id"
    echo "pipacs-testbed" >"$rootfs/etc/hostname"

    # Units that make no sense in a container and only slow boot down or fail.
    local unit
    for unit in systemd-udevd.service systemd-udev-trigger.service systemd-udevd-control.socket \
        systemd-udevd-kernel.socket getty.target console-getty.service; do
        ln -sf /dev/null "$rootfs/etc/systemd/system/$unit"
    done

    if [[ $arch != "$(dpkg --print-architecture)" ]]; then
        # Under qemu-user, systemd 252's LoadCredential= fails for these units.
        for unit in systemd-sysusers.service systemd-tmpfiles-setup.service \
            systemd-tmpfiles-setup-dev.service; do
            mkdir -p "$rootfs/etc/systemd/system/$unit.d"
            printf '[Service]\nLoadCredential=\n' >"$rootfs/etc/systemd/system/$unit.d/qemu-no-credentials.conf"
        done
    fi
}

image() {
    local arch=amd64 rebuild=0 arg
    for arg in "$@"; do
        case $arg in
            amd64 | arm64 | armhf) arch=$arg ;;
            --rebuild) rebuild=1 ;;
            *) die "image: unknown argument '$arg' (want amd64, arm64, armhf, --rebuild)" ;;
        esac
    done
    local tag=$IMAGE_REPO:$arch
    if ((!rebuild)) && podman image exists "$tag"; then
        log "$tag exists (use --rebuild to build it again)"
        return 0
    fi
    [[ $arch == "$(dpkg --print-architecture)" ]] || fix_binfmt

    local mirror security
    mirror=$(host_mirror)
    [[ -n $mirror ]] || die "no '$SUITE' mirror in /etc/apt/sources.list*; set PIPACS_TESTBED_MIRROR"
    security=$(security_mirror)

    # The root file system is cached as a tarball, keyed by everything that shapes it, so a
    # lost image is re-imported in seconds; --rebuild always runs debootstrap again.
    local key tarball rootfs
    key=$(printf '%s\n' "$SUITE" "$arch" "$mirror" "$security" "$INCLUDE_PACKAGES" \
        "$(sed -n '/^build_rootfs()/,/^}/p' "$0")" | sha256sum | cut -c1-12)
    tarball=$CACHE_DIR/rootfs-$SUITE-$arch-$key.tar
    rootfs=$CACHE_DIR/rootfs-$arch
    mkdir -p "$CACHE_DIR"
    UNCACHED=0
    if ((rebuild)) || [[ ! -s $tarball ]]; then
        build_rootfs "$arch" "$rootfs" "$mirror" "$security"
        rm -f "$CACHE_DIR"/rootfs-"$SUITE"-"$arch"-*.tar
        tar -C "$rootfs" --numeric-owner -cf "$tarball.part" .
        mv "$tarball.part" "$tarball"
        rm -rf "$rootfs"
    else
        log "using cached root file system $tarball"
    fi

    # Debian's architecture names are the OCI ones, except armhf (32-bit Raspberry Pi OS):
    # OCI arm, variant v7.
    local oci_arch=$arch variant=()
    if [[ $arch == armhf ]]; then oci_arch=arm variant=(--variant v7); fi
    log "importing $tag"
    # CMD in JSON form: the plain form would run through /bin/sh and systemd refuses that.
    podman import --quiet --arch "$oci_arch" "${variant[@]}" \
        --change 'CMD ["/sbin/init"]' \
        --change 'STOPSIGNAL SIGRTMIN+3' \
        --change 'ENV container=podman' \
        --message "PiPACS test bed: Debian $SUITE $arch with systemd" \
        "$tarball" "$tag" >/dev/null
    if ((UNCACHED)); then rm -f "$tarball"; fi  # built with a suite missing: not for reuse
    if [[ $arch != "$(dpkg --print-architecture)" ]]; then
        # The proof that qemu-user runs this image's binaries inside a container.
        local machine
        machine=$(podman run --rm --arch "$oci_arch" "${variant[@]}" --stop-timeout=1 --network=none "$tag" uname -m) \
            || die "$tag does not run: is binfmt_misc set up? (testbed.sh host-fixes --arm64)"
        log "$tag runs, uname -m: $machine"
    fi
    log "built $tag"
}

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; }

# The whole script is read before anything runs, so editing it meanwhile is harmless.
main() {
    local cmd=${1:-} a arm=""
    [[ $# -gt 0 ]] && shift
    case $cmd in
        host-fixes)
            for a in "$@"; do [[ $a == --arm64 || $a == arm64 || $a == --arm || $a == armhf ]] && arm=arm64; done
            host_fixes "$arm"
            ;;
        image)
            host_fixes ""
            image "$@"
            ;;
        all)
            host_fixes ""
            image amd64 "$@"
            ;;
        -h | --help | help) usage ;;
        *)
            usage
            exit 2
            ;;
    esac
}

main "$@"
exit
