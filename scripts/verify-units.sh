#!/usr/bin/env bash
# Checks every unit in deploy/systemd with `systemd-analyze verify` and fails
# on any message at all (its exit code alone misses unknown keys). Units are
# checked with ExecStart pointing at the built binaries, and their
# Documentation= man pages against the generated ones.
set -euo pipefail
cd "$(dirname "$0")/.."
bindir="$PWD/target/debug"
[ -x "$bindir/switchyardd" ] || cargo build --locked
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The units' Documentation= names man pages: check them against the pages
# the binary generates (`switchyard man`), as the README installs them.
"$bindir/switchyardd" man "$work/man/man1" > /dev/null
status=0
for dir in deploy/systemd deploy/systemd/user; do
    mkdir -p "$work/$dir"
    for unit in "$dir"/*.service "$dir"/*.socket; do
        sed "s|/usr/bin/switchyard|$bindir/switchyard|" "$unit" > "$work/$unit"
    done
    out=$(cd "$work/$dir" && MANPATH="$work/man" SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --man=yes ./*.socket ./*.service 2>&1 || true)
    if [ -n "$out" ]; then
        echo "systemd-analyze verify $dir:" >&2
        echo "$out" >&2
        status=1
    fi
done
[ $status -eq 0 ] && echo "systemd units verify cleanly"
exit $status
