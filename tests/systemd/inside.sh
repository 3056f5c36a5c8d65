#!/bin/bash
# Runs inside a container booted by systemd (see boot-check.sh), as root,
# from a oneshot unit. Installs nothing: the units, sysusers/tmpfiles
# snippets, config and binary are already where the README puts them.
# Follows the README's "Running under systemd" steps, then checks that the
# daemons run *inside* their hardening (seccomp, no new privileges, empty
# capability sets, read-only system, hidden /home) and still do their job.
# Each check appends "ok NAME" or "FAIL NAME: why" to /results/results.txt;
# "complete" is the last line when the script ran to the end.
set -u
out=/results/results.txt
: > "$out"
log=/results/inside.log
exec >>"$log" 2>&1
# The trace goes to the log only, not into the output `check` captures.
exec 5>>"$log"
BASH_XTRACEFD=5
set -x

ok() { echo "ok $1" >> "$out"; }
fail() { echo "FAIL $1: $2" | tr '\n' ' ' >> "$out"; echo >> "$out"; }
# check NAME CMD...: ok when CMD succeeds; its output is the failure text.
check() {
    local name=$1; shift
    local text
    if text=$("$@" 2>&1); then ok "$name"; else fail "$name" "$text"; fi
}
# until_true SECONDS CMD...: polls CMD (a state with nothing to wait on).
until_true() {
    local limit=$(( $(date +%s) + $1 )); shift
    until "$@"; do
        [ "$(date +%s)" -ge "$limit" ] && return 1
        sleep 0.2
    done
}
prop() { systemctl show -p "$2" --value "$1"; }

# Evidence, read from /proc, that PID runs inside the unit's sandbox.
sandboxed() {
    local pid=$1 status
    status=$(cat "/proc/$pid/status")
    grep -q '^NoNewPrivs:[[:space:]]1$' <<<"$status" || { echo "NoNewPrivs not set"; return 1; }
    grep -q '^Seccomp:[[:space:]]2$' <<<"$status" || { echo "no seccomp filter"; return 1; }
    grep -q '^CapEff:[[:space:]]0000000000000000$' <<<"$status" || { echo "effective capabilities left"; return 1; }
    grep -q '^CapBnd:[[:space:]]0000000000000000$' <<<"$status" || { echo "bounding set not empty"; return 1; }
    # ProtectSystem=strict: the daemon's view of /usr is read-only (EROFS
    # even for root, writing through the daemon's own mount namespace).
    if touch "/proc/$pid/root/usr/.hardening-probe" 2>/dev/null; then
        echo "/usr is writable for the daemon"; return 1
    fi
    # ProtectHome=yes: /home is empty and inaccessible in its namespace.
    if [ -n "$(ls -A "/proc/$pid/root/home" 2>/dev/null)" ]; then
        echo "/home is visible to the daemon"; return 1
    fi
    # PrivateTmp=yes: the daemon does not see the host's /tmp.
    if [ -e "/proc/$pid/root/tmp/host-tmp-marker" ]; then
        echo "the daemon shares /tmp"; return 1
    fi
}

touch /tmp/host-tmp-marker
admin_pw='admin-secret-7f3e'
user_pw='ops-secret-91aa'

# sysusers.d and tmpfiles.d ran at boot.
check sysusers getent passwd switchyard
check tmpfiles test "$(stat -c '%a %G' /run/switchyard)" = "750 switchyard"

# --- The service, as the README sets it up: init as root (which creates
# the state directory); systemd hands it to the service's user at start.
install -d -m 0755 /etc/switchyard
printf '%s' "$admin_pw" | install -m 0600 /dev/stdin /etc/switchyard/admin-password
printf '%s' "$user_pw" > /root/ops-password
db=/var/lib/switchyard-service/inventory.db
pwf=/etc/switchyard/admin-password
check service-init switchyard service init --db "$db" --admin-password-file "$pwf"
check device-add switchyard service device add sim-1 --db "$db" --admin-password-file "$pwf" \
    --driver simulator --device-type IOS-XE
check user-add switchyard service user add ops --db "$db" --admin-password-file "$pwf" \
    --password-file /root/ops-password
check service-start systemctl start switchyard-service
service_pid=$(prop switchyard-service MainPID)
check service-sandboxed sandboxed "$service_pid"
# The admin password arrived as a credential (the service unsealed the
# inventory with it), not through the environment or the command line.
check service-credential test -f /run/credentials/switchyard-service.service/admin-password
check service-password-not-in-env bash -c "! grep -qa '$admin_pw' /proc/$service_pid/environ /proc/$service_pid/cmdline"
check service-owns-state test "$(stat -c %U "$db")" = switchyard

