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
import time
from collections.abc import Callable
from typing import Any, AsyncIterator, Optional, Sequence, TypeVar

import grpc
import grpc.aio

from ._calls import (Call, ClientCalls, DeviceTransfers, inventory_call, sso_event,
                     sso_without_outcome, wait_call)
from ._core import (
    FAILURE,
    PARTIAL_SUCCESS,
    SUCCESS,
    CHANNEL_OPTIONS,
    CommandResult,
    Commands,
    DeviceInfo,
    DeviceResult,
    DeviceSet,
    ExecArgs,
    ExecBase,
    ExecResponse,
    ExecStatus,
    ForkGuard,
    OutputChunk,
    STREAM_QUEUE,
    LinkKey,
    ProxyInfo,
    default_socket,
    listen_address,
    socks_proxy_request,
)
from ._login import Login, OnPrompt
from ._service import ServiceBase
from ._ssh_proxy import KeysPath, SshProxyBase, start_request as ssh_proxy_request
from . import transfer
from .aio_terminal import AsyncTerminal
from .transfer import AsyncFileTransfer
from .errors import SwitchyardError, from_rpc, login_error
from .v1 import broker_pb2 as pb
from .v1 import broker_pb2_grpc as rpc

T = TypeVar("T")


class Client(ClientCalls["Service"]):
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

    async def _do(self, call: Call[T],
                  retry: Optional[Callable[[grpc.RpcError], Optional[Call[T]]]] = None) -> T:
        """As ``switchyard.sync.Client._do``."""
        stub = self._stub
        try:
            return call.finish(await getattr(stub, call.method)(call.request,
                                                                timeout=call.timeout))
        except grpc.RpcError as err:
            again = retry(err) if retry is not None else None
            if again is None:
                raise (login_error if call.login else from_rpc)(err, self._socket) from None
        return await self._do(again)

    async def _call(self, method: str, request: Any, timeout: Optional[float] = 60,
                    login: bool = False) -> Any:
        return await self._do(Call(method, request, lambda reply: reply, login, timeout))

    def _service(self, reply: pb.ServiceResponse, link: LinkKey,
                 cloud: bool = False) -> "Service":
        return Service(self, reply, link, cloud)

    # -- services (see switchyard.sync.Client for the arguments) -----------
    async def service_direct(
        self, username: str, password: Optional[str] = None, host: str = "localhost",
        port: int = 8181, sha256_fingerprint: Optional[str] = None,
        rpc_url: Optional[str] = None, *, fingerprint: Optional[str] = None,
        proxy: Optional[ProxyInfo] = None, tcp_port: Optional[int] = None,
    ) -> "Service":
        """As ``switchyard.sync.Client.service_direct``."""
        call = self._direct(username, password, host, port, sha256_fingerprint or fingerprint,
                            rpc_url, proxy, tcp_port)
        return await self._do(
            call, lambda err: self._direct_retry(call, err, password, username, host))

    async def service_integrated(self, admin_password: Optional[str] = None,
                                 db: Optional[str] = None) -> "Service":
        """As ``switchyard.sync.Client.service_integrated``."""
        return await self._do(self._integrated(admin_password, db))

    async def sso_login(
        self, identity: str, domain: Optional[str] = None, open_browser: bool = False,
        proxy: Optional[ProxyInfo] = None, *, relay_url: Optional[str] = None,
        timeout: Optional[float] = 600, on_prompt: Optional[OnPrompt] = None,
    ) -> Login:
        """As ``switchyard.sync.Client.sso_login``."""
        request = self._sso(identity, domain, relay_url, proxy)
        try:
            async for event in self._stub.SsoLogin(request, timeout=timeout):
                login = sso_event(event, identity, open_browser, on_prompt)
                if login is not None:
                    return login
        except grpc.RpcError as err:
            raise login_error(err, self._socket) from None
        raise sso_without_outcome()

    async def certificate_login(
        self, identity: str, cert_path: Optional[str] = None, key_path: Optional[str] = None,
        ca_path: Optional[str] = None, private_key_password: Optional[str] = None,
        domain: Optional[str] = None, proxy: Optional[ProxyInfo] = None, *,
        relay_url: Optional[str] = None, cert_dir: Optional[str] = None,
        password: Optional[str] = None,
    ) -> Login:
        """As ``switchyard.sync.Client.certificate_login``."""
        return await self._do(self._certificate(
            identity, cert_path, key_path, ca_path,
            private_key_password if private_key_password is not None else password,
            domain, proxy, relay_url, cert_dir))

    async def access_token_login(self, access_token: str, domain: Optional[str] = None,
                                 proxy: Optional[ProxyInfo] = None, *,
                                 relay_url: Optional[str] = None) -> Login:
        """As ``switchyard.sync.Client.access_token_login``."""
        return await self._do(self._token(access_token, domain, proxy, relay_url))

    async def logout(self, identity: Optional[str] = None, domain: Optional[str] = None,
                     relay_url: Optional[str] = None) -> int:
        """As ``switchyard.sync.Client.logout``."""
        return await self._do(self._logout(identity, domain, relay_url))

    async def service_cloud(self, serial: str, e2ee_fingerprint: Optional[str] = None,
                            identity: Optional[str] = None) -> "Service":
        """As ``switchyard.sync.Client.service_cloud``."""
        return await self._do(self._cloud(serial, e2ee_fingerprint, identity))

    #: The reference client's name for ``service_cloud``.
    service = service_cloud

    async def service_direct_with_sso(
        self, serial: str, host: Optional[str] = None, port: int = 8181,
        e2ee_fingerprint: Optional[str] = None, identity: Optional[str] = None,
    ) -> "Service":
        """As ``switchyard.sync.Client.service_direct_with_sso``."""
        return await self._do(self._direct_sso(serial, host, port, e2ee_fingerprint, identity))

    async def start_socks_proxy(self, service: "Service", local_port: int = 0,
                                local_address: str = "127.0.0.1",
                                username: Optional[str] = None,
                                password: Optional[str] = None) -> "TcpForwarder":
        """As ``switchyard.sync.Client.start_socks_proxy``."""
        reply = await self._call("SocksProxyStart", socks_proxy_request(
            service._ref(), local_port, local_address, username, password))
        return TcpForwarder(self, reply)

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
        return await self._do(self._status())


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
        await self._client._do(wait_call(self._ref(), limit, self._named))

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
        self._inventory = await self._client._do(inventory_call(
            self._ref(), lambda reply: Inventory(
                {d.name: Device(self, d) for d in reply.devices}, self._failed)))
        return self

    def _exec(self, devices: Sequence[str], args: ExecArgs) -> "ExecRequest":
        return ExecRequest(self, devices, args)


