"""A Node.js client (@grpc/grpc-js, stubs built from proto/ by
@grpc/proto-loader) talks to the broker over its Unix socket: a login-less
Status, then a session, a direct service, its inventory and an exec on a
simulated device. The script is tests/node/client.mjs; scripts/test.sh
installs its npm packages (`npm ci --prefix tests/node`)."""

import json
import os
import shutil

import pytest

from conftest import ALICE_PW, ROOT, run_script

NODE_DIR = ROOT / "tests" / "node"


def node_client(*args, env=None):
    node = shutil.which("node") or shutil.which("nodejs")
    assert node, "node is missing: scripts/setup-test-host.sh installs Debian's nodejs"
    assert (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir(), (
        "the Node client's packages are missing: run `npm ci --prefix tests/node`")
    return run_script([node, str(NODE_DIR / "client.mjs"), *map(str, args)],
                      env=dict(os.environ, **(env or {})), timeout=120)


@pytest.mark.parametrize("default_authority", ["0", "1"])
def test_node_client_status_without_login(broker, default_authority):
    # grpc-js sends "localhost" as :authority for unix: targets, so the
    # library's default works as well as the documented option.
    done = node_client(broker, env={"SWITCHYARD_NODE_DEFAULT_AUTHORITY": default_authority})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["version"]
    assert result["sessions_before"] == 0


def test_node_client_session_service_and_exec(broker, service):
    done = node_client(broker, service["host"], service["port"], service["fingerprint"], "alice",
                       env={"SWITCHYARD_PASSWORD": ALICE_PW})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["attached"] is True
    assert result["service_name"] == "py-service"
    assert result["devices"] == ["core-1", "core-2", "edge-1"]
    assert result["device_error"] == ""
    assert "core-1 uptime" in result["output"]
    assert result["summary"] == "EXEC_STATUS_SUCCESS"
    assert result["sessions_after"] == [True]
    assert result["link_connects"] == [1]


def test_node_client_wrong_password_is_a_grpc_error(broker, service):
    done = node_client(broker, service["host"], service["port"], service["fingerprint"], "alice",
                       env={"SWITCHYARD_PASSWORD": "not-" + ALICE_PW})
    assert done.returncode == 1
    # grpc-js status 16: UNAUTHENTICATED, with the broker's message.
    assert "code=16" in done.stderr, done.stderr
