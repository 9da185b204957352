#!/bin/bash
# Run on a Pi by roles/fleet/tasks/backup.yml: a consistent snapshot of pipacs's data.
#   backup-snapshot.sh STORAGE_DIR RELEASE_DIR CONFIG_DIR SNAPSHOT_DIR [EXTRA_FILE...]
# pipacs is stopped only while the stored files are hard-linked (metadata only, no copying)
# and the index is copied, then started again: seconds, not the time the pull takes.
# The snapshot lives inside STORAGE_DIR (same file system, so hard links always work; pipacs
# ignores folders there whose names are not two hex digits). EXTRA_FILEs that exist (the
# content library's record) are copied into extra/. Prints the index's counts; the
# checksums are written where the backup lands (fleet_backup_seal), not read here again.
set -euo pipefail
storage=$1 release=$2 config=$3 snapshot=$4
shift 4

rm -rf "$snapshot"
mkdir -p "$snapshot/storage" "$snapshot/index" "$snapshot/extra"
was_active=$(systemctl is-active pipacs.service || true)
restart() { if [[ $was_active == active ]]; then systemctl start pipacs.service; fi; }
trap restart EXIT
if [[ $was_active == active ]]; then systemctl stop pipacs.service; fi

shopt -s nullglob
for folder in "$storage"/[0-9a-f][0-9a-f] "$storage/.incoming"; do
    [[ -d $folder ]] && cp -al "$folder" "$snapshot/storage/"
done
"$release/bin/pipacs" --backup-index "$snapshot/index/pipacs-index.db" "$config"
for extra in "$@"; do
    if [[ -f $extra ]]; then cp -p "$extra" "$snapshot/extra/"; fi
done
restart
trap - EXIT
