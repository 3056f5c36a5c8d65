"""A plain grpcio client talks to the broker over its Unix socket, with
stubs generated from proto/ — what any Python program can do without the
SDK."""

import threading

import grpc
import pytest

from conftest import ALICE_PW

AUTHORITY = [("grpc.default_authority", "localhost")]


def channel(sock, options=AUTHORITY):
    return grpc.insecure_channel(f"unix:{sock}", options=options)


def test_default_authority_is_refused_so_clients_must_set_localhost(stubs, broker):
    pb, rpc = stubs
    # grpc-core sends the socket path as :authority, which the broker's
    # HTTP/2 stack (h2) refuses. The documented one-line option fixes it.
    with channel(broker, options=[]) as ch:
        with pytest.raises(grpc.RpcError) as err:
            rpc.BrokerStub(ch).Status(pb.StatusRequest(), timeout=10)
        assert err.value.code() == grpc.StatusCode.INTERNAL
    with channel(broker) as ch:
        reply = rpc.BrokerStub(ch).Status(pb.StatusRequest(), timeout=10)
        assert reply.version


def test_session_direct_exec_and_status(stubs, broker, service):
    pb, rpc = stubs
    with channel(broker) as ch:
        stub = rpc.BrokerStub(ch)
        session = stub.OpenSession(pb.OpenSessionRequest(client_name="pytest"), timeout=10).session_id
        attach = stub.Attach(pb.AttachRequest(session_id=session))
        first = next(attach)
        assert first.attached.session_id == session

        svc = stub.ServiceDirect(
            pb.ServiceDirectRequest(
                session_id=session, username="alice", host=service["host"],
                port=service["port"], password=ALICE_PW,
                fingerprint=service["fingerprint"],
            ),
            timeout=30,
        )
        assert svc.service_name == "py-service"
        ref = pb.ServiceRef(session_id=session, service_id=svc.service_id)

        inventory = stub.Inventory(pb.InventoryRequest(service=ref), timeout=10)
        assert [d.name for d in inventory.devices] == ["core-1", "core-2", "edge-1"]

        output = {0: b"", 1: b""}
        done = set()
        for event in stub.Exec(
            pb.ExecRequest(service=ref, devices=["core-1", "edge-1"], commands=["show version"]),
            timeout=30,
        ):
            kind = event.WhichOneof("event")
            if kind == "output":
                output[event.device] += event.output.data
            elif kind == "device_result":
                assert event.device_result.error == ""
                output[event.device] += event.device_result.commands[0].output
                done.add(event.device)
        assert done == {0, 1}
        assert b"core-1 uptime" in output[0]
        assert b"edge-1 uptime" in output[1]

        events = list(stub.Exec(pb.ExecRequest(service=ref, devices=["nope"], commands=["x"]), timeout=10))
        assert len(events) == 2 and events[0].device == 0
        assert events[0].device_result.error_code == "NOT_FOUND"
        assert "nope" in events[0].device_result.error
        # The request's overall status closes the stream.
        assert events[1].summary.status == pb.EXEC_STATUS_FAILURE
        assert (events[1].summary.succeeded, events[1].summary.failed) == (0, 1)

        status = stub.Status(pb.StatusRequest(), timeout=10)
        assert [s.session_id for s in status.sessions] == [session]
        assert len(status.links) == 1 and status.links[0].connects == 1

        # Closing the attach stream ends the session.
        attach.cancel()
        ended = threading.Event()
        for _ in range(200):
            if not stub.Status(pb.StatusRequest(), timeout=10).sessions:
                ended.set()
                break
            ended.wait(0.01)
        assert ended.is_set(), "session not reaped after its attach stream closed"
