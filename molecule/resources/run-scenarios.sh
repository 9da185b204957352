#!/usr/bin/env bash
# Run Molecule scenarios end to end on simulated Pis and print one line per scenario.
#
#   molecule/resources/run-scenarios.sh              every scenario under molecule/
#   molecule/resources/run-scenarios.sh base storage just these
#   molecule/resources/run-scenarios.sh site-arm64   site.yml on one emulated arm64 Pi
#   molecule/resources/run-scenarios.sh base:arm64   a scenario on the arm64 image instead
#   molecule/resources/run-scenarios.sh site-armhf   site.yml on one emulated 32-bit Pi, offline
#   molecule/resources/run-scenarios.sh image-arm64  the SD card image booted as a Pi (builds it)
#
# Prepares the host and the images first (testbed.sh all; quick when already done). A scenario
# named *-arm64, or NAME:arm64, also gets `testbed.sh host-fixes --arm64` (qemu-user through
# binfmt_misc) and `testbed.sh image arm64`; NAME:arm64 runs NAME with
# PIPACS_TESTBED_IMAGE=localhost/pipacs-bookworm:arm64. PIPACS_ARM64=0 leaves the *-arm64
# scenarios out of "every scenario" (a kernel without binfmt_misc); *-armhf likewise get the
# armhf image, and PIPACS_ARMHF=0 leaves them out. image-* scenarios boot the SD card image
# (image/build.sh testimage builds it when missing); PIPACS_SDIMAGE=0 leaves them out.
# Full logs go to .cache/molecule-logs/<scenario>.log. Exit code: number of failed scenarios.
# Time limit per scenario: PIPACS_SCENARIO_TIMEOUT seconds (2400), fleet PIPACS_FLEET_TIMEOUT (3600):
# with two lanes on 2 cores a scenario takes up to half as long again as alone.
# PIPACS_MOLECULE_LANES=N (1 here, 2 from `make molecule`) runs N scenarios at once.
set -euo pipefail
# The whole script is one block, read before it runs: editing this file while a run goes on
# (runs take an hour) cannot change what that run does next.
{

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo"
export PATH="$repo/.venv/bin:$PATH"
command -v molecule >/dev/null || {
    echo "molecule not found: python3 -m venv .venv && .venv/bin/pip install -r requirements.txt" >&2
    exit 2
}
ARM64_IMAGE=localhost/pipacs-bookworm:arm64

scenarios=("$@")
if ((${#scenarios[@]} == 0)); then
    for file in molecule/*/molecule.yml; do
        scenario=$(basename "$(dirname "$file")")
        [[ $scenario == *-arm64 && ${PIPACS_ARM64:-1} == 0 ]] && continue
        [[ $scenario == *-armhf && ${PIPACS_ARMHF:-1} == 0 ]] && continue
        [[ $scenario == image-* && ${PIPACS_SDIMAGE:-1} == 0 ]] && continue
        scenarios+=("$scenario")
    done
fi

amd64=0 arm64=0 armhf=0
for entry in "${scenarios[@]}"; do
    if [[ $entry == *-arm64 || $entry == *:arm64 ]]; then arm64=1
    elif [[ $entry == *-armhf ]]; then armhf=1
    else amd64=1; fi
done
if ((amd64)); then "$here/testbed.sh" all; fi
if ((arm64 || armhf)); then "$here/testbed.sh" host-fixes --arm64; fi
if ((arm64)); then "$here/testbed.sh" image arm64; fi
if ((armhf)); then "$here/testbed.sh" image armhf; fi

logs=.cache/molecule-logs
mkdir -p "$logs"

# One scenario, its log in $logs; appends "PASS|FAIL entry seconds" to the file $1.
run_one() {
    local results=$1 entry=$2 scenario log start limit result
    local -a image=()
    scenario=${entry%:arm64}
    log=$logs/$scenario.log
    if [[ $entry == *:arm64 ]]; then
        image=("PIPACS_TESTBED_IMAGE=$ARM64_IMAGE")
        log=$logs/$scenario.arm64.log
    fi
    echo "=== ${image[*]}${image[*]:+ }molecule test -s $scenario (log: $log)"
    start=$(date +%s)
    # The SD card image scenarios boot the image itself: build it when missing, then import it
    # with the scenario's pipacs.txt written on its boot partition (image/build.sh testimage).
    if [[ $scenario == image-* ]] &&
        ! "$repo/image/build.sh" testimage "${scenario#image-}" >"$logs/$scenario.image.log" 2>&1; then
        tail -n 20 "$logs/$scenario.image.log"
        printf '%-4s %-12s %4ss\n' FAIL "$entry" "$(($(date +%s) - start))" >>"$results"
        return
    fi
    # A scenario that hangs (a stuck apt download in a container, say) must not eat CI's time.
    # fleet runs eleven playbooks on three Pis after its converge: it gets longer.
    limit=${PIPACS_SCENARIO_TIMEOUT:-2400}
    if [[ $scenario == fleet ]]; then limit=${PIPACS_FLEET_TIMEOUT:-3600}; fi
    if env "${image[@]}" timeout --kill-after=60 "$limit" \
        molecule test -s "$scenario" >"$log" 2>&1; then
        result=PASS
    else
        result=FAIL
        tail -n 40 "$log"
    fi
    printf '%-4s %-12s %4ss\n' "$result" "$entry" "$(($(date +%s) - start))" >>"$results"
}

# PIPACS_MOLECULE_LANES=N runs the scenarios in N lanes at once (each scenario has its own
# container and network names, so lanes never share one). Scenarios go to lanes longest
# first, each to the lane with the least work so far, by these usual durations (seconds,
# alone on 2 cores); `make test` uses 2 lanes on CI's 2 cores.
declare -A usual=([fleet]=1200 [site]=900 [site-armhf]=1150 [site-arm64]=700 [image-arm64]=700 [server]=360
    [repeater]=330 [plugins]=410 [daemon]=200 [hotspot]=170 [base]=150 [storage]=80)
lanes=${PIPACS_MOLECULE_LANES:-1}
((lanes >= 1)) || lanes=1
declare -a lane_load lane_list
for ((i = 0; i < lanes; i++)); do lane_load[i]=0; lane_list[i]=""; done
mapfile -t ordered < <(for entry in "${scenarios[@]}"; do
    printf '%s %s\n' "${usual[${entry%:arm64}]:-300}" "$entry"; done | sort -rn -k1,1)
for line in "${ordered[@]}"; do
    weight=${line%% *} entry=${line#* } best=0
    for ((i = 1; i < lanes; i++)); do
        ((lane_load[i] < lane_load[best])) && best=$i
    done
    lane_load[best]=$((lane_load[best] + weight))
    lane_list[best]+="$entry "
done

results=$(mktemp)
trap 'rm -f "$results"' EXIT
pids=()
for ((i = 0; i < lanes; i++)); do
    [[ -n ${lane_list[i]} ]] || continue
    ((lanes > 1)) && echo "=== lane $((i + 1)): ${lane_list[i]}"
    (for entry in ${lane_list[i]}; do run_one "$results" "$entry"; done) &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || true; done

failed=$(grep -c '^FAIL' "$results" || true)
echo "=== summary"
cat "$results"
echo "molecule: $((${#scenarios[@]} - failed)) passed, $failed failed"
exit "$failed"
}
