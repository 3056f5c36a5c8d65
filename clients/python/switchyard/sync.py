"""Synchronous client, in the shape of the reference toolkit's guide.

    from switchyard.sync import Client

    with Client.create() as client:
        service = client.service_direct("alice", host="svc.example.net")
        print(service.inventory)
        result = service.inventory["core-1"].exec("show version").wait().result
        print(result["core-1"].data)

Every ``Client.create()`` is a broker session: it lives while the client is
open, and the broker reaps it (cancelling its work) as soon as the client
closes or its process exits. Logins and links live in the broker, shared by
every process of the same local user. Clients are thread-safe, but not
fork-safe: a client used in a process forked after it was opened raises
``ClientForkedError`` at once (create clients after forking).

``create_context()`` and the module-level functions (``sso_login``,
``service_direct``, ...) act on one default client, as the reference
client's REPL-style globals do.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Optional, Sequence, TypeVar

import grpc

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
from ._login import Login, OnPrompt, default_cert_dir
from .errors import SwitchyardError, from_rpc, login_error
from ._service import ServiceBase
from ._ssh_proxy import KeysPath, SshProxyBase, start_request as ssh_proxy_request
from .terminal import Terminal
from . import transfer
from .transfer import FileTransfer
from .v1 import broker_pb2 as pb
from .v1 import broker_pb2_grpc as rpc

T = TypeVar("T")


def _channel(socket: str) -> grpc.Channel:
    return grpc.insecure_channel(f"unix:{socket}", options=CHANNEL_OPTIONS)


class Client(ClientCalls["Service"]):
    """A broker session. Create it with ``Client.create()`` and use it as a
    context manager (or on an ``ExitStack``)."""

    def __init__(self, socket: Optional[str] = None, client_name: Optional[str] = None) -> None:
        self._socket = socket or default_socket()
        self._client_name = client_name or " ".join(sys.argv)[:200] or "python"
        self._channel: Optional[grpc.Channel] = None
        self._stub_: Optional[rpc.BrokerStub] = None
        self._session_id: Optional[str] = None
        self._attach: Any = None
        self._attach_thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._guard = ForkGuard()
        self._inherited: list[object] = []

    @classmethod
    def create(cls, socket: Optional[str] = None, client_name: Optional[str] = None) -> "Client":
        """A new client; use it as a context manager (``with``), or enter it
        on an ``ExitStack`` that spans notebook cells."""
        return cls(socket, client_name)

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self) -> "Client":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Opens the broker session (``with`` does this). Raises
        ``BrokerNotRunningError`` when no broker answers on the socket. In a
        process forked after the client opened, opens a new session of the
        child's own (the parent's is left alone)."""
        if self._guard.forked():
            self._forget_inherited()
        with self._lock:
            if self._session_id is not None:
                return
            self._guard = ForkGuard()
            channel = _channel(self._socket)
            stub = rpc.BrokerStub(channel)
            try:
                reply = stub.OpenSession(
                    pb.OpenSessionRequest(client_name=self._client_name), timeout=30
                )
                attach = stub.Attach(pb.AttachRequest(session_id=reply.session_id))
                first = next(attach)
            except grpc.RpcError as err:
                channel.close()
                raise from_rpc(err, self._socket) from None
            if first.WhichOneof("event") != "attached":
                channel.close()
                raise SwitchyardError("the broker did not attach the session")
            self._channel, self._stub_, self._attach = channel, stub, attach
            self._session_id = reply.session_id
            # The attach stream holds the session. Its reader is a daemon
            # thread, so a script that never closes its client still exits;
            # the broker then sees the stream drop and reaps the session.
            self._attach_thread = threading.Thread(
                target=self._drain_attach, name="switchyard-attach", daemon=True
            )
            self._attach_thread.start()

    def _drain_attach(self) -> None:
        try:
            for _ in self._attach:
                pass
        except grpc.RpcError:
            pass

    def close(self) -> None:
        """Ends the session; the broker releases its links and work. In a
        process forked after the client opened, only forgets the client:
        the parent's session is the parent's to end."""
        if self._guard.forked():
            self._forget_inherited()
            return
        with self._lock:
            if self._session_id is None:
                return
            try:
                assert self._stub_ is not None
                self._stub_.CloseSession(
                    pb.CloseSessionRequest(session_id=self._session_id), timeout=10
                )
            except grpc.RpcError:
                pass
            # Cancel the attach stream and let its reader finish before the
            # channel is closed: grpc-core can deadlock closing a channel
            # while another thread is still iterating a call on it
            # (grpc/grpc#20026).
            self._attach.cancel()
            if self._attach_thread is not None:
                self._attach_thread.join(timeout=5)
                self._attach_thread = None
            if self._channel is not None:
                self._channel.close()
            self._session_id = None

    def _forget_inherited(self) -> None:
        """In a forked child: drops the parent's session without touching
        gRPC. The parent's objects are kept referenced (finalising a gRPC
        channel inherited across fork() is not safe), and the lock is new
        (a parent thread may have held the old one at the fork). Later
        calls still raise ``ClientForkedError`` until ``open()``."""
        self._inherited.append((self._channel, self._stub_, self._attach, self._lock))
        self._lock = threading.Lock()
        self._channel, self._stub_, self._attach = None, None, None
        self._attach_thread = None
        self._session_id = None

    @property
    def session_id(self) -> str:
        """The broker session's id; raises unless the client is open."""
        self._guard.check()
        if self._session_id is None:
            raise SwitchyardError("the client is not open: use `with Client.create() as client:`")
        return self._session_id

    @property
    def _stub(self) -> rpc.BrokerStub:
        self._guard.check()
        if self._stub_ is None:
            raise SwitchyardError("the client is not open: use `with Client.create() as client:`")
        return self._stub_

    def _do(self, call: Call[T],
            retry: Optional[Callable[[grpc.RpcError], Optional[Call[T]]]] = None) -> T:
        """Makes ``call``; on failure, makes ``retry(err)`` instead when it
        gives a call, else raises the error as ``SwitchyardError``."""
        stub = self._stub
        try:
            return call.finish(getattr(stub, call.method)(call.request, timeout=call.timeout))
        except grpc.RpcError as err:
            again = retry(err) if retry is not None else None
            if again is None:
                raise (login_error if call.login else from_rpc)(err, self._socket) from None
        return self._do(again)

    def _call(self, method: str, request: Any, timeout: Optional[float] = 60,
              login: bool = False) -> Any:
        return self._do(Call(method, request, lambda reply: reply, login, timeout))

    def _service(self, reply: pb.ServiceResponse, link: LinkKey,
                 cloud: bool = False) -> "Service":
        return Service(self, reply, link, cloud)

    # -- services ----------------------------------------------------------
    def service_direct(
        self,
        username: str,
        password: Optional[str] = None,
        host: str = "localhost",
        port: int = 8181,
        sha256_fingerprint: Optional[str] = None,
        rpc_url: Optional[str] = None,
        *,
        fingerprint: Optional[str] = None,
        proxy: Optional[ProxyInfo] = None,
        tcp_port: Optional[int] = None,
    ) -> "Service":
        """Connects to a service's RPC socket as a remote user. Without a
        password, a live link of this local user is shared, or (on a
        terminal) the password is asked for. ``sha256_fingerprint`` (alias
        ``fingerprint``) pins the service's certificate. ``rpc_url``
        (``https://HOST:8081/rpc``, the service's TCP listener) connects over
        TLS on TCP instead of QUIC, for networks that block UDP; ``proxy``
        (a ``ProxyInfo``) then names the HTTP proxy to go through.
        ``tcp_port`` (without ``rpc_url``): the service's TCP listener port on
        ``host`` (None: 8081), which the broker uses when QUIC to
        ``host:port`` gets no answer, or always where the broker's
        ``[broker] transport`` is ``tcp`` (the CLI's ``--tcp-port``).

        Raises ``WrongCredentialsError``, ``UnreachableError``;
        ``ValueError`` for a ``tcp_port`` outside 1-65535 or with
        ``rpc_url``."""
        call = self._direct(username, password, host, port, sha256_fingerprint or fingerprint,
                            rpc_url, proxy, tcp_port)
        return self._do(call, lambda err: self._direct_retry(call, err, password, username, host))

    def service_integrated(
        self, admin_password: Optional[str] = None, db: Optional[str] = None
    ) -> "Service":
        """Runs the service inside the broker over an inventory on this host
        (``db``, else ``$SWITCHYARD_DB``); the admin password unseals it."""
        return self._do(self._integrated(admin_password, db))

    # -- cloud -----------------------------------------------------------
    def sso_login(
        self,
        identity: str,
        domain: Optional[str] = None,
        open_browser: bool = False,
        proxy: Optional[ProxyInfo] = None,
        *,
        relay_url: Optional[str] = None,
        timeout: Optional[float] = 600,
        on_prompt: Optional[OnPrompt] = None,
    ) -> "Login":
        """Logs in to a relay with SSO. Prints the URL and code to open
        (or calls ``on_prompt(prompt)``), optionally opens a browser, and
        returns once the login was approved. Other processes of this local
        user that log in to the same identity meanwhile share this prompt;
        later ones get the login at once. ``proxy`` raises
        ``NotAvailableError``. Raises ``LoginError`` subclasses."""
        request = self._sso(identity, domain, relay_url, proxy)
        try:
            for event in self._stub.SsoLogin(request, timeout=timeout):
                login = sso_event(event, identity, open_browser, on_prompt)
                if login is not None:
                    return login
        except grpc.RpcError as err:
            raise login_error(err, self._socket) from None
        raise sso_without_outcome()

    def certificate_login(
        self,
        identity: str,
        cert_path: Optional[str] = None,
        key_path: Optional[str] = None,
        ca_path: Optional[str] = None,
        private_key_password: Optional[str] = None,
        domain: Optional[str] = None,
        proxy: Optional[ProxyInfo] = None,
        *,
        relay_url: Optional[str] = None,
        cert_dir: Optional[str] = None,
        password: Optional[str] = None,
    ) -> "Login":
        """Logs in with a client certificate ``switchyard enroll client``
        saved: ``cert_path`` (PEM) and ``key_path`` (the encrypted key), by
        default ``cert.pem`` and ``key.enc`` in ``cert_dir`` (itself by
        default under the config directory for ``relay_url`` and the
        identity). ``private_key_password`` (alias ``password``) is asked
        for on a terminal when not given. ``ca_path`` and ``proxy`` raise
        ``NotAvailableError``: the broker takes the relay's CA from its
        config (``domains.NAME.ca_file``)."""
        return self._do(self._certificate(
            identity, cert_path, key_path, ca_path,
            private_key_password if private_key_password is not None else password,
            domain, proxy, relay_url, cert_dir))

    def access_token_login(
        self,
        access_token: str,
        domain: Optional[str] = None,
        proxy: Optional[ProxyInfo] = None,
        *,
        relay_url: Optional[str] = None,
    ) -> "Login":
        """Logs in with an access token (``switchyard relay token issue``,
        or ``CreateAccessToken``). Raises ``LoginError`` subclasses."""
        return self._do(self._token(access_token, domain, proxy, relay_url))

    def logout(
        self, identity: Optional[str] = None, domain: Optional[str] = None,
        relay_url: Optional[str] = None,
    ) -> int:
        """Ends this local user's cloud logins (all, or those matching);
        returns how many ended."""
        return self._do(self._logout(identity, domain, relay_url))

    def service_cloud(
        self, serial: str, e2ee_fingerprint: Optional[str] = None, identity: Optional[str] = None
    ) -> "Service":
        """A service reached through the relay by its serial. Returns at
        once; call ``.wait()`` to block until it is reachable."""
        return self._do(self._cloud(serial, e2ee_fingerprint, identity))

    #: The reference client's name for ``service_cloud``.
    service = service_cloud

    def service_direct_with_sso(
        self,
        serial: str,
        host: Optional[str] = None,
        port: int = 8181,
        e2ee_fingerprint: Optional[str] = None,
        identity: Optional[str] = None,
    ) -> "Service":
        """A service reached directly (``host``, else the address it
        advertises), authenticated with the SSO login instead of a
        password. Call ``.wait()`` before use."""
        return self._do(self._direct_sso(serial, host, port, e2ee_fingerprint, identity))

    def start_socks_proxy(self, service: "Service", local_port: int = 0,
                          local_address: str = "127.0.0.1", username: Optional[str] = None,
                          password: Optional[str] = None) -> "TcpForwarder":
        """Starts a SOCKS5 proxy (CONNECT only) on ``local_address:local_port``
        (port 0 picks one; loopback only) whose clients reach ``service``'s
        devices by name through its shared link: the device is the host name
        (``socks5h://``, ``curl --socks5-hostname``; IP addresses are
        refused), with the ports the service allows for forwards. With
        ``username`` and ``password`` (1-255 bytes each) clients must log in
        (RFC 1929). The proxy lives in the broker, reachable only by this
        uid, until ``stop()`` or until this client closes. Returns a
        ``TcpForwarder`` (``local_port``, ``status``, ``info()``, ``stop()``)."""
        reply = self._call("SocksProxyStart", socks_proxy_request(
            service._ref(), local_port, local_address, username, password))
        return TcpForwarder(self, reply)

    def start_ssh_proxy(self, local_port: int = 2222, password: Optional[str] = None,
                        authorized_keys: Optional[KeysPath] = None,
                        local_address: str = "127.0.0.1",
                        persist: bool = False) -> "SshProxy":
        """Starts this local user's SSH proxy in the broker: stock ``ssh``
        (or netmiko, Ansible...) logs in to ``local_address:local_port``
        (loopback only; port 0 picks one) as ``DEVICE@SERVICE`` and gets a
        shell or runs a command on that device through the shared link
        (``SshProxy.login_name(device)`` gives the user name; SERVICE is one
        of this client's services or a named service). Clients log in with
        a key from ``authorized_keys`` (a path; by default
        ``~/.ssh/authorized_keys`` if it exists) or with ``password``; only
        this uid may connect. It ends with this client unless ``persist``
        (then ``stop()`` or ``switchyard ssh-proxy stop`` ends it). One
        proxy per local user."""
        request = ssh_proxy_request(self.session_id, local_port, password, authorized_keys,
                                    local_address, persist)
        return SshProxy(self, self._call("SshProxyStart", request))

    def status(self) -> pb.StatusResponse:
        """The broker's view of this local user (sessions, links)."""
        return self._do(self._status())


