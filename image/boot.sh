#!/usr/bin/env bash
# Boot a whole SD card image (made by image/build.sh) with its own kernel, initramfs and
# cmdline.txt under qemu-system, as a Pi boots it, and check what staff would see after
# flashing: the first boot took its name from pipacs.txt and grew the root partition to the
# card, pipacs answers a C-ECHO and GET /changes?last. Everything runs on a copy of the image
# (the .img is left as it is).
#
#   image/boot.sh IMAGE.img [--pipacs-txt FILE] [--http-user USER:PASSWORD] [--timeout S] [--keep]
#
#   --pipacs-txt  written on the copy's boot partition first (default: molecule/image-arm64's,
#                 which names the Pi pi-c7; its AE title and host name are what is checked)
#   --http-user   credentials for the REST API (default: the example inventory's teacher, as
#                 an image built with IMAGE_INVENTORY=inventory/example has them)
#   --timeout     seconds to wait for the login prompt (default 1200: qemu emulates the CPU)
#   --keep        keep the copy, the serial console log and the folder (printed at the end)
#
# The machine is qemu's generic "virt" board (a Pi's SoC is not emulated well enough to boot
# a Debian kernel with its devices): the same kernel, initramfs and command line as on a Pi,
# the disk as virtio, one network card on qemu's user-mode network with restrict=on (the
# guest reaches nothing outside; only the forwarded loopback ports reach it). The Pi's own
# firmware (start*.elf, config.txt, device tree) is not exercised: a real Pi does that.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)

log() { printf '[boot] %s\n' "$*" >&2; }
die() { printf '[boot] ERROR: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; }

img="" pipacs_txt=$repo/molecule/image-arm64/pipacs.txt http_user="admin:example-teacher-password"
timeout=1200 keep=0
while (($#)); do
    case $1 in
        --pipacs-txt) pipacs_txt=$2; shift 2 ;;
        --http-user) http_user=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        -*) usage; exit 2 ;;
        *) [[ -z $img ]] || { usage; exit 2; }; img=$1; shift ;;
    esac
done
[[ -n $img ]] || { usage; exit 2; }
[[ -r $img ]] || die "no such image: $img"
[[ -r $pipacs_txt ]] || die "no such file: $pipacs_txt"
[[ $timeout =~ ^[0-9]+$ ]] || die "--timeout takes seconds, not '$timeout'"

# What the check expects, read by the first boot's own parser (roles/firstboot): the host
# name, and the AE title, which follows the host name where pipacs.txt sets none.
read -r name aet < <(python3 - "$repo/roles/firstboot/files/pipacs-firstboot" "$pipacs_txt" <<'EOF'
import contextlib, importlib.machinery, importlib.util, sys
loader = importlib.machinery.SourceFileLoader("firstboot", sys.argv[1])
firstboot = importlib.util.module_from_spec(importlib.util.spec_from_loader("firstboot", loader))
loader.exec_module(firstboot)
with contextlib.redirect_stdout(sys.stderr):  # its log lines
    settings = firstboot.parse_settings(open(sys.argv[2], encoding="utf-8-sig").read())
name = settings.get("hostname", "")
print(name, settings.get("ae_title", name.upper()[:16]))
EOF
)
[[ -n $name ]] || die "$pipacs_txt sets no hostname= (the check needs the name to expect)"

need() { command -v "$1" >/dev/null || { log "installing $2"; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null; }; }
need mcopy mtools
need sfdisk fdisk
ECHOSCU=/usr/bin/echoscu  # dcmtk's, not the venv's pynetdicom app of the same name
[[ -x $ECHOSCU ]] || need echoscu dcmtk

