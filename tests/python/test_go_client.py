"""A Go client (grpc-go, stubs generated from proto/ by protoc-gen-go and
protoc-gen-go-grpc) talks to the broker over its Unix socket: a login-less
Status, then a session, a direct service, its inventory and an exec on a
simulated device, and a wrong password's gRPC code. The program is
tests/go/client/main.go; tests/go/build.sh builds it with Debian's Go
toolchain and libraries (GOPATH-style, no module proxy), which
scripts/setup-test-host.sh installs."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import ALICE_PW, ROOT, run_script

GO_DIR = ROOT / "tests" / "go"


@pytest.fixture(scope="module")
def go_client(tmp_path_factory):
    for tool in ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc"):
        assert shutil.which(tool), (
            f"{tool} is missing: scripts/setup-test-host.sh installs Debian's Go toolchain")
    out = tmp_path_factory.mktemp("go")
    # The compiled grpc-go and protobuf packages are kept between runs.
    env = dict(os.environ, GOCACHE=str(ROOT / "target" / "go-cache"))
    done = subprocess.run(["bash", str(GO_DIR / "build.sh"), str(out)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"tests/go/build.sh failed:\n{done.stdout}\n{done.stderr}"
    return out / "client"


def run_go(client, *args, env=None):
    run_env = {k: v for k, v in os.environ.items() if k != "SWITCHYARD_GO_AUTHORITY"}
    return run_script([str(client), *map(str, args)], env=dict(run_env, **(env or {})),
                      timeout=120)


@pytest.mark.parametrize("authority", [None, "localhost"])
def test_go_client_status_without_login(go_client, broker, authority):
    # grpc-go sends "localhost" as :authority for unix: targets, so its
    # default works as well as grpc.WithAuthority("localhost").
    env = {} if authority is None else {"SWITCHYARD_GO_AUTHORITY": authority}
    done = run_go(go_client, broker, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["version"]
    assert result["sessions_before"] == 0


def test_go_client_with_the_socket_path_as_authority_is_refused(go_client, broker):
    # What gRPC core does by default, and why the option matters there: the
    # broker's HTTP/2 stack refuses a path as :authority. grpc-go's default
    # never sends it (the test above), but naming it by hand fails.
    done = run_go(go_client, broker, env={"SWITCHYARD_GO_AUTHORITY": str(broker)})
    assert done.returncode == 1
    assert "grpc error: code=" in done.stderr, done.stderr
    assert "code=OK" not in done.stderr


def test_go_client_session_service_and_exec(go_client, broker, service):
    done = run_go(go_client, broker, service["host"], service["port"], service["fingerprint"],
                  "alice", env={"SWITCHYARD_PASSWORD": ALICE_PW})
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


def test_go_client_wrong_password_is_unauthenticated(go_client, broker, service):
    done = run_go(go_client, broker, service["host"], service["port"], service["fingerprint"],
                  "alice", env={"SWITCHYARD_PASSWORD": "not-" + ALICE_PW})
    assert done.returncode == 1
    # grpc-go's codes.Unauthenticated (16), with the broker's message.
    assert "grpc error: code=Unauthenticated" in done.stderr, done.stderr