class Service(ServiceBase):
    """A service reached through the broker."""

    def __init__(self, client: Client, reply: pb.ServiceResponse, link: LinkKey,
                 cloud: bool = False) -> None:
        super().__init__(client, reply, link, cloud)
        self._client = client
        self._inventory: Optional[Inventory] = None

    def wait(self, timeout: Optional[float] = None) -> "Service":
        """Blocks until the service is reachable (cloud services), raising
        an error that names the service when it stays offline. Direct and
        integrated services are ready on return already."""
        if self._cloud:
            self._wait(30.0 if timeout is None else float(timeout))
        return self

    def _wait(self, limit: float) -> None:
        self._client._do(wait_call(self._ref(), limit, self._named))

    # -- the reference client's service attributes -----------------------
    @property
    def status(self) -> str:
        """The link's state: READY (up), CONNECTING, RECONNECTING, FAILED,
        or UNKNOWN when the broker lists no link for this handle (e.g. a
        cloud service not waited for yet), LOGGED_OUT after ``logout()``."""
        return self._state_in(self._client.status())

    def ping(self, timeout: float = 10.0) -> float:
        """Checks the broker holds a live link to the service (re-connecting
        if needed, up to ``timeout`` seconds); returns the round trip in
        seconds. Raises when the service cannot be reached."""
        started = time.monotonic()
        self._wait(timeout)
        return time.monotonic() - started

    @property
    def inventory(self) -> "Inventory":
        """The devices the remote user may reach, fetched once; call
        ``update_inventory()`` to fetch them again."""
        if self._inventory is None:
            self.update_inventory()
        assert self._inventory is not None
        return self._inventory

    def update_inventory(self) -> "Service":
        """Fetches the inventory from the service again."""
        self._inventory = self._client._do(inventory_call(self._ref(), lambda reply: Inventory(
            {d.name: Device(self, d) for d in reply.devices}, self._failed)))
        return self

    def _exec(self, devices: Sequence[str], args: ExecArgs) -> "ExecRequest":
        return ExecRequest(self, devices, args)


