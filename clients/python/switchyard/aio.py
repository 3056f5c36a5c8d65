"""Asyncio client, on grpcio's ``grpc.aio``: the classes of
``switchyard.sync`` with ``async`` methods, for async web endpoints.

    from switchyard.aio import Client

    async with Client.create() as client:
        service = await client.service_direct("alice", host="svc.example.net")
        inventory = await service.get_inventory()
        request = await inventory["core-1"].exec("show clock")
        print((await request.wait(timeout=30)).result["core-1"].data)

No thread is started: the session's attach stream is read by a task of the
running event loop, and every call is a coroutine on that loop. A client
belongs to the event loop that opened it, and (like the sync client) to
the process: used after ``fork()`` it raises ``ClientForkedError``.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from typing import Any, AsyncIterator, Optional, Sequence

import grpc
import grpc.aio

from ._core import (
    CHANNEL_OPTIONS,
    FAILURE,
    PARTIAL_SUCCESS,
    SUCCESS,
    CommandResult,
    Commands,
    DeviceInfo,
    DeviceResult,
    DeviceSet,
    ExecCollector,
    ExecResponse,
    ExecStatus,
    ForkGuard,
    OutputChunk,
    STREAM_QUEUE,
    LinkKey,
    ProxyInfo,
    command_list,
    default_socket,
    exec_request,
)
from ._login import (
    Login,
    OnPrompt,
    asks_password,
    certificate_request,
    cloud_request,
    direct_request,
    direct_sso_request,
    integrated_request,
    relay,
    show_prompt,
    sso_request,
    token_request,
)
from ._service import ServiceBase
from ._ssh_proxy import KeysPath, SshProxyBase, start_request as ssh_proxy_request
from .aio_terminal import AsyncTerminal
from .errors import SwitchyardError, from_rpc, login_error
from .v1 import broker_pb2 as pb
from .v1 import broker_pb2_grpc as rpc


class Client:
    """A broker session for asyncio code: ``async with Client.create() as
    client:``."""

    def __init__(self, socket: Optional[str] = None, client_name: Optional[str] = None) -> None:
        import sys

        self._socket = socket or default_socket()
        self._client_name = client_name or " ".join(sys.argv)[:200] or "python"
        self._channel: Optional[grpc.aio.Channel] = None
        self._stub_: Optional[rpc.BrokerAsyncStub] = None
        self._session_id: Optional[str] = None
        self._attach: Any = None
        self._attach_task: Optional["asyncio.Task[None]"] = None
        self._guard = ForkGuard()
        self._inherited: list[object] = []

    @classmethod
    def create(cls, socket: Optional[str] = None, client_name: Optional[str] = None) -> "Client":
        """A new client; use it with ``async with``."""
        return cls(socket, client_name)

    async def __aenter__(self) -> "Client":
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        """Opens the broker session (``async with`` does this); in a forked
        child, a new session of the child's own."""
        if self._guard.forked():
            self._forget_inherited()
        if self._session_id is not None:
            return
        self._guard = ForkGuard()
        channel = grpc.aio.insecure_channel(f"unix:{self._socket}", options=CHANNEL_OPTIONS)
        stub = rpc.BrokerStub(channel)
        try:
            reply = await stub.OpenSession(
                pb.OpenSessionRequest(client_name=self._client_name), timeout=30)
            attach = stub.Attach(pb.AttachRequest(session_id=reply.session_id))
            first = await attach.read()
        except grpc.RpcError as err:
            await channel.close(None)
            raise from_rpc(err, self._socket) from None
        if not isinstance(first, pb.SessionEvent) or first.WhichOneof("event") != "attached":
            await channel.close(None)
            raise SwitchyardError("the broker did not attach the session")
        self._channel, self._stub_, self._attach = channel, stub, attach
        self._session_id = reply.session_id
        self._attach_task = asyncio.get_running_loop().create_task(self._drain_attach())

    async def _drain_attach(self) -> None:
        try:
            async for _ in self._attach:
                pass
        except (grpc.RpcError, asyncio.CancelledError):
            pass

    async def close(self) -> None:
        """Ends the session; the broker releases its links and work. In a
        forked child, only forgets the client."""
        if self._guard.forked():
            self._forget_inherited()
            return
        if self._session_id is None:
            return
        session, self._session_id = self._session_id, None
        assert self._stub_ is not None and self._channel is not None
        try:
            await self._stub_.CloseSession(pb.CloseSessionRequest(session_id=session), timeout=10)
        except grpc.RpcError:
            pass
        self._attach.cancel()
        if self._attach_task is not None:
            await asyncio.gather(self._attach_task, return_exceptions=True)
            self._attach_task = None
        await self._channel.close(None)

    def _forget_inherited(self) -> None:
        """As ``switchyard.sync.Client._forget_inherited``."""
        self._inherited.append((self._channel, self._stub_, self._attach, self._attach_task))
        self._channel, self._stub_, self._attach, self._attach_task = None, None, None, None
        self._session_id = None

    @property
    def session_id(self) -> str:
        """The broker session's id; raises unless the client is open."""
        self._guard.check()
        if self._session_id is None:
            raise SwitchyardError(
                "the client is not open: use `async with Client.create() as client:`")
        return self._session_id

    @property
    def _stub(self) -> rpc.BrokerAsyncStub:
        self._guard.check()
        if self._stub_ is None or self._session_id is None:
            raise SwitchyardError(
                "the client is not open: use `async with Client.create() as client:`")
        return self._stub_

    async def _call(self, method: str, request: Any, timeout: Optional[float] = 60,
                    login: bool = False) -> Any:
        stub = self._stub
        try:
            return await getattr(stub, method)(request, timeout=timeout)
        except grpc.RpcError as err:
            raise (login_error if login else from_rpc)(err, self._socket) from None

    # -- services (see switchyard.sync.Client for the arguments) -----------
    async def service_direct(
        self, username: str, password: Optional[str] = None, host: str = "localhost",
        port: int = 8181, sha256_fingerprint: Optional[str] = None,
        rpc_url: Optional[str] = None, *, fingerprint: Optional[str] = None,
    ) -> "Service":
        """As ``switchyard.sync.Client.service_direct``."""
        request, link = direct_request(self.session_id, username, password, host, port,
                                       sha256_fingerprint or fingerprint, rpc_url)
        try:
            reply = await self._stub.ServiceDirect(request, timeout=60)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.aio.AioRpcError) else None
            if asks_password(password, code == grpc.StatusCode.INVALID_ARGUMENT):
                request.password = getpass.getpass(f"Password for {username}@{host}: ")
                reply = await self._call("ServiceDirect", request, login=True)
            else:
                raise login_error(err, self._socket) from None
        return Service(self, reply, link)

    async def service_integrated(self, admin_password: Optional[str] = None,
                                 db: Optional[str] = None) -> "Service":
        """As ``switchyard.sync.Client.service_integrated``."""
        request, link = integrated_request(self.session_id, admin_password, db)
        return Service(self, await self._call("ServiceIntegrated", request, login=True), link)

    async def sso_login(
        self, identity: str, domain: Optional[str] = None, open_browser: bool = False,
        proxy: Optional[ProxyInfo] = None, *, relay_url: Optional[str] = None,
        timeout: Optional[float] = 600, on_prompt: Optional[OnPrompt] = None,
    ) -> Login:
        """As ``switchyard.sync.Client.sso_login``."""
        request = sso_request(self.session_id, identity, domain, relay_url, proxy)
        try:
            async for event in self._stub.SsoLogin(request, timeout=timeout):
                which = event.WhichOneof("event")
                if which == "prompt":
                    show_prompt(identity, event.prompt, open_browser, on_prompt)
                elif which == "logged_in":
                    return Login(event.logged_in)
        except grpc.RpcError as err:
            raise login_error(err, self._socket) from None
        raise SwitchyardError("the broker ended the SSO login without an outcome")

    async def certificate_login(
        self, identity: str, cert_path: Optional[str] = None, key_path: Optional[str] = None,
        ca_path: Optional[str] = None, private_key_password: Optional[str] = None,
        domain: Optional[str] = None, proxy: Optional[ProxyInfo] = None, *,
        relay_url: Optional[str] = None, cert_dir: Optional[str] = None,
        password: Optional[str] = None,
    ) -> Login:
        """As ``switchyard.sync.Client.certificate_login``."""
        request = certificate_request(
            self.session_id, identity, cert_path, key_path, ca_path,
            private_key_password if private_key_password is not None else password,
            domain, proxy, relay_url, cert_dir)
        return Login(await self._call("CertificateLogin", request, login=True))

    async def access_token_login(self, access_token: str, domain: Optional[str] = None,
                                 proxy: Optional[ProxyInfo] = None, *,
                                 relay_url: Optional[str] = None) -> Login:
        """As ``switchyard.sync.Client.access_token_login``."""
        request = token_request(self.session_id, access_token, domain, relay_url, proxy)
        return Login(await self._call("AccessTokenLogin", request, login=True))

    async def logout(self, identity: Optional[str] = None, domain: Optional[str] = None,
                     relay_url: Optional[str] = None) -> int:
        """As ``switchyard.sync.Client.logout``."""
        reply = await self._call(
            "Logout", pb.LogoutRequest(identity=identity or "", relay=relay(relay_url, domain)))
        return int(reply.logged_out)

    async def service_cloud(self, serial: str, e2ee_fingerprint: Optional[str] = None,
                            identity: Optional[str] = None) -> "Service":
        """As ``switchyard.sync.Client.service_cloud``."""
        request, link = cloud_request(self.session_id, serial, e2ee_fingerprint, identity)
        return Service(self, await self._call("ServiceCloud", request), link, cloud=True)

    #: The reference client's name for ``service_cloud``.
    service = service_cloud

    async def service_direct_with_sso(
        self, serial: str, host: Optional[str] = None, port: int = 8181,
        e2ee_fingerprint: Optional[str] = None, identity: Optional[str] = None,
    ) -> "Service":
        """As ``switchyard.sync.Client.service_direct_with_sso``."""
        request, link = direct_sso_request(self.session_id, serial, host, port,
                                           e2ee_fingerprint, identity)
        return Service(self, await self._call("ServiceDirectWithSso", request), link, cloud=True)

    async def start_ssh_proxy(self, local_port: int = 2222, password: Optional[str] = None,
                              authorized_keys: Optional[KeysPath] = None,
                              local_address: str = "127.0.0.1",
                              persist: bool = False) -> "SshProxy":
        """As ``switchyard.sync.Client.start_ssh_proxy``."""
        request = ssh_proxy_request(self.session_id, local_port, password, authorized_keys,
                                    local_address, persist)
        return SshProxy(self, await self._call("SshProxyStart", request))

    async def status(self) -> pb.StatusResponse:
        """The broker's view of this local user (sessions, links)."""
        result: pb.StatusResponse = await self._call("Status", pb.StatusRequest())
        return result