class Device(DeviceInfo, DeviceTransfers[AsyncFileTransfer]):
    """One device of a service's inventory (asyncio). Its file transfers
    (``sftp_download_to_file``, ``sftp_upload_from_file``,
    ``scp_download_to_file``, ``scp_upload_from_file``, as in
    ``switchyard.sync``) start a task and return an ``AsyncFileTransfer``
    at once: ``await device.sftp_download_to_file(...)`` waits for the
    copy; ``await transfer.wait(timeout)`` does too."""

    def __init__(self, service: Service, d: pb.Device) -> None:
        super().__init__(d)
        self._service = service

    async def exec(self, commands: Commands, timeout: Optional[float] = None,
                   reset_before: bool = False, reset_after: bool = False,
                   sudo: bool = False, stream: bool = False,
                   max_output: Optional[int] = None) -> "ExecRequest":
        """As ``switchyard.sync.Device.exec``; returns the started request."""
        return self._service._exec([self.name], ExecArgs(
            commands, timeout, reset_before, reset_after, sudo, stream, max_output))

    async def terminal(self, cols: int = 80, rows: int = 24, timeout: float = 30.0) -> AsyncTerminal:
        """An interactive shell on the device; ``async with await
        device.terminal() as term:``."""
        client = self._service._client
        return await AsyncTerminal.open(client._stub, self._service._ref(), self.name, cols, rows,
                                        timeout, lambda err: from_rpc(err, client._socket))

    #: The reference client's other name for ``terminal``.
    interactive = terminal

    async def forward_tcp_port(self, local_port: int = 0, destination_port: int = 22,
                               local_address: str = "127.0.0.1") -> "TcpForwarder":
        """As ``switchyard.sync.Device.forward_tcp_port``."""
        client = self._service._client
        reply = await client._call("ForwardStart", pb.ForwardStartRequest(
            service=self._service._ref(), device=self.name, port=destination_port,
            listen=listen_address(local_address, local_port)))
        return TcpForwarder(client, reply)

    # -- file transfer (the service runs SFTP or SCP against the device) ---
    def _download(self, remote_path: str, local_path: str, protocol: "pb.TransferProtocol",
                  max_bytes: Optional[int]) -> AsyncFileTransfer:
        client = self._service._client
        return transfer.download_async(client._stub, client._socket, self._service._ref(),
                                       self.name, remote_path, local_path, protocol, max_bytes)

    def _upload(self, local_path: str, remote_path: str,
                protocol: "pb.TransferProtocol") -> AsyncFileTransfer:
        client = self._service._client
        return transfer.upload_async(client._stub, client._socket, self._service._ref(),
                                     self.name, local_path, remote_path, protocol)


