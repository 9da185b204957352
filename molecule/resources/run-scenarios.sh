#!/usr/bin/env bash
# Run Molecule scenarios end to end on simulated Pis and print one line per scenario.
#
#   molecule/resources/run-scenarios.sh              every scenario under molecule/
#   molecule/resources/run-scenarios.sh base storage just these
#
# Prepares the host and the image first (testbed.sh all; quick when already done).
# Full logs go to .cache/molecule-logs/<scenario>.log. Exit code: number of failed scenarios.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
export PATH="$repo/.venv/bin:$PATH"
command -v molecule >/dev/null || {
    echo "molecule not found: python3 -m venv .venv && .venv/bin/pip install -r requirements.txt" >&2
    exit 2
}

"$here/testbed.sh" all

scenarios=("$@")
if ((${#scenarios[@]} == 0)); then
    for file in molecule/*/molecule.yml; do
        scenarios+=("$(basename "$(dirname "$file")")")
    done
fi

logs=.cache/molecule-logs
mkdir -p "$logs"
failed=0
summary=()
for scenario in "${scenarios[@]}"; do
    echo "=== molecule test -s $scenario (log: $logs/$scenario.log)"
    start=$(date +%s)
    if molecule test -s "$scenario" >"$logs/$scenario.log" 2>&1; then
        result=PASS
    else
        result=FAIL
        failed=$((failed + 1))
        tail -n 40 "$logs/$scenario.log"
    fi
    summary+=("$(printf '%-4s %-12s %4ss' "$result" "$scenario" "$(($(date +%s) - start))")")
done

echo "=== summary"
printf '%s\n' "${summary[@]}"
echo "molecule: $((${#scenarios[@]} - failed)) passed, $failed failed"
exit "$failed"