dir=$(mktemp -d "${TMPDIR:-/var/tmp}/pipacs-boot.XXXXXX")
qemu_pid=""
cleanup() {
    [[ -n $qemu_pid ]] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
    if ((keep)); then log "kept: $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

# The boot partition (the first) as mtools' FILE@@OFFSET, from the partition table.
boot_start=$(sfdisk --json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["partitiontable"]["partitions"][0]["start"])') \
    || die "$img has no partition table"
fat=("-i" "$dir/disk.img@@$((boot_start * 512))")
cp --sparse=always "$img" "$dir/disk.img"
# A card bigger than the image: the first boot must grow the root partition into the rest.
size=$(stat -c %s "$dir/disk.img")
truncate -s $((size + 1024 * 1024 * 1024)) "$dir/disk.img"
mcopy -o "${fat[@]}" "$pipacs_txt" ::/pipacs.txt

# The kernel and initramfs config.txt names, and the command line a Pi would pass.
mcopy "${fat[@]}" ::/config.txt ::/cmdline.txt "$dir/"
kernel=$(sed -n 's/^kernel=//p' "$dir/config.txt" | tail -n 1)
initrd=$(sed -n 's/^initramfs \([^ ]*\).*/\1/p' "$dir/config.txt" | tail -n 1)
[[ -n $kernel && -n $initrd ]] || die "config.txt names no kernel= or initramfs (not an image/build.sh image?)"
mcopy "${fat[@]}" "::/$kernel" "::/$initrd" "$dir/"
# The Pi's serial consoles become the virt board's PL011.
cmdline="$(sed -e 's/console=[^ ]*//g' -e 's/  */ /g' "$dir/cmdline.txt") console=ttyAMA0"
case $kernel in
    *-arm64)
        need qemu-system-aarch64 qemu-system-arm
        qemu=(qemu-system-aarch64 -M virt -cpu cortex-a53) arch=arm64 ;;
    *-armmp-lpae|*-armmp)
        need qemu-system-arm qemu-system-arm
        qemu=(qemu-system-arm -M virt,highmem=off -cpu cortex-a15) arch=armhf ;;
    *) die "unknown kernel $kernel" ;;
esac

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
dicom_port=$(free_port)
console=$dir/console.log
log "$(basename "$img") ($arch): booting $kernel as $name ($aet), HTTP on 127.0.0.1:$http_port, DICOM on 127.0.0.1:$dicom_port"
start=$SECONDS
"${qemu[@]}" -smp 2 -m 1024 -nographic -no-reboot \
    -kernel "$dir/$kernel" -initrd "$dir/$initrd" -append "$cmdline" \
    -drive "file=$dir/disk.img,format=raw,if=virtio" \
    -netdev "user,id=lan,restrict=on,hostfwd=tcp:127.0.0.1:$http_port-:8042,hostfwd=tcp:127.0.0.1:$dicom_port-:4242" \
    -device virtio-net-pci,netdev=lan,romfile= \
    </dev/null >"$console" 2>&1 &
qemu_pid=$!

fail() { log "console (last 40 lines of $console):"; tail -n 40 "$console" | sed 's/\x1b\[[0-9;]*m//g' >&2; die "$*"; }
until grep -q "login:" "$console"; do
    kill -0 "$qemu_pid" 2>/dev/null || fail "qemu ended before the login prompt"
    ((SECONDS - start < timeout)) || fail "no login prompt after $timeout s"
    sleep 5
done
login_s=$((SECONDS - start))
log "login prompt after $login_s s"

failures=0
check() { if eval "$2"; then log "ok: $1"; else log "FAILED: $1"; failures=$((failures + 1)); fi; }
check "the Pi calls itself $name" "grep -q '^$name login:' '$console'"
check "the first boot ran (pipacs-firstboot.service)" "grep -q 'Finished.*pipacs-firstboot' '$console'"
check "the root file system grew to the card" "grep -q 'EXT4-fs (vda2): resized filesystem' '$console'"

# pipacs may still be starting (an emulated CPU): ask until it answers, for a bounded time.
answered=0
for _ in $(seq 60); do
    if "$ECHOSCU" -to 10 -ta 10 -td 10 -aec "$aet" 127.0.0.1 "$dicom_port" >/dev/null 2>&1; then answered=1; break; fi
    sleep 5
done
check "pipacs answers a C-ECHO as $aet ($((SECONDS - start)) s after power-on)" "((answered))"
changes="" status=""
for _ in $(seq 24); do
    status=$(curl -s -m 30 -o "$dir/changes.json" -w '%{http_code}' -u "$http_user" \
        "http://127.0.0.1:$http_port/changes?last" || true)
    [[ $status == 200 ]] && { changes=$(cat "$dir/changes.json"); break; }
    sleep 5
done
check "GET /changes?last answers (HTTP ${status:-none}: $changes)" "[[ \$changes == *'\"Last\"'* ]]"

if ((failures)); then fail "$failures check(s) failed"; fi
log "all checks passed: $(basename "$img") boots as $name in $login_s s (to the login prompt), $((SECONDS - start)) s in all"