class SshProxy(SshProxyBase):
    """The SSH proxy the broker keeps (``Client.start_ssh_proxy``, asyncio)."""

    def __init__(self, client: Client, reply: pb.SshProxyStatus) -> None:
        super().__init__(reply)
        self._client = client

    async def __aenter__(self) -> "SshProxy":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def info(self) -> Optional[pb.SshProxyStatus]:
        """As ``switchyard.sync.SshProxy.info``."""
        reply = await self._client._call("Status", pb.StatusRequest())
        return reply.ssh_proxy if reply.HasField("ssh_proxy") else None

    async def status(self) -> str:
        """RUNNING while the broker keeps it, else STOPPED."""
        return "RUNNING" if await self.info() is not None else "STOPPED"

    async def stop(self) -> None:
        """As ``switchyard.sync.SshProxy.stop``."""
        try:
            await self._client._stub.SshProxyStop(pb.SshProxyStopRequest(), timeout=30)
        except grpc.RpcError as err:
            if not isinstance(err, grpc.aio.AioRpcError) or err.code() != grpc.StatusCode.NOT_FOUND:
                raise from_rpc(err, self._client._socket) from None


class Service(ServiceBase):
    """A service reached through the broker (asyncio). The inventory is
    fetched with ``await service.get_inventory()`` (or
    ``update_inventory()``), then read from ``service.inventory``."""

    def __init__(self, client: Client, reply: pb.ServiceResponse, link: LinkKey,
                 cloud: bool = False) -> None:
        super().__init__(client, reply, link, cloud)
        self._client = client
        self._inventory: Optional[Inventory] = None

    async def wait(self, timeout: Optional[float] = None) -> "Service":
        """As ``switchyard.sync.Service.wait``."""
        if self._cloud:
            await self._wait(30.0 if timeout is None else float(timeout))
        return self

    async def _wait(self, limit: float) -> None:
        reply = await self._client._call(
            "Wait", pb.WaitRequest(service=self._ref(), timeout_secs=limit), timeout=limit + 10)
        self.name = reply.service_name or self.name

    async def get_status(self) -> str:
        """As ``switchyard.sync.Service.status`` (a coroutine here)."""
        return self._state_in(await self._client.status())

    async def ping(self, timeout: float = 10.0) -> float:
        """As ``switchyard.sync.Service.ping``."""
        started = time.monotonic()
        await self._wait(timeout)
        return time.monotonic() - started

    @property
    def inventory(self) -> "Inventory":
        """The inventory fetched last; raises if it was never fetched."""
        if self._inventory is None:
            raise SwitchyardError("fetch the inventory first: `await service.get_inventory()`")
        return self._inventory

    async def get_inventory(self) -> "Inventory":
        """The inventory, fetched on first use."""
        if self._inventory is None:
            await self.update_inventory()
        return self.inventory

    async def update_inventory(self) -> "Service":
        """Fetches the inventory from the service again."""
        reply = await self._client._call("Inventory", pb.InventoryRequest(service=self._ref()))
        self._inventory = Inventory({d.name: Device(self, d) for d in reply.devices}, self._failed)
        return self

    def _exec(self, devices: Sequence[str], commands: Commands, timeout: Optional[float],
              reset_before: bool, reset_after: bool, sudo: bool = False, stream: bool = False,
              max_output: Optional[int] = None) -> "ExecRequest":
        return ExecRequest(self, devices, commands, timeout, reset_before, reset_after, sudo,
                           stream, max_output)


