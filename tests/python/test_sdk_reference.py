"""The reference client's shape on switchyard.sync (issue 19): names and
arguments, inventory selection and set operations, exec results by device
and command, service attributes, and the login exception classes. Real
`switchyard service` and `switchyard broker` processes."""

import asyncio

import grpc
import pytest

from conftest import ALICE_PW, Tinyproxy, closed_port, running_broker

from switchyard import (
    ExecError,
    NotAvailableError,
    SwitchyardError,
    UnknownDevicesError,
    UnreachableError,
    WrongCredentialsError,
)
from switchyard.sync import FAILURE, PARTIAL_SUCCESS, SUCCESS, Client, ProxyInfo


@pytest.fixture()
def svc(broker, lab):
    with Client.create(socket=str(broker)) as client:
        # The reference's argument order: username, password, host, port.
        yield client.service_direct("alice", ALICE_PW, lab["host"], lab["port"],
                                    sha256_fingerprint=lab["fingerprint"])


def test_filter_is_a_regular_expression_search(svc):
    inv = svc.inventory
    assert sorted(inv.filter("device_type", "IOS")) == ["core-1", "core-2", "edge-1"]
    assert sorted(inv.filter("device_type", "^IOS$")) == ["edge-1"]
    assert sorted(inv.filter("role", "core")) == ["core-1", "core-2"]
    assert sorted(inv.filter("name", r"-\d$")) == ["core-1", "core-2", "dead-1", "edge-1"]
    assert len(inv.filter("no-such-attribute", ".*")) == 0


def test_subset_raises_on_unknown_names(svc):
    inv = svc.inventory
    assert sorted(inv.subset(["edge-1", "core-2"])) == ["core-2", "edge-1"]
    with pytest.raises(UnknownDevicesError) as err:
        inv.subset(["edge-1", "nosuch", "other"])
    assert err.value.unknown == ["nosuch", "other"]
    assert "nosuch, other" in str(err.value) and "core-1" in str(err.value)
    assert isinstance(err.value, KeyError)


def test_set_operations_and_singleton(svc):
    inv = svc.inventory
    core = inv.filter("role", "core")
    edge = inv.filter("role", "edge")
    ios = inv.filter("device_type", "^IOS")
    assert sorted(core | edge) == sorted(core.union(edge)) == sorted(inv)
    assert sorted(core & ios) == sorted(core.intersection(ios)) == ["core-1", "core-2"]
    assert sorted(ios & edge) == sorted(ios.intersection(edge)) == ["edge-1"]
    assert sorted(ios - core) == sorted(ios.difference(core)) == ["edge-1"]
    assert sorted(ios ^ edge) == sorted(ios.symmetric_difference(edge)) == [
        "core-1", "core-2", "dead-1"]
    assert type(core | edge) is type(inv), "operations keep the inventory class (exec works)"
    assert (ios - core).singleton().name == "edge-1"
    with pytest.raises(ValueError, match="exactly one"):
        core.singleton()


def test_exec_results_by_device_and_command(svc):
    inv = svc.inventory
    req = inv.subset(["core-1", "edge-1"]).exec(["show clock", "show nope"], timeout=20,
                                                 reset_before=True, reset_after=True)
    assert req.wait(timeout=30) is req
    result = req.result
    assert result["core-1"]["show clock"].status == SUCCESS
    assert "UTC" in result["core-1"]["show clock"].data
    assert result["core-1"]["show clock"].status_message == ""
    bad = result["edge-1"]["show nope"]
    assert bad.status == FAILURE and "exit status" in bad.status_message
    with pytest.raises(ExecError):
        bad.data
    assert result["edge-1"].status == FAILURE and "show nope" in result["edge-1"].status_message
    assert req.status == FAILURE, "no device succeeded as a whole"

    one = inv["core-2"].exec("show version").wait(30)
    assert one.status == SUCCESS and one.result.status == SUCCESS
    assert "core-2 uptime" in one.result["core-2"].data
    assert "core-2 uptime" in one.result["core-2"]["show version"].data
    assert one.full_result["core-2"].status == SUCCESS


def test_partial_success_and_exclude_failed(svc):
    inv = svc.inventory
    req = inv.subset(["core-1", "dead-1"]).exec("show clock").wait(60)
    assert req.status == PARTIAL_SUCCESS
    dead = req.result["dead-1"]
    assert dead.status == FAILURE and dead.status_message, "the device's own error is given"
    with pytest.raises(ExecError, match="dead-1"):
        dead.data
    assert sorted(req.result.exclude_failed()) == ["core-1"]
    assert "dead-1" in req.full_result.status_message
    # The inventory remembers dead-1 failed as a whole (not a failed command).
    assert sorted(inv.exclude_failed()) == ["core-1", "core-2", "edge-1"]
    assert sorted(svc.inventory.filter("role", "edge").exclude_failed()) == ["edge-1"]
    again = inv.subset(["dead-1"]).exec("show clock").wait(60)
    assert again.status == FAILURE


def test_wait_with_a_timeout_and_full_result_of_a_failed_request(svc):
    req = svc.inventory["core-1"].exec("show clock")
    assert req.wait(timeout=30).status == SUCCESS
    # A request that fails as a whole (over the link's 1 MiB message limit,
    # so nothing is sent): result raises, full_result lists every device.
    huge = "show " + "x" * (2 * 1024 * 1024)
    failed = svc.inventory.subset(["core-1", "core-2"]).exec(huge)
    with pytest.raises(SwitchyardError) as err:
        failed.wait(30)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert failed.status == FAILURE
    full = failed.full_result
    assert full.status == FAILURE and sorted(full) == ["core-1", "core-2"]
    assert full["core-2"].status == FAILURE and full["core-2"].status_message
    with pytest.raises(SwitchyardError):
        failed.result


