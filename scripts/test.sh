#!/usr/bin/env bash
# Runs every check and test, after preparing the host (the README's test
# command; .ci/run calls it). Needs root for the host preparation.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup-test-host.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --all-targets --locked
