#!/bin/bash
# Proves the units' hardening at run time: boots systemd as PID 1 in a
# container (systemd-nspawn over a throw-away overlay of this host's own
# root), installs the binaries, units, sysusers/tmpfiles snippets and config
# exactly where the README says, and runs tests/systemd/inside.sh there as
# a oneshot unit. That script starts the service, the socket-activated
# broker and the relay under their real sandboxes and checks each from
# /proc, then does an exec through them. Needs root and systemd-nspawn
# (Debian's systemd-container; scripts/setup-test-host.sh installs it).
#
# Usage: tests/systemd/boot-check.sh [path/to/switchyard]  (switchyardd next to it)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-$PWD/target/debug/switchyard}
daemon_bin=$(dirname "$bin")/switchyardd
[ -x "$bin" ] || { echo "boot-check: no binary at $bin" >&2; exit 1; }
[ -x "$daemon_bin" ] || { echo "boot-check: no binary at $daemon_bin" >&2; exit 1; }
command -v systemd-nspawn >/dev/null || { echo "boot-check: systemd-nspawn not installed" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "boot-check: needs root" >&2; exit 1; }

work=$(mktemp -d /var/tmp/switchyard-boot.XXXXXX)
root=$work/root
cleanup() {
    umount "$root" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/upper" "$work/ovl" "$root" "$work/results"
mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/ovl" "$root"

# What the README's install steps put in place. Stripped, as a package
# ships them: the debug build's symbols are hundreds of megabytes that the
# overlay would copy onto a disk the build has already filled.
install -s -m 0755 "$bin" "$root/usr/bin/switchyard"
install -s -m 0755 "$daemon_bin" "$root/usr/bin/switchyardd"
install -m 0644 deploy/sysusers.d/switchyard.conf "$root/usr/lib/sysusers.d/switchyard.conf"
install -m 0644 deploy/tmpfiles.d/switchyard.conf "$root/usr/lib/tmpfiles.d/switchyard.conf"
install -m 0644 deploy/systemd/*.service deploy/systemd/*.socket "$root/etc/systemd/system/"
# The per-user units, for the check to copy into a user's ~/.config.
install -d "$root/usr/local/share/switchyard-user-units"
install -m 0644 deploy/systemd/user/* "$root/usr/local/share/switchyard-user-units/"
install -d -m 0755 "$root/etc/switchyard"
install -m 0644 deploy/config/switchyard.toml "$root/etc/switchyard/config.toml"
# Test-only: a short watchdog interval, so pings can be seen in seconds.
install -d "$root/etc/systemd/system/switchyard-broker.service.d"
printf '[Service]\nWatchdogSec=2s\n' > "$root/etc/systemd/system/switchyard-broker.service.d/test.conf"

# The check itself, started once the container reaches multi-user.
install -m 0755 tests/systemd/inside.sh "$root/usr/local/sbin/switchyard-boot-check"
cat > "$root/etc/systemd/system/switchyard-boot-check.service" <<'UNIT'
[Unit]
Description=Switchyard hardening check
After=multi-user.target
[Service]
Type=oneshot
TimeoutStartSec=150
ExecStart=/usr/local/sbin/switchyard-boot-check
ExecStopPost=/bin/systemctl --no-block poweroff
UNIT
install -d "$root/etc/systemd/system/multi-user.target.wants"
ln -sf ../switchyard-boot-check.service "$root/etc/systemd/system/multi-user.target.wants/"
# A container of its own: not the host's machine id, no host services.
systemd-id128 new > "$root/etc/machine-id"

echo "== booting systemd in a container"
status=0
timeout 240 systemd-nspawn --quiet --register=no --keep-unit --private-network \
    --directory="$root" --bind="$work/results:/results" --boot \
    > "$work/console.log" 2>&1 || status=$?
results=$work/results/results.txt
if [ ! -s "$results" ]; then
    echo "boot-check: the container did not run the check (nspawn exit $status)" >&2
    tail -40 "$work/console.log" >&2
    exit 1
fi
cat "$results"
if grep -q '^FAIL' "$results" || ! grep -qx complete "$results"; then
    echo "--- inside.log (last 60 lines)" >&2
    tail -60 "$work/results/inside.log" >&2
    echo "boot-check: FAILED" >&2
    exit 1
fi
echo "boot-check: all checks passed under systemd"