class TcpForwarder:
    """A port forward or SOCKS5 proxy the broker keeps (asyncio), as
    ``switchyard.sync.TcpForwarder``; ``async with`` stops it."""

    def __init__(self, client: Client, reply: pb.ForwardStatus) -> None:
        self._client = client
        self.forward_id: str = reply.forward_id
        #: The local TCP port it listens on.
        self.local_port: int = reply.local_port
        #: ``ADDRESS:PORT`` it listens on.
        self.address: str = reply.address

    def __repr__(self) -> str:
        return f"<TcpForwarder {self.forward_id} {self.address}>"

    async def __aenter__(self) -> "TcpForwarder":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def info(self) -> Optional[pb.ForwardStatus]:
        """Its counters (connections, bytes, last error), or None once it
        has ended."""
        reply = await self._client._call("ForwardList", pb.ForwardListRequest())
        return next((f for f in reply.forwards if f.forward_id == self.forward_id), None)

    async def get_status(self) -> str:
        """RUNNING while the broker keeps it, else STOPPED."""
        return "RUNNING" if await self.info() is not None else "STOPPED"

    async def stop(self) -> None:
        """Stops it (its open connections are reset); stopping one that has
        already ended does nothing."""
        try:
            await self._client._stub.ForwardStop(
                pb.ForwardStopRequest(forward_id=self.forward_id), timeout=30)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise from_rpc(err, self._client._socket) from None


class Inventory(DeviceSet[Device]):
    """Devices by name, as ``switchyard.sync.Inventory``; ``exec`` is a
    coroutine returning the started request."""

    async def exec(self, commands: Commands, timeout: Optional[float] = None,
                   reset_before: bool = False, reset_after: bool = False,
                   sudo: bool = False, stream: bool = False,
                   max_output: Optional[int] = None) -> "ExecRequest":
        """As ``switchyard.sync.Inventory.exec`` (where commands run, and
        what ``reset_before``/``reset_after`` mean, is said there)."""
        first, names = self._exec_target()
        return first._service._exec(names, ExecArgs(
            commands, timeout, reset_before, reset_after, sudo, stream, max_output))


class ExecRequest(ExecBase):
    """Commands running on devices, read by a task of the event loop.
    ``await request.wait(timeout)``, then ``result`` / ``full_result`` /
    ``status`` as in ``switchyard.sync.ExecRequest``."""

    def __init__(self, service: Service, devices: Sequence[str], args: ExecArgs) -> None:
        request = self._start(service._ref(), service._failed, devices, args)
        self._socket = service._client._socket
        # stream=True: output goes to `chunks()` through this bounded queue
        # (the reading task waits when it is full: back-pressure).
        self._queue: Optional["asyncio.Queue[Optional[OutputChunk]]"] = (
            asyncio.Queue(maxsize=STREAM_QUEUE) if args.stream else None)
        self._ended = False
        self._task = asyncio.get_running_loop().create_task(self._run(service._client._stub,
                                                                      request))

    async def _run(self, stub: rpc.BrokerAsyncStub, request: pb.ExecRequest) -> None:
        try:
            async for event in stub.Exec(request):
                for chunk in self._take(event):
                    assert self._queue is not None  # chunks only with stream=True
                    await self._queue.put(chunk)
        except grpc.RpcError as err:
            self._error = from_rpc(err, self._socket)
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
        return self._outcome(self._task.done())

    @property
    def result(self) -> ExecResponse:
        """Results by device, once finished; raises if it failed as a whole."""
        self._finished()
        return self._results(full=False)

    @property
    def full_result(self) -> ExecResponse:
        """Results by device, once finished, never raising for a failed
        request (devices without a result listed as failed)."""
        self._finished()
        return self._results(full=True)


__all__ = [
    "FAILURE", "PARTIAL_SUCCESS", "SUCCESS",
    "Client", "Service", "Inventory", "Device", "ExecRequest", "ExecResponse", "ExecStatus",
    "CommandResult", "DeviceResult", "OutputChunk", "Login", "ProxyInfo", "AsyncTerminal",
    "TcpForwarder",
]
