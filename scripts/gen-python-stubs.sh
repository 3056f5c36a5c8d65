#!/usr/bin/env bash
# Regenerates the Python SDK's gRPC stubs from proto/ (grpcio-tools, pinned
# in tests/python/requirements.txt). With --check, fails if the committed
# stubs differ from what the proto generates. Runs $PYTHON (default:
# python3), e.g. a virtual environment's, which scripts/test.sh sets.
set -euo pipefail
cd "$(dirname "$0")/.."
out=clients/python
if [ "${1:-}" = "--check" ]; then
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi
# The service stubs' types (broker_pb2_grpc.pyi, for mypy --strict) come
# from mypy-protobuf's plugin, installed beside this Python (pinned in
# tests/python/requirements.txt).
plugin="$("${PYTHON:-python3}" -c 'import os, sys; print(os.path.dirname(sys.executable))')/protoc-gen-mypy_grpc"
if [ ! -x "$plugin" ]; then
    echo "$plugin is missing: run this with the Python of the test venv (pip install -r tests/python/requirements.txt)" >&2
    exit 1
fi
"${PYTHON:-python3}" -m grpc_tools.protoc -Iproto --python_out="$out" --grpc_python_out="$out" --pyi_out="$out" \
    --plugin=protoc-gen-mypy_grpc="$plugin" --mypy_grpc_out="$out" \
    switchyard/v1/broker.proto
if [ "${1:-}" = "--check" ]; then
    for f in broker_pb2.py broker_pb2_grpc.py broker_pb2.pyi broker_pb2_grpc.pyi; do
        if ! cmp -s "$out/switchyard/v1/$f" "clients/python/switchyard/v1/$f"; then
            echo "clients/python/switchyard/v1/$f is stale: run scripts/gen-python-stubs.sh" >&2
            exit 1
        fi
    done
    echo "Python stubs are current"
fi
