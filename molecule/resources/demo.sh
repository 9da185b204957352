#!/usr/bin/env bash
# A simulated classroom Pi on this machine, configured by playbooks/site.yml like a real one.
#
#   molecule/resources/demo.sh            build the image if needed, start the Pi, apply
#                                         site.yml, store a sample study, print the URLs
#   molecule/resources/demo.sh --destroy  remove the simulated Pi
#
# Re-runnable: a second run reuses the container and should report changed=0.
# The ports are published on 127.0.0.1 only. Environment:
#   PIPACS_DEMO_HTTP_PORT   host port for pipacs' HTTP (default 18042)
#   PIPACS_DEMO_DICOM_PORT  host port for pipacs' DICOM (default 14242)
#   PIPACS_TESTBED_IMAGE    image (default localhost/pipacs-bookworm:amd64)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
export PATH="$repo/.venv/bin:$PATH"

NAME=pipacs-demo
IMAGE=${PIPACS_TESTBED_IMAGE:-localhost/pipacs-bookworm:amd64}
HTTP_PORT=${PIPACS_DEMO_HTTP_PORT:-18042}
DICOM_PORT=${PIPACS_DEMO_DICOM_PORT:-14242}
AET=PIPACS_DEMO
DEMO_DIR=$repo/.cache/demo
# The example inventory's vault (public password: a demo, never a real school).
export ANSIBLE_VAULT_PASSWORD_FILE=$repo/inventory/example/.vault-pass.example
ADMIN_USER=admin
ADMIN_PASSWORD=example-teacher-password

log() { printf '[demo] %s\n' "$*" >&2; }
die() { printf '[demo] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (rootful podman runs the systemd containers)"

if [[ ${1:-} == --destroy ]]; then
    if podman container exists "$NAME"; then
        podman rm --force --time 10 "$NAME" >/dev/null
        log "removed $NAME"
    else
        log "$NAME does not exist"
    fi
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [--destroy]"
command -v ansible-playbook >/dev/null || die "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt"

# ---- The simulated Pi ------------------------------------------------------------------------
"$here/testbed.sh" all
if ! podman container exists "$NAME"; then
    log "starting $NAME (HTTP 127.0.0.1:$HTTP_PORT, DICOM 127.0.0.1:$DICOM_PORT)"
    # NET_ADMIN, NET_RAW: dnsmasq's DHCP for the classroom Wi-Fi (site.yml's hotspot play).
    podman run --detach --name "$NAME" --hostname "$NAME" --systemd=always --cap-add SYS_ADMIN \
        --cap-add NET_ADMIN --cap-add NET_RAW \
        --publish "127.0.0.1:$HTTP_PORT:8042" --publish "127.0.0.1:$DICOM_PORT:4242" \
        "$IMAGE" /sbin/init >/dev/null
elif [[ $(podman inspect --format '{{.State.Running}}' "$NAME") != true ]]; then
    log "starting the existing $NAME"
    podman start "$NAME" >/dev/null
else
    log "reusing the running $NAME"
fi
for _ in $(seq 30); do
    state=$(podman exec "$NAME" systemctl is-system-running 2>/dev/null || true)
    [[ $state == running || $state == degraded ]] && break
    sleep 1
done

# ---- Its inventory: the example school's settings, this container as its only PACS Pi ----
mkdir -p "$DEMO_DIR/host_vars"
ln -sfn "$repo/inventory/example/group_vars" "$DEMO_DIR/group_vars"
# As a school's copy of the example must: the controller's tasks without sudo (Mitogen).
ln -sfn "$repo/inventory/example/host_vars/localhost.yml" "$DEMO_DIR/host_vars/localhost.yml"
cat >"$DEMO_DIR/hosts.yml" <<YAML
---
# Written by molecule/resources/demo.sh: one simulated Pi reached through podman.
all:
  children:
    classroom:
      hosts:
        $NAME:
    pacs:
      hosts:
        $NAME:
YAML
cat >"$DEMO_DIR/host_vars/$NAME.yml" <<YAML
---
ansible_connection: containers.podman.podman
ansible_user: root
ansible_become: false
server_name: PiPACS demo classroom
server_dicom_aet: $AET
YAML

# ---- Apply the site playbook -----------------------------------------------------------------
log "applying playbooks/site.yml (log: $DEMO_DIR/site.log)"
start=$(date +%s)
if ! ANSIBLE_NOCOLOR=1 ansible-playbook -i "$DEMO_DIR/hosts.yml" playbooks/site.yml >"$DEMO_DIR/site.log" 2>&1; then
    tail -n 40 "$DEMO_DIR/site.log"
    die "site.yml failed, see $DEMO_DIR/site.log"
fi
recap=$(grep -E "^$NAME +:" "$DEMO_DIR/site.log" | tail -1 | tr -s ' ')
log "site.yml done in $(($(date +%s) - start)) s: ${recap#*: }"

# ---- Store a sample study over DICOM, from this machine to the published port ---------------
sample=$DEMO_DIR/sample-study
python - "$sample" <<'PY'
"""Three slices of a tiny synthetic CT study (one study, one series), written once."""
import sys
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

folder = Path(sys.argv[1])
folder.mkdir(parents=True, exist_ok=True)
root = "2.25.31415926535897932384626433832795028841"
for i in range(1, 4):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = f"{root}.3.{i}"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Demo^Phantom", "DEMO-0001", "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = f"{root}.1", f"{root}.2"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20250101", "090000", "DEMO1"
    ds.StudyDescription, ds.SeriesDescription = "Demo phantom", "Axial"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, i
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, i * 5], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [1, 1], 5
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 64
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth = -1024, 1, 40, 400
    y, x = np.mgrid[-32:32, -32:32]
    ds.PixelData = np.where(x * x + y * y < (20 + 3 * i) ** 2, 1064, 24).astype(np.uint16).tobytes()
    ds.save_as(folder / f"ct-{i}.dcm", enforce_file_format=True)