class Device(DeviceInfo, DeviceTransfers[FileTransfer]):
    """One device of a service's inventory."""

    def __init__(self, service: Service, d: pb.Device) -> None:
        super().__init__(d)
        self._service = service

    def exec(self, commands: Commands, timeout: Optional[float] = None,
             reset_before: bool = False, reset_after: bool = False,
             sudo: bool = False, stream: bool = False,
             max_output: Optional[int] = None) -> "ExecRequest":
        """Runs one command or a list on this device; see ``Inventory.exec``."""
        return self._service._exec([self.name], ExecArgs(
            commands, timeout, reset_before, reset_after, sudo, stream, max_output))

    def terminal(self, cols: int = 80, rows: int = 24, timeout: float = 30.0) -> Terminal:
        """An interactive shell on the device (a ``Terminal``; use it as a
        context manager). Raises when the device cannot be opened within
        ``timeout`` seconds."""
        client = self._service._client
        return Terminal(client._stub, self._service._ref(), self.name, cols, rows, timeout,
                        lambda err: from_rpc(err, client._socket))

    #: The reference client's other name for ``terminal``.
    interactive = terminal

    def forward_tcp_port(self, local_port: int = 0, destination_port: int = 22,
                         local_address: str = "127.0.0.1") -> "TcpForwarder":
        """Forwards ``local_address:local_port`` (port 0 picks one; loopback
        only) to ``destination_port`` of this device through the shared
        link. The forward lives in the broker, reachable only by this uid,
        until ``stop()`` or until this client closes (its session ends).
        The service allows the device's SSH port by default, other ports
        when its ``forward_ports`` setting lists them; a refused connection
        is reset and the reason kept in ``info().last_error``."""
        client = self._service._client
        reply = client._call("ForwardStart", pb.ForwardStartRequest(
            service=self._service._ref(), device=self.name, port=destination_port,
            listen=listen_address(local_address, local_port)))
        return TcpForwarder(client, reply)

    # -- file transfer (the service runs SFTP or SCP against the device) ---
    def _download(self, remote_path: str, local_path: str,
                  protocol: "pb.TransferProtocol",
                  max_bytes: Optional[int]) -> FileTransfer:
        client = self._service._client
        return transfer.download(client._stub, client._socket, self._service._ref(), self.name,
                                 remote_path, local_path, protocol, max_bytes)

    def _upload(self, local_path: str, remote_path: str,
                protocol: "pb.TransferProtocol") -> FileTransfer:
        client = self._service._client
        return transfer.upload(client._stub, client._socket, self._service._ref(), self.name,
                               local_path, remote_path, protocol)

    # sftp_download_to_file, sftp_upload_from_file, scp_download_to_file,
    # scp_upload_from_file: from ``DeviceTransfers``.