# --- The broker, socket-activated, used by a member of the group.
useradd -m -G switchyard alice
useradd -m bob
printf '%s' "$user_pw" > /home/alice/ops-password
chown alice /home/alice/ops-password
check broker-socket systemctl start switchyard-broker.socket
check broker-not-started-yet test "$(prop switchyard-broker ActiveState)" = inactive
as_alice() { runuser -u alice -- switchyard --socket /run/switchyard/broker.sock "$@"; }
fp=$(switchyard service info --db "$db" --admin-password-file "$pwf" | awk '/ingerprint/ {print $NF}')
check connect as_alice connect direct lab --host 127.0.0.1 --port 8181 --user ops \
    --password-file /home/alice/ops-password --fingerprint "$fp"
check broker-activated test "$(prop switchyard-broker ActiveState)" = active
broker_pid=$(prop switchyard-broker MainPID)
check broker-sandboxed sandboxed "$broker_pid"
exec_out=$(as_alice exec lab sim-1 -c 'show version' 2>&1)
check exec-through-hardened-daemons grep -q 'uptime is' <<<"$exec_out"
check not-in-group-refused bash -c \
    '! runuser -u bob -- switchyard --socket /run/switchyard/broker.sock status'
check broker-status-line test -n "$(prop switchyard-broker StatusText)"

# Watchdog pings reach systemd from inside the sandbox (a drop-in shortens
# the interval for the test).
first=$(prop switchyard-broker WatchdogTimestampMonotonic)
check broker-watchdog until_true 10 bash -c \
    "[ \"\$(systemctl show -p WatchdogTimestampMonotonic --value switchyard-broker)\" -gt ${first:-0} ]"

# --- A per-user broker (systemctl --user), as the README installs it.
uid=$(id -u alice)
install -d -o alice -g alice /home/alice/.config/systemd/user
install -o alice -m 0644 /usr/local/share/switchyard-user-units/* /home/alice/.config/systemd/user/
check user-manager systemctl start "user@$uid.service"
as_alice_user() {
    runuser -u alice -- env XDG_RUNTIME_DIR="/run/user/$uid" \
        DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$uid/bus" "$@"
}
check user-socket as_alice_user systemctl --user enable --now switchyard-broker.socket
check user-socket-private test "$(stat -c '%a %U' "/run/user/$uid/switchyard/broker.sock")" = "600 alice"
check user-broker-exec bash -c "runuser -u alice -- env XDG_RUNTIME_DIR=/run/user/$uid switchyard \
    connect direct lab2 --host 127.0.0.1 --port 8181 --user ops \
    --password-file /home/alice/ops-password --fingerprint '$fp' &&
    runuser -u alice -- env XDG_RUNTIME_DIR=/run/user/$uid switchyard exec lab2 sim-1 -c 'show version' | grep -q 'uptime is'"
user_pid=$(as_alice_user systemctl --user show -p MainPID --value switchyard-broker)
check user-broker-seccomp grep -q '^Seccomp:[[:space:]]2$' "/proc/$user_pid/status"
check user-broker-no-new-privs grep -q '^NoNewPrivs:[[:space:]]1$' "/proc/$user_pid/status"
check user-broker-stop as_alice_user systemctl --user stop switchyard-broker.socket switchyard-broker
check user-broker-stopped-cleanly test \
    "$(as_alice_user systemctl --user show -p Result --value switchyard-broker)" = success

# --- The relay, as its unit's comment sets it up.
state=/var/lib/switchyard-relay
check relay-init switchyard relay init --state "$state" --hostname 127.0.0.1
check relay-start systemctl start switchyard-relay
relay_pid=$(prop switchyard-relay MainPID)
check relay-sandboxed sandboxed "$relay_pid"
check relay-serves-https curl -sf --max-time 10 --cacert "$state/ca.pem" \
    https://127.0.0.1:8443/.well-known/switchyard-relay

# --- No restarts, no secrets in the journal, clean stops.
for unit in switchyard-service switchyard-broker switchyard-relay; do
    check "$unit-no-restarts" test "$(prop $unit NRestarts)" = 0
done
journal=$(journalctl --no-pager -o cat -u switchyard-service -u switchyard-broker -u switchyard-relay)
check journal-has-logs test -n "$journal"
check journal-no-secrets bash -c "! grep -q -e '$admin_pw' -e '$user_pw' <<<\"\$0\"" "$journal"
check stop systemctl stop switchyard-broker.socket switchyard-broker switchyard-service switchyard-relay
for unit in switchyard-service switchyard-broker switchyard-relay; do
    check "$unit-stopped-cleanly" test "$(prop $unit Result)/$(prop $unit ExecMainStatus)" = success/0
done
echo complete >> "$out"
