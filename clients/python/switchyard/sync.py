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
every process of the same local user. Clients are thread-safe.
"""

from __future__ import annotations

import getpass
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Optional, Sequence, Union

import grpc

from .errors import ExecError, SwitchyardError, from_rpc
from .paths import default_socket
from .v1 import broker_pb2 as pb
from .v1 import broker_pb2_grpc as rpc

SUCCESS = "SUCCESS"
FAILURE = "FAILURE"


def _channel(socket: str) -> grpc.Channel:
    # gRPC core sends the socket path as :authority, which the broker's
    # HTTP/2 stack refuses; "localhost" is what it expects.
    return grpc.insecure_channel(
        f"unix:{socket}", options=[("grpc.default_authority", "localhost")]
    )


class Client:
    """A broker session. Create it with ``Client.create()``."""

    def __init__(self, socket: Optional[str] = None, client_name: Optional[str] = None) -> None:
        self._socket = socket or default_socket()
        self._client_name = client_name or " ".join(sys.argv)[:200] or "python"
        self._channel: Optional[grpc.Channel] = None
        self._stub: Optional[rpc.BrokerStub] = None
        self._session_id: Optional[str] = None
        self._attach = None
        self._attach_thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

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
        with self._lock:
            if self._session_id is not None:
                return
            self._channel = _channel(self._socket)
            self._stub = rpc.BrokerStub(self._channel)
            try:
                reply = self._stub.OpenSession(
                    pb.OpenSessionRequest(client_name=self._client_name), timeout=30
                )
                self._session_id = reply.session_id
                self._attach = self._stub.Attach(pb.AttachRequest(session_id=self._session_id))
                first = next(self._attach)
            except grpc.RpcError as err:
                self._channel.close()
                raise from_rpc(err, self._socket) from None
            assert first.WhichOneof("event") == "attached"
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
        """Ends the session; the broker releases its links and work."""
        with self._lock:
            if self._session_id is None:
                return
            try:
                self._stub.CloseSession(
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
            self._channel.close()
            self._session_id = None

    @property
    def session_id(self) -> str:
        if self._session_id is None:
            raise SwitchyardError("the client is not open: use `with Client.create() as client:`")
        return self._session_id

    def _call(self, method: str, request, timeout: Optional[float] = 60):
        try:
            return getattr(self._stub, method)(request, timeout=timeout)
        except grpc.RpcError as err:
            raise from_rpc(err, self._socket) from None

    # -- services ----------------------------------------------------------
    def service_direct(
        self,
        username: str,
        host: str = "localhost",
        port: int = 8181,
        password: Optional[str] = None,
        fingerprint: Optional[str] = None,
    ) -> "Service":
        """Connects to a service's RPC socket as a remote user. Without a
        password, a live link of this local user is shared, or (on a
        terminal) the password is asked for."""
        request = pb.ServiceDirectRequest(
            session_id=self.session_id,
            username=username,
            host=host,
            port=port,
            password=password or "",
            fingerprint=fingerprint or "",
        )
        try:
            reply = self._stub.ServiceDirect(request, timeout=60)
        except grpc.RpcError as err:
            if password is None and err.code() == grpc.StatusCode.INVALID_ARGUMENT and sys.stdin.isatty():
                request.password = getpass.getpass(f"Password for {username}@{host}: ")
                reply = self._call("ServiceDirect", request)
            else:
                raise from_rpc(err, self._socket) from None
        return Service(self, reply.service_id, reply.service_name)

    def service_integrated(
        self, admin_password: Optional[str] = None, db: Optional[str] = None
    ) -> "Service":
        """Runs the service inside the broker over an inventory on this host."""
        db = db or os.environ.get("SWITCHYARD_DB")
        if not db:
            raise SwitchyardError("service_integrated needs db= (or $SWITCHYARD_DB)")
        if admin_password is None:
            admin_password = getpass.getpass("Admin password: ")
        reply = self._call(
            "ServiceIntegrated",
            pb.ServiceIntegratedRequest(
                session_id=self.session_id,
                db=str(Path(db).resolve()),
                admin_password=admin_password,
            ),
        )
        return Service(self, reply.service_id, reply.service_name)

    # -- cloud -----------------------------------------------------------
    @staticmethod
    def _relay(relay_url: Optional[str], domain: Optional[str]) -> pb.RelaySelector:
        return pb.RelaySelector(relay_url=relay_url or "", domain=domain or "")

    def sso_login(
        self,
        identity: str,
        domain: Optional[str] = None,
        relay_url: Optional[str] = None,
        open_browser: bool = False,
        timeout: Optional[float] = 600,
        on_prompt=None,
    ) -> "Login":
        """Logs in to a relay with SSO. Prints the URL and code to open
        (or calls ``on_prompt(prompt)``), optionally opens a browser, and
        returns once the login was approved. Other processes of this local
        user that log in to the same identity meanwhile share this prompt;
        later ones get the login at once."""
        request = pb.SsoLoginRequest(
            session_id=self.session_id,
            identity=identity,
            relay=self._relay(relay_url, domain),
        )
        try:
            for event in self._stub.SsoLogin(request, timeout=timeout):
                which = event.WhichOneof("event")
                if which == "prompt":
                    prompt = event.prompt
                    url = prompt.verification_uri_complete or prompt.verification_uri
                    if on_prompt is not None:
                        on_prompt(prompt)
                    else:
                        print(
                            f"To log in as {identity}, open {url} and check that it shows "
                            f"the code {prompt.user_code}.",
                            file=sys.stderr,
                            flush=True,
                        )
                    if open_browser:
                        import webbrowser

                        webbrowser.open(url)
                elif which == "logged_in":
                    return Login(event.logged_in)
        except grpc.RpcError as err:
            raise from_rpc(err, self._socket) from None
        raise SwitchyardError("the broker ended the SSO login without an outcome")

    def certificate_login(
        self,
        identity: str,
        password: Optional[str] = None,
        domain: Optional[str] = None,
        relay_url: Optional[str] = None,
        cert_dir: Optional[str] = None,
    ) -> "Login":
        """Logs in with the client certificate ``switchyard enroll client``
        saved (``cert.pem`` and ``key.enc`` in ``cert_dir``, by default
        under the config directory for this relay and identity)."""
        if cert_dir is None:
            if not relay_url:
                raise SwitchyardError("certificate_login needs relay_url= or cert_dir=")
            cert_dir = str(default_cert_dir(relay_url, identity))
        folder = Path(cert_dir)
        if password is None:
            password = getpass.getpass(f"Password for the key of {identity}: ")
        reply = self._call(
            "CertificateLogin",
            pb.CertificateLoginRequest(
                session_id=self.session_id,
                identity=identity,
                relay=self._relay(relay_url, domain),
                cert_pem=(folder / "cert.pem").read_text(),
                encrypted_key=(folder / "key.enc").read_bytes(),
                key_password=password,
            ),
        )
        return Login(reply)

    def access_token_login(
        self, token: str, domain: Optional[str] = None, relay_url: Optional[str] = None
    ) -> "Login":
        """Logs in with an access token."""
        reply = self._call(
            "AccessTokenLogin",
            pb.AccessTokenLoginRequest(
                session_id=self.session_id, token=token, relay=self._relay(relay_url, domain)
            ),
        )
        return Login(reply)

    def logout(
        self, identity: Optional[str] = None, domain: Optional[str] = None, relay_url: Optional[str] = None
    ) -> int:
        """Ends this local user's cloud logins (all, or those matching);
        returns how many ended."""
        reply = self._call(
            "Logout",
            pb.LogoutRequest(identity=identity or "", relay=self._relay(relay_url, domain)),
        )
        return reply.logged_out

    def service_cloud(
        self, serial: str, e2ee_fingerprint: Optional[str] = None, identity: Optional[str] = None
    ) -> "Service":
        """A service reached through the relay by its serial. Returns at
        once; call ``.wait()`` to block until it is reachable."""
        reply = self._call(
            "ServiceCloud",
            pb.ServiceCloudRequest(
                session_id=self.session_id,
                serial=serial,
                e2ee_fingerprint=e2ee_fingerprint or "",
                identity=identity or "",
            ),
        )
        return Service(self, reply.service_id, reply.service_name, cloud=True)

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
        reply = self._call(
            "ServiceDirectWithSso",
            pb.ServiceDirectWithSsoRequest(
                session_id=self.session_id,
                serial=serial,
                host=host or "",
                port=port if host else 0,
                e2ee_fingerprint=e2ee_fingerprint or "",
                identity=identity or "",
            ),
        )
        return Service(self, reply.service_id, reply.service_name, cloud=True)

    def status(self) -> pb.StatusResponse:
        """The broker's view of this local user (sessions, links)."""
        return self._call("Status", pb.StatusRequest())