class TcpForwarder:
    """A port forward or SOCKS5 proxy the broker keeps
    (``Device.forward_tcp_port``, ``Client.start_socks_proxy``)."""

    def __init__(self, client: Client, reply: pb.ForwardStatus) -> None:
        self._client = client
        self.forward_id: str = reply.forward_id
        #: The local TCP port it listens on.
        self.local_port: int = reply.local_port
        #: ``ADDRESS:PORT`` it listens on.
        self.address: str = reply.address

    def __repr__(self) -> str:
        return f"<TcpForwarder {self.forward_id} {self.address}>"

    def __enter__(self) -> "TcpForwarder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def info(self) -> Optional[pb.ForwardStatus]:
        """Its counters (connections, bytes, last error), or None once it
        has ended."""
        reply = self._client._call("ForwardList", pb.ForwardListRequest())
        return next((f for f in reply.forwards if f.forward_id == self.forward_id), None)

    @property
    def status(self) -> str:
        """RUNNING while the broker keeps it, else STOPPED."""
        return "RUNNING" if self.info() is not None else "STOPPED"

    def stop(self) -> None:
        """Stops the forward (its open connections are reset); stopping a
        forward that has already ended does nothing."""
        try:
            self._client._stub.ForwardStop(pb.ForwardStopRequest(forward_id=self.forward_id),
                                           timeout=30)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise from_rpc(err, self._client._socket) from None


