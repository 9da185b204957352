# shellcheck shell=bash
# The Debian mirrors this machine's apt already uses, for the root file systems built here:
# sourced by molecule/resources/testbed.sh (the simulated Pis' images) and image/build.sh (the
# SD card images). Both set SUITE first. Reads one-line (.list) and deb822 (.sources) files.

# The mirror of $SUITE, or PIPACS_TESTBED_MIRROR; nothing when there is none.
host_mirror() {
    if [[ -n ${PIPACS_TESTBED_MIRROR:-} ]]; then
        echo "$PIPACS_TESTBED_MIRROR"
        return
    fi
    local file
    {
        for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [[ -r $file ]] || continue
            awk -v suite="$SUITE" '
                $1 == "deb" {
                    i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) { print $i; exit }
                }' "$file"
        done
        for file in /etc/apt/sources.list.d/*.sources; do
            [[ -r $file ]] || continue
            awk -v suite="$SUITE" '
                function flush() { if (uri != "" && has) { print uri; found = 1 } uri = ""; has = 0 }
                /^[[:space:]]*$/ { flush(); if (found) exit; next }
                /^URIs:/ { uri = $2 }
                /^Suites:/ { for (j = 2; j <= NF; j++) if ($j == suite) has = 1 }
                END { if (!found) flush() }' "$file"
        done
    } | sed -n 1p
}

# The debian-security mirror, or PIPACS_TESTBED_SECURITY_MIRROR; nothing when there is none.
security_mirror() {
    if [[ -n ${PIPACS_TESTBED_SECURITY_MIRROR:-} ]]; then
        echo "$PIPACS_TESTBED_SECURITY_MIRROR"
        return
    fi
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
        2>/dev/null | grep -v '^[[:space:]]*#' | grep -oE 'https?://[^ ]*debian-security/?' | sed -n 1p || true
}