class Device(DeviceInfo):
    """One device of a service's inventory (asyncio)."""

    def __init__(self, service: Service, d: pb.Device) -> None:
        super().__init__(d)
        self._service = service

    async def exec(self, commands: Commands, timeout: Optional[float] = None,
                   reset_before: bool = False, reset_after: bool = False,
             sudo: bool = False, stream: bool = False,
             max_output: Optional[int] = None) -> "ExecRequest":
        """As ``switchyard.sync.Device.exec``; returns the started request."""
        return self._service._exec([self.name], commands, timeout, reset_before, reset_after,
                                  sudo, stream, max_output)

    async def terminal(self, cols: int = 80, rows: int = 24, timeout: float = 30.0) -> AsyncTerminal:
        """An interactive shell on the device; ``async with await
        device.terminal() as term:``."""
        client = self._service._client
        return await AsyncTerminal.open(client._stub, self._service._ref(), self.name, cols, rows,
                                        timeout, lambda err: from_rpc(err, client._socket))

    #: The reference client's other name for ``terminal``.
    interactive = terminal


class Inventory(DeviceSet[Device]):
    """Devices by name, as ``switchyard.sync.Inventory``; ``exec`` is a
    coroutine returning the started request."""

    async def exec(self, commands: Commands, timeout: Optional[float] = None,
                   reset_before: bool = False, reset_after: bool = False,
             sudo: bool = False, stream: bool = False,
             max_output: Optional[int] = None) -> "ExecRequest":
        """As ``switchyard.sync.Inventory.exec``."""
        if not self._devices:
            raise ValueError("exec on an empty set of devices")
        service = next(iter(self._devices.values()))._service
        return service._exec(list(self._devices), commands, timeout, reset_before, reset_after,
                             sudo, stream, max_output)