class SshProxy(SshProxyBase):
    """The SSH proxy the broker keeps (``Client.start_ssh_proxy``)."""

    def __init__(self, client: Client, reply: pb.SshProxyStatus) -> None:
        super().__init__(reply)
        self._client = client

    def __enter__(self) -> "SshProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def info(self) -> Optional[pb.SshProxyStatus]:
        """Its counters (connections, failed logins, last error), or None
        once it has ended."""
        reply = self._client._call("Status", pb.StatusRequest())
        return reply.ssh_proxy if reply.HasField("ssh_proxy") else None

    @property
    def status(self) -> str:
        """RUNNING while the broker keeps it, else STOPPED."""
        return "RUNNING" if self.info() is not None else "STOPPED"

    def stop(self) -> None:
        """Stops the proxy (its sessions end); stopping one that has
        already ended does nothing."""
        try:
            self._client._stub.SshProxyStop(pb.SshProxyStopRequest(), timeout=30)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.NOT_FOUND:
                raise from_rpc(err, self._client._socket) from None


class Inventory(DeviceSet[Device]):
    """Devices by name (a read-only dict) with ``filter``, ``subset``, set
    operations, ``exclude_failed``, ``singleton`` and ``exec``."""

    def exec(self, commands: Commands, timeout: Optional[float] = None,
             reset_before: bool = False, reset_after: bool = False,
             sudo: bool = False, stream: bool = False,
             max_output: Optional[int] = None) -> "ExecRequest":
        """Runs one command (results keyed by device) or a list (keyed by
        device, then command) on every device of this set, concurrently;
        the commands of one device run in order. Returns at once.

        Where a command runs depends on the device: over SSH, on a new
        exec channel of a pooled connection (the connection is reused
        across execs and callers; the channel, and so the command's session
        on the device, is new each time), or, for devices whose commands
        run in a shell (IOS-XE and ASA by default, or any device added with
        ``--session shell``), in a warm shell the service keeps between
        execs (prompt learned, paging off, ``enable`` done once). Simulated
        devices in process start a fresh CLI per exec.

        ``timeout`` is per command in seconds (None: the service's
        default). A warm shell keeps the mode a command leaves
        (``configure terminal``, ``disable``, ``cd``) for the next exec on
        it: ``reset_before=True`` runs the commands in a freshly opened
        shell (the device's idle shells are closed first) and
        ``reset_after=True`` closes the shell afterwards instead of keeping
        it warm. Exec channels and the in-process simulator keep no state
        between execs, so there both hold anyway. ``sudo=True``
        raises ``NotAvailableError``. ``stream=True``: output goes to
        ``request.chunks()`` as it arrives instead of into the results
        (memory stays bounded whatever its size). ``max_output``: bytes one
        command may output before it is stopped and fails."""
        first, names = self._exec_target()
        return first._service._exec(names, ExecArgs(
            commands, timeout, reset_before, reset_after, sudo, stream, max_output))