def test_service_attributes(svc):
    assert svc.status == "READY"
    assert svc.version is None
    assert {"exec", "inventory", "terminal"} <= svc.capabilities
    assert 0 <= svc.ping(timeout=10) < 10
    first = svc.inventory
    assert svc.update_inventory() is svc
    assert svc.inventory is not first and sorted(svc.inventory) == sorted(first)
    svc.logout()
    assert svc.status == "LOGGED_OUT"
    with pytest.raises(SwitchyardError, match="logged out"):
        svc.update_inventory()


def test_login_exceptions(broker, lab):
    with Client.create(socket=str(broker)) as client:
        with pytest.raises(WrongCredentialsError) as err:
            client.service_direct("alice", "wrong", host=lab["host"], port=lab["port"])
        assert err.value.code == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(UnreachableError) as err:
            client.service_direct("alice", ALICE_PW, host="127.0.0.1", port=closed_port())
        assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_service_direct_over_rpc_url_through_a_real_proxy(broker, lab, tmp_path):
    """rpc_url= reaches the service's TCP listener; ProxyInfo(url, username,
    password) sends it through a real tinyproxy with Basic auth (its log
    shows the CONNECT); wrong proxy credentials are a clear error that
    names the proxy, without the password."""
    url = f"https://{lab['tcp_addr']}/rpc"
    proxy = Tinyproxy(tmp_path, ("bob", "pr0xy-pass"))
    try:
        with Client.create(socket=str(broker)) as client:
            with pytest.raises(SwitchyardError, match="refused CONNECT") as err:
                client.service_direct("alice", ALICE_PW, rpc_url=url, fingerprint=lab["fingerprint"],
                                      proxy=ProxyInfo(proxy.url, "bob", "wr0ng-pass"))
            assert f"127.0.0.1:{proxy.port}" in str(err.value)
            assert "wr0ng-pass" not in str(err.value)
            svc = client.service_direct("alice", ALICE_PW, rpc_url=url,
                                        fingerprint=lab["fingerprint"],
                                        proxy=ProxyInfo(proxy.url, "bob", "pr0xy-pass"))
            assert svc.inventory["core-1"].exec("show version").wait(30).status == SUCCESS
            assert f"CONNECT {lab['tcp_addr']}" in proxy.log()
            assert "pr0xy-pass" not in repr(ProxyInfo(proxy.url, "bob", "pr0xy-pass"))
            with pytest.raises(SwitchyardError, match="rpc_url"):
                client.service_direct("alice", ALICE_PW, host=lab["host"], port=lab["port"],
                                      proxy=ProxyInfo(proxy.url))
    finally:
        proxy.close()


def test_service_direct_tcp_port_names_the_tcp_listener(lab, tmp_path):
    """tcp_port= (sync and asyncio) is the service's TCP listener port for
    a host= link: with the broker pinned to TCP (`[broker] transport =
    "tcp"`), the link goes there (its carrier is "tcp") and execs; a closed
    tcp_port is UnreachableError; a bad one, or one beside rpc_url=, a
    ValueError before any call."""
    from switchyard import aio

    tcp_port = int(lab["tcp_addr"].rsplit(":", 1)[1])
    where = dict(host=lab["host"], port=lab["port"], fingerprint=lab["fingerprint"])
    with running_broker(tmp_path, {"SWITCHYARD_BROKER__TRANSPORT": "tcp"}) as sock:
        with Client.create(socket=str(sock)) as client:
            with pytest.raises(UnreachableError):
                client.service_direct("alice", ALICE_PW, tcp_port=closed_port(), **where)
            svc = client.service_direct("alice", ALICE_PW, tcp_port=tcp_port, **where)
            assert svc.inventory["core-1"].exec("show version").wait(30).status == SUCCESS
            assert [link.carrier for link in client.status().links] == ["tcp"]
            for bad in (0, 70000):
                with pytest.raises(ValueError, match="tcp_port"):
                    client.service_direct("alice", ALICE_PW, tcp_port=bad, **where)
            with pytest.raises(ValueError, match="rpc_url"):
                client.service_direct("alice", ALICE_PW, rpc_url=f"https://{lab['tcp_addr']}/rpc",
                                      tcp_port=tcp_port, fingerprint=lab["fingerprint"])

        async def on_aio():
            async with aio.Client.create(socket=str(sock)) as client:
                svc = await client.service_direct("alice", ALICE_PW, tcp_port=tcp_port, **where)
                request = await (await svc.get_inventory())["core-2"].exec("show version")
                await request.wait(30)
                return request.status, [link.carrier for link in (await client.status()).links]

        assert asyncio.run(asyncio.wait_for(on_aio(), 60)) == (SUCCESS, ["tcp"])


def test_unsupported_reference_arguments_are_refused_clearly(broker, tmp_path):
    with Client.create(socket=str(broker)) as client:
        with pytest.raises(NotAvailableError, match="ca_file"):
            client.certificate_login("a@example.com", ca_path="/etc/ca.pem")
        (tmp_path / "cert.pem").write_text("x")
        (tmp_path / "key.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
        with pytest.raises(NotAvailableError, match="encrypted key"):
            client.certificate_login("a@example.com", cert_path=str(tmp_path / "cert.pem"),
                                     key_path=str(tmp_path / "key.pem"),
                                     private_key_password="pw")