class Login:
    """A cloud login the broker holds for this local user."""

    def __init__(self, reply: pb.LoginResponse) -> None:
        self.identity = reply.identity
        self.relay_url = reply.relay_url
        self.method = reply.method
        self.expires_unix = reply.expires_unix

    def __repr__(self) -> str:
        return f"<Login {self.identity} at {self.relay_url} ({self.method})>"


def default_cert_dir(relay_url: str, identity: str) -> Path:
    """Where ``switchyard enroll client`` saves a client certificate."""
    from urllib.parse import urlsplit

    parts = urlsplit(relay_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    relay = f"{parts.hostname}_{port}"
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")

    def safe(text: str) -> str:
        return text.replace("/", "_").replace("\\", "_").replace(":", "_")

    return base / "switchyard" / "certs" / safe(relay) / safe(identity)


class Service:
    """A service reached through the broker."""

    def __init__(self, client: Client, service_id: str, name: str, cloud: bool = False) -> None:
        self._client = client
        self._id = service_id
        self.name = name
        self._cloud = cloud

    def __repr__(self) -> str:
        return f"<Service {self.name!r}>"

    def wait(self, timeout: Optional[float] = None) -> "Service":
        """Blocks until the service is reachable (cloud services), raising
        an error that names the service when it stays offline. Direct and
        integrated services are ready on return already."""
        if not self._cloud:
            return self
        limit = 30.0 if timeout is None else float(timeout)
        reply = self._client._call(
            "Wait",
            pb.WaitRequest(service=self._ref(), timeout_secs=limit),
            timeout=limit + 10,
        )
        self.name = reply.service_name or self.name
        return self

    def _ref(self) -> pb.ServiceRef:
        return pb.ServiceRef(session_id=self._client.session_id, service_id=self._id)

    @property
    def inventory(self) -> "Inventory":
        reply = self._client._call("Inventory", pb.InventoryRequest(service=self._ref()))
        return Inventory(
            self, {d.name: Device(self, d) for d in reply.devices}
        )

    def _exec(self, devices: Sequence[str], commands: Union[str, Sequence[str]], timeout: Optional[float]) -> "ExecRequest":
        return ExecRequest(self, list(devices), commands, timeout)


class Device:
    """One device of a service's inventory."""

    def __init__(self, service: Service, d: pb.Device) -> None:
        self._service = service
        self.name = d.name
        self.host = d.host
        self.port = d.port
        self.device_type = d.device_type
        self.attributes = dict(d.attributes)

    def __repr__(self) -> str:
        return f"<Device {self.name} {self.device_type} {self.host}:{self.port}>"

    def exec(self, commands: Union[str, Sequence[str]], timeout: Optional[float] = None) -> "ExecRequest":
        return self._service._exec([self.name], commands, timeout)


class Inventory(Mapping):
    """Devices by name (a read-only dict)."""

    def __init__(self, service: Service, devices: dict) -> None:
        self._service = service
        self._devices = devices

    def __getitem__(self, name: str) -> Device:
        return self._devices[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._devices)

    def __len__(self) -> int:
        return len(self._devices)

    def __repr__(self) -> str:
        rows = "\n".join(f"  {d!r}" for d in self._devices.values())
        return f"<Inventory of {len(self)} devices>\n{rows}"

    def filter(self, attr: str, value: str) -> "Inventory":
        """Devices whose attribute (or field: device_type, host) equals value."""
        def has(d: Device) -> bool:
            return getattr(d, attr, None) == value or d.attributes.get(attr) == value

        return Inventory(self._service, {n: d for n, d in self._devices.items() if has(d)})

    def subset(self, names) -> "Inventory":
        names = set(names)
        return Inventory(self._service, {n: d for n, d in self._devices.items() if n in names})

    def exec(self, commands: Union[str, Sequence[str]], timeout: Optional[float] = None) -> "ExecRequest":
        return self._service._exec(list(self._devices), commands, timeout)


class CommandResult:
    """One command's outcome on one device."""

    def __init__(self, device: str, command: str, status: str, output: bytes,
                 exit_status: Optional[int], error: str) -> None:
        self.device = device
        self.command = command
        self.status = status
        self.exit_status = exit_status
        self.error = error
        self._output = output

    @property
    def data(self) -> str:
        """The command's output. Raises ExecError if the command failed."""
        if self.status != SUCCESS:
            raise ExecError(
                f"{self.command!r} failed on {self.device}: "
                + (self.error or f"exit status {self.exit_status}")
            )
        return self._output.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<CommandResult {self.device} {self.command!r} {self.status}>"


class DeviceResult(Mapping):
    """A device's results by command (when several commands ran)."""

    def __init__(self, device: str, status: str, error: str, commands: dict) -> None:
        self.device = device
        self.status = status
        self.error = error
        self._commands = commands

    def __getitem__(self, command: str) -> CommandResult:
        return self._commands[command]

    def __iter__(self):
        return iter(self._commands)

    def __len__(self) -> int:
        return len(self._commands)

    @property
    def data(self) -> str:
        if self.status != SUCCESS:
            raise ExecError(f"{self.device} failed: {self.error}")
        return "".join(c.data for c in self._commands.values())


class ExecRequest:
    """Commands running on devices. It starts at once; ``wait()`` for it."""

    def __init__(self, service: Service, devices: list, commands, timeout: Optional[float]) -> None:
        self._single = isinstance(commands, str)
        self._commands = [commands] if self._single else list(commands)
        self._devices = devices
        self._results: dict = {}
        self._error: Optional[SwitchyardError] = None
        self._done = threading.Event()
        request = pb.ExecRequest(
            service=service._ref(),
            devices=devices,
            commands=self._commands,
            timeout_ms=int(timeout * 1000) if timeout else 0,
        )
        self._client = service._client
        self._thread = threading.Thread(target=self._run, args=(request,), daemon=True)
        self._thread.start()

    def _run(self, request: pb.ExecRequest) -> None:
        chunks: dict = {}
        try:
            for event in self._client._stub.Exec(request):
                name = self._devices[event.device]
                kind = event.WhichOneof("event")
                if kind == "output":
                    key = (event.device, event.output.command)
                    chunks[key] = chunks.get(key, b"") + event.output.data
                elif kind == "device_result":
                    self._results[name] = self._device_result(event.device, event.device_result, chunks)
        except grpc.RpcError as err:
            self._error = from_rpc(err, self._client._socket)
        finally:
            self._done.set()

    def _device_result(self, index: int, r, chunks: dict):
        name = self._devices[index]
        results = {}
        for c in r.commands:
            output = chunks.pop((index, c.command), b"") + c.output
            exit_status = c.exit_status if c.HasField("exit_status") else None
            ok = not c.error and (exit_status in (None, 0))
            cmd = self._commands[c.command]
            results[cmd] = CommandResult(name, cmd, SUCCESS if ok else FAILURE, output, exit_status, c.error)
        ok = not r.error and all(x.status == SUCCESS for x in results.values())
        device = DeviceResult(name, SUCCESS if ok else FAILURE, r.error, results)
        if self._single and not r.error:
            return results[self._commands[0]]
        return device

    def wait(self, timeout: Optional[float] = None) -> "ExecRequest":
        if not self._done.wait(timeout):
            raise TimeoutError(f"exec did not finish within {timeout} s")
        if self._error is not None:
            raise self._error
        return self

    @property
    def result(self) -> dict:
        """Results by device name: a CommandResult when one command (a str)
        was given, else a DeviceResult keyed by command."""
        self.wait()
        return dict(self._results)


__all__ = ["Client", "Service", "Inventory", "Device", "ExecRequest", "CommandResult", "DeviceResult"]