PY
if command -v storescu >/dev/null; then
    TCP_NODELAY=1 storescu -aet DEMO-LAPTOP -aec "$AET" 127.0.0.1 "$DICOM_PORT" "$sample"/*.dcm \
        || die "storescu to 127.0.0.1:$DICOM_PORT failed"
else
    python -m pynetdicom storescu -aet DEMO-LAPTOP -aec "$AET" 127.0.0.1 "$DICOM_PORT" "$sample" \
        || die "C-STORE to 127.0.0.1:$DICOM_PORT failed"
fi
log "stored the sample study (3 CT slices) over DICOM"

# ---- What to open, and how it is doing ------------------------------------------------------
version=$(podman exec "$NAME" /opt/pipacs/current/bin/pipacs --version)
python - "$HTTP_PORT" "$ADMIN_USER" "$ADMIN_PASSWORD" "$version" "$DICOM_PORT" "$AET" <<'PY'
import base64, json, sys, urllib.request

port, user, password, version, dicom_port, aet = sys.argv[1:]
def get(path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.loads(answer.read())
stats = get("/statistics")
last = get("/changes?last")
base = f"http://127.0.0.1:{port}"
print(f"""
PiPACS demo classroom Pi is running ({version}).
  Welcome page : {base}/
  Web viewer   : {base}/viewer/
  DICOMweb     : {base}/dicom-web/studies
  REST API     : {base}/system        (user {user}, password {password})
  DICOM        : AE title {aet}, 127.0.0.1 port {dicom_port}
Health: {stats.get('CountPatients')} patient(s), {stats.get('CountStudies')} study(ies),
        {stats.get('CountSeries')} series, {stats.get('CountInstances')} instance(s),
        {stats.get('TotalDiskSizeMB', '?')} MB; last change #{last.get('Last')}.
Remove it with: molecule/resources/demo.sh --destroy""")
PY