class ExecRequest(ExecBase):
    """Commands running on devices. It starts at once; ``wait()`` for it.

    ``result`` / ``full_result`` are an ``ExecResponse`` keyed by device:
    ``result[device][command].data``. ``result`` raises if the request
    failed as a whole; ``full_result`` then lists every device as failed
    with the reason. ``status`` is PROCESSING, SUCCESS, PARTIAL_SUCCESS or
    FAILURE."""

    def __init__(self, service: Service, devices: Sequence[str], args: ExecArgs) -> None:
        request = self._start(service._ref(), service._failed, devices, args)
        self._done = threading.Event()
        self._client = service._client
        # With stream=True, output goes to `chunks()` through this bounded
        # queue (the reader thread waits when it is full, so a slow consumer
        # slows the device read) and is not kept in the results.
        self._queue: Optional["queue.Queue[Optional[OutputChunk]]"] = (
            queue.Queue(maxsize=STREAM_QUEUE) if args.stream else None)
        stub = self._client._stub
        self._thread = threading.Thread(target=self._run, args=(stub, request), daemon=True)
        self._thread.start()

    def _run(self, stub: rpc.BrokerStub, request: pb.ExecRequest) -> None:
        try:
            for event in stub.Exec(request):
                for chunk in self._take(event):
                    assert self._queue is not None  # chunks only with stream=True
                    self._queue.put(chunk)
        except grpc.RpcError as err:
            self._error = from_rpc(err, self._client._socket)
        finally:
            self._done.set()
            if self._queue is not None:
                self._queue.put(None)

    def chunks(self) -> Iterator[OutputChunk]:
        """The output as it arrives (``OutputChunk``: device, command, bytes,
        stderr or not), until the request ends; then ``wait()`` for the
        statuses. Only for a request made with ``stream=True``; each chunk
        is seen once."""
        if self._queue is None:
            raise SwitchyardError("chunks() needs exec(..., stream=True)")
        while True:
            chunk = self._queue.get()
            if chunk is None:
                self._queue.put(None)  # later calls end at once too
                return
            yield chunk

    def wait(self, timeout: Optional[float] = None) -> "ExecRequest":
        """Blocks until every device finished (or ``timeout`` seconds pass:
        ``TimeoutError``). Raises the request's error if it failed as a
        whole."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"exec did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    @property
    def status(self) -> ExecStatus:
        """PROCESSING while running; then SUCCESS, PARTIAL_SUCCESS or FAILURE."""
        return self._outcome(self._done.is_set())

    @property
    def result(self) -> ExecResponse:
        """Results by device (waits). Raises if the request failed as a whole."""
        self.wait()
        return self._results(full=False)

    @property
    def full_result(self) -> ExecResponse:
        """Results by device (waits), never raising: when the request failed
        as a whole, devices without a result are listed as failed."""
        self._done.wait()
        return self._results(full=True)


# -- the reference client's module-level functions ---------------------------

_default: Optional[Client] = None
_default_lock = threading.Lock()


@contextmanager
def create_context(socket: Optional[str] = None) -> Iterator[Client]:
    """Opens a client and makes it the default one that the module-level
    functions (``sso_login``, ``service_direct``, ...) use, until the block
    ends."""
    global _default
    with Client.create(socket) as client:
        with _default_lock:
            previous, _default = _default, client
        try:
            yield client
        finally:
            with _default_lock:
                _default = previous


def get_client() -> Client:
    """The default client of ``create_context()``."""
    if _default is None:
        raise SwitchyardError("no default client: wrap the code in `with create_context():`")
    return _default


def _forward(name: str) -> Callable[..., Any]:
    method = getattr(Client, name)

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(get_client(), name)(*args, **kwargs)

    call.__name__ = name
    call.__doc__ = f"``Client.{name}`` on the default client of ``create_context()``.\n\n" + (
        method.__doc__ or "")
    return call


sso_login = _forward("sso_login")
certificate_login = _forward("certificate_login")
access_token_login = _forward("access_token_login")
service_direct = _forward("service_direct")
service_integrated = _forward("service_integrated")
service_cloud = _forward("service_cloud")
service = _forward("service")
service_direct_with_sso = _forward("service_direct_with_sso")
logout = _forward("logout")


__all__ = [
    "FAILURE", "PARTIAL_SUCCESS", "SUCCESS",
    "Client", "Service", "Inventory", "Device", "ExecRequest", "ExecResponse", "ExecStatus",
    "CommandResult", "DeviceResult", "OutputChunk", "Login", "ProxyInfo", "Terminal",
    "TcpForwarder",
    "create_context", "get_client", "default_socket", "default_cert_dir",
    "sso_login", "certificate_login", "access_token_login", "service_direct",
    "service_integrated", "service_cloud", "service", "service_direct_with_sso", "logout",
]
