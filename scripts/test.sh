#!/usr/bin/env bash
# Runs every check and test, after preparing the host (the README's test
# command; .ci/run calls it). Needs root for the host preparation.
set -euo pipefail
cd "$(dirname "$0")/.."

# The disk is shared with other machines and has run out mid-run before;
# say what there was, so a "No space left" failure can be read at once.
echo "== disk"
df -h . /var/tmp
bash scripts/setup-test-host.sh
echo "== Python test dependencies"
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore -r tests/python/requirements.txt
python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore ./clients/python
echo "== Python stubs are generated from proto/"
bash scripts/gen-python-stubs.sh --check

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo doc (broken doc links fail)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked -q
echo "== cargo test"
cargo test --locked --lib --bins --tests
cargo build --locked
echo "== systemd units"
bash scripts/verify-units.sh
echo "== systemd units, run under systemd booted in a container"
bash tests/systemd/boot-check.sh target/debug/switchyard
echo "== disk used by the build"
du -sh target
echo "== Python tests (grpcio against a real broker)"
SWITCHYARD_BIN="$PWD/target/debug/switchyard" python3 -m pytest -q tests/python
