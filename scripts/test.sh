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
# Every Python step uses a virtual environment of its own: a stock Debian
# python3 refuses `pip install` into the system interpreter (PEP 668), and
# the tests must not depend on whichever Python comes first on PATH.
# setup-test-host.sh installed python3-venv.
venv="${SWITCHYARD_TEST_VENV:-$PWD/target/python-venv}"
echo "== Python virtual environment ($venv)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
export PYTHON="$venv/bin/python"
echo "== Python test dependencies"
"$PYTHON" -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
"$PYTHON" -m pip install -q --disable-pip-version-check ./clients/python
echo "== Node.js client test packages (tests/node)"
npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
echo "== Python stubs are generated from proto/"
bash scripts/gen-python-stubs.sh --check
echo "== mypy --strict on the SDK and its examples"
(cd clients/python && "$PYTHON" -m mypy --strict switchyard examples)

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
SWITCHYARD_BIN="$PWD/target/debug/switchyard" "$PYTHON" -m pytest -q tests/python
