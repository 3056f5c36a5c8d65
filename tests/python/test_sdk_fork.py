"""fork(): a client created before os.fork() and used in the child fails at
once with an error saying to create the client after forking; a client the
child creates works. Each round runs in a script of its own, bounded, so a
hang shows up as a failure with every thread's stack."""

import sys

from conftest import ALICE_PW, run_script
from test_sdk import env_for

CHILD_TIMEOUT = 60

SCRIPT = r"""
import os, sys, time
from switchyard import ClientForkedError
from switchyard.sync import Client

HOST, PORT, PW = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ROUNDS = int(sys.argv[4])

def child(parent_client, parent_service):
    # The inherited client must refuse at once, never hang.
    try:
        parent_service.inventory["core-1"].exec("show clock").wait(10)
        return 3
    except ClientForkedError as err:
        if "create the client after forking" not in str(err):
            return 4
    try:
        parent_client.status()
        return 5
    except ClientForkedError:
        pass
    parent_client.close()  # only forgets it: the parent's session stays
    try:
        parent_client.status()
        return 7
    except ClientForkedError:
        pass
    # A client of the child's own works, and so does one made before the
    # fork but opened here, and the inherited one opened again.
    for mine in (Client.create(client_name="forked child"), unopened, parent_client):
        with mine:
            svc = mine.service_direct("alice", PW, HOST, PORT)
            out = svc.inventory["core-2"].exec("show clock").wait(30).result["core-2"].data
            if "UTC" not in out:
                return 6
    return 0

unopened = Client.create(client_name="made before fork")
with Client.create(client_name="fork parent") as client:
    service = client.service_direct("alice", PW, HOST, PORT)
    for i in range(ROUNDS):
        assert "UTC" in service.inventory["core-1"].exec("show clock").wait(30).result["core-1"].data
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = child(client, service)
            except BaseException as e:
                print(f"child raised {e!r}", file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        deadline = time.monotonic() + %(timeout)d
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                print(f"round {i}: child hung", flush=True)
                sys.exit(1)
            time.sleep(0.01)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            print(f"round {i}: child exit {code}", flush=True)
            sys.exit(1)
        # The parent's client still works after the child used (and closed) it.
        assert client.status().sessions
    print(f"ok {ROUNDS}", flush=True)
""" % {"timeout": CHILD_TIMEOUT}


def test_client_inherited_across_fork_fails_fast_and_a_new_one_works(broker, service):
    out = run_script([sys.executable, "-c", SCRIPT, service["host"], str(service["port"]),
                      ALICE_PW, "20"], env_for(broker, service), timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ok 20" in out.stdout
