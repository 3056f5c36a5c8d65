#!/usr/bin/env bash
# Prepares a Debian host (as root) for the test suite: OpenSSH server and
# client, sshpass, python3 with venv, and a local account with a password
# for the SSH driver's password-authentication tests. Safe to run again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v sshpass >/dev/null || need+=(sshpass)
# systemd-socket-activate and systemd-analyze, for the systemd tests.
command -v systemd-socket-activate >/dev/null || need+=(systemd)
# systemd-nspawn: boots systemd in a container to run the units for real
# (tests/systemd/boot-check.sh).
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v curl >/dev/null || need+=(curl)
# A real browser for the SSO approval page test (driven over WebDriver).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v openssl >/dev/null || need+=(openssl)
# Python for the SDK tests, in a virtual environment (scripts/test.sh): a
# stock Debian python3 has no ensurepip, so `python3 -m venv` needs
# python3-venv.
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# strip, for the binaries the boot check installs.
command -v strip >/dev/null || need+=(binutils)
# nft and ip, for the fault tests' silent partition (a network namespace
# whose UDP is dropped by an nftables rule; tests/faults.rs).
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
# PostgreSQL (Debian's, 15 on bookworm) for the relay tier's tests: each
# test starts a private cluster as an unprivileged user on a Unix socket
# in a temporary directory (tests/common/postgres.rs).
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
# man, for scripts/verify-units.sh's check of the units' Documentation=
# pages (systemd-analyze verify --man=yes runs it).
command -v man >/dev/null || need+=(man-db)
# A real HTTP CONNECT proxy (with and without Basic auth) for the TCP
# transport's proxy tests (tests/tcp_transport.rs).
command -v tinyproxy >/dev/null || need+=(tinyproxy)
# Node.js and npm for the Node.js gRPC client test (tests/node, run by
# tests/python/test_node_client.py; scripts/test.sh runs `npm ci`).
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
# Go and the Go gRPC libraries from Debian for the Go client test
# (tests/go/build.sh builds it GOPATH-style from /usr/share/gocode; run by
# tests/python/test_go_client.py): the compiler, grpc-go and the protobuf
# runtime as source, protoc and its two Go plugins for the stubs. grpc-go
# 1.33 marshals through github.com/golang/protobuf, which must be the 1.5
# line (a wrapper of the APIv2 runtime the stubs use): with 1.3 (the other
# package apt may pick for grpc's dependency) every call panics with
# "protobuf tag not enough fields". It is listed first so apt takes it.
grep -qs ProtoPackageIsVersion4 /usr/share/gocode/src/github.com/golang/protobuf/proto/proto.go \
    || need+=(golang-github-golang-protobuf-1-5-dev)
command -v go >/dev/null || need+=(golang-go)
[ -d /usr/share/gocode/src/google.golang.org/grpc ] || need+=(golang-google-grpc-dev)
[ -d /usr/share/gocode/src/google.golang.org/protobuf ] || need+=(golang-google-protobuf-dev)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v protoc-gen-go >/dev/null || need+=(protoc-gen-go)
command -v protoc-gen-go-grpc >/dev/null || need+=(protoc-gen-go-grpc)
# A real Telnet server for the Telnet driver's tests, run per connection
# by the test (inetd style, tests/common/telnetd.rs), never as a service.
[ -x /usr/sbin/telnetd ] || need+=(inetutils-telnetd)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# sshd's privilege-separation directory.
mkdir -p /run/sshd
chmod 0755 /run/sshd

# inetutils-telnetd depends on an inetd: make sure nothing serves Telnet
# on port 23 (the tests start telnetd themselves, on loopback ports).
if [ -x /usr/sbin/telnetd ]; then
    command -v update-inetd >/dev/null && update-inetd --disable telnet 2>/dev/null || true
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl disable --now inetutils-inetd.service >/dev/null 2>&1 || true
    fi
fi

# The account the tests log into over SSH (tests/common/sshd.rs knows it).
if ! id switchyard-test >/dev/null 2>&1; then
    useradd --create-home --shell /bin/sh switchyard-test
fi
echo 'switchyard-test:switchyard-test-password' | chpasswd

# The unprivileged account the tests run PostgreSQL as (initdb refuses
# root; tests/common/postgres.rs also creates it when missing).
if ! id switchyard-pg >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin switchyard-pg
fi