class ExecRequest:
    """Commands running on devices, read by a task of the event loop.
    ``await request.wait(timeout)``, then ``result`` / ``full_result`` /
    ``status`` as in ``switchyard.sync.ExecRequest``."""

    def __init__(self, service: Service, devices: Sequence[str], commands: Commands,
                 timeout: Optional[float], reset_before: bool, reset_after: bool,
                 sudo: bool = False, stream: bool = False,
                 max_output: Optional[int] = None) -> None:
        self._collector = ExecCollector(devices, command_list(commands), keep_output=not stream)
        request = exec_request(service._ref(), devices, self._collector.commands, timeout,
                               reset_before, reset_after, sudo, max_output)
        self._service = service
        self._error: Optional[SwitchyardError] = None
        # stream=True: output goes to `chunks()` through this bounded queue
        # (the reading task waits when it is full: back-pressure).
        self._queue: Optional["asyncio.Queue[Optional[OutputChunk]]"] = (
            asyncio.Queue(maxsize=STREAM_QUEUE) if stream else None)
        self._ended = False
        self._task = asyncio.get_running_loop().create_task(self._run(service._client._stub,
                                                                      request))

    async def _run(self, stub: rpc.BrokerAsyncStub, request: pb.ExecRequest) -> None:
        try:
            async for event in stub.Exec(request):
                if self._queue is not None:
                    for chunk in self._collector.chunks(event):
                        await self._queue.put(chunk)
                result = self._collector.feed(event)
                if result is not None:
                    failed = self._service._failed
                    (failed.add if result.error else failed.discard)(result.device)
        except grpc.RpcError as err:
            self._error = from_rpc(err, self._service._client._socket)
        finally:
            self._ended = True
            if self._queue is not None:
                # Never waits: a consumer that stopped reading must not keep
                # the request from finishing (chunks() sees `_ended` once
                # the queue is drained).
                try:
                    self._queue.put_nowait(None)
                except asyncio.QueueFull:
                    pass

    async def chunks(self) -> AsyncIterator[OutputChunk]:
        """As ``switchyard.sync.ExecRequest.chunks``: ``async for chunk in
        request.chunks()`` (only with ``stream=True``)."""
        if self._queue is None:
            raise SwitchyardError("chunks() needs exec(..., stream=True)")
        while True:
            if self._ended and self._queue.empty():
                return
            chunk = await self._queue.get()
            if chunk is None:
                return
            yield chunk

    async def wait(self, timeout: Optional[float] = None) -> "ExecRequest":
        """Waits until every device finished (``TimeoutError`` after
        ``timeout`` seconds; the request keeps running). Raises the
        request's error if it failed as a whole."""
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(f"exec did not finish within {timeout} s") from None
        if self._error is not None:
            raise self._error
        return self

    def _finished(self) -> None:
        if not self._task.done():
            raise SwitchyardError("the exec is still running: `await request.wait()` first")

    @property
    def status(self) -> ExecStatus:
        """PROCESSING while running; then SUCCESS, PARTIAL_SUCCESS or FAILURE."""
        if not self._task.done():
            return ExecStatus.PROCESSING
        return FAILURE if self._error is not None else self._collector.response().status

    @property
    def result(self) -> ExecResponse:
        """Results by device, once finished; raises if it failed as a whole."""
        self._finished()
        if self._error is not None:
            raise self._error
        return self._collector.response()

    @property
    def full_result(self) -> ExecResponse:
        """Results by device, once finished, never raising for a failed
        request (devices without a result listed as failed)."""
        self._finished()
        return self._collector.response(str(self._error) if self._error else "")


__all__ = [
    "FAILURE", "PARTIAL_SUCCESS", "SUCCESS",
    "Client", "Service", "Inventory", "Device", "ExecRequest", "ExecResponse", "ExecStatus",
    "CommandResult", "DeviceResult", "OutputChunk", "Login", "ProxyInfo", "AsyncTerminal",
]
