"""switchyard.aio: the asyncio client on grpc.aio. Concurrent execs on one
client share one link and start no threads; four uvicorn workers serving
200 concurrent async requests share one link too."""

import asyncio
import json
import socket as sock
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from conftest import ALICE_PW, ROOT
from test_sdk import broker_status, env_for

from switchyard import SwitchyardError, UnknownDevicesError, WrongCredentialsError
from switchyard.aio import FAILURE, SUCCESS, Client


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_concurrent_async_execs_share_one_link_and_no_threads(broker, service):
    async def main():
        threads_before = {t.ident for t in threading.enumerate()}
        async with Client.create(socket=str(broker)) as client:
            svc = await client.service_direct("alice", ALICE_PW, host=service["host"],
                                              port=service["port"])
            inv = await svc.get_inventory()
            names = ["core-1", "core-2", "edge-1"] * 10

            async def one(name):
                request = await inv[name].exec(["show clock", "show version"])
                return name, (await request.wait(timeout=60)).result

            results = await asyncio.gather(*(one(n) for n in names))
            # More clients, more execs: still no thread of the SDK's own.
            async with Client.create(socket=str(broker)) as c2, \
                    Client.create(socket=str(broker)) as c3:
                for c in (c2, c3):
                    s = await c.service_direct("alice", host=service["host"], port=service["port"])
                    await (await (await s.get_inventory()).exec("show clock")).wait(60)
            new_threads = [t.name for t in threading.enumerate() if t.ident not in threads_before]
            status = await client.status()
            return results, new_threads, status, svc, inv

    results, new_threads, status, svc, inv = run(main())
    assert len(results) == 30
    for name, result in results:
        assert result.status == SUCCESS
        assert "UTC" in result[name]["show clock"].data
        assert f"{name} uptime" in result[name]["show version"].data
    # grpc.aio polls with one thread per process (its own, shared by every
    # channel); the SDK adds none per client or per call.
    assert len(new_threads) <= 1 and not any("switchyard" in t for t in new_threads), new_threads
    assert len(status.links) == 1 and status.links[0].connects == 1, status


def test_async_shape_and_errors(broker, service):
    async def main():
        async with Client.create(socket=str(broker)) as client:
            with pytest.raises(WrongCredentialsError):
                await client.service_direct("alice", "wrong", host=service["host"],
                                            port=service["port"])
            svc = await client.service_direct("alice", ALICE_PW, host=service["host"],
                                              port=service["port"])
            inv = await svc.get_inventory()
            assert sorted(inv.filter("role", "^core")) == ["core-1", "core-2"]
            with pytest.raises(UnknownDevicesError):
                inv.subset(["nosuch"])
            request = await (inv.filter("role", "core") | inv.subset(["edge-1"])).exec(
                ["show clock", "show nope"])
            assert request.status == "PROCESSING"
            await request.wait(timeout=60)
            assert request.status == FAILURE
            assert request.result["edge-1"]["show nope"].status == FAILURE
            assert await svc.get_status() == "READY"
            assert await svc.ping(timeout=10) >= 0
            # Over the link's 1 MiB message limit: the request fails as a whole.
            huge = await inv["core-1"].exec("show " + "x" * (2 * 1024 * 1024))
            with pytest.raises(SwitchyardError) as err:
                await huge.wait(30)
            assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert huge.full_result["core-1"].status == FAILURE

    run(main())


def test_four_uvicorn_workers_200_concurrent_async_requests_share_one_link(broker, service):
    pytest.importorskip("fastapi")
    listener = sock.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(256)
    port = listener.getsockname()[1]
    env = env_for(broker, service)
    env["PYTHONPATH"] = str(ROOT / "clients" / "python")
    app = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_async:app", "--workers", "4",
         "--fd", str(listener.fileno()), "--log-level", "warning"],
        env=env, pass_fds=[listener.fileno()], cwd=ROOT / "clients" / "python",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )

    def get(i):
        name = ["core-1", "core-2", "edge-1"][i % 3]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/devices/{name}/clock",
                                    timeout=60) as r:
            return json.load(r)

    try:
        deadline = time.monotonic() + 60
        while len(broker_status(broker).sessions) < 4:
            assert app.poll() is None, app.stderr.read()
            assert time.monotonic() < deadline, "workers did not all start"
            time.sleep(0.05)
        with ThreadPoolExecutor(max_workers=200) as pool:
            bodies = list(pool.map(get, range(200)))
        assert all("UTC" in b["clock"] for b in bodies)
        assert len({b["pid"] for b in bodies}) >= 2, "served by several workers"
        status = broker_status(broker)
        assert len(status.links) == 1, status
        assert status.links[0].connects == 1, "four workers, 200 requests, one login"
        assert status.links[0].holders == 4
    finally:
        app.terminate()
        app.wait(timeout=30)
        listener.close()
