"""The broker calls of ``Client`` and ``Service``, described once for the
sync and the asyncio clients. A method of either client builds a ``Call``
here (the request, how long it may take, how its errors read, what the
reply becomes) and only performs it: ``client._do(call)``, or ``await
client._do(call)``. Nothing here talks to the broker."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Any, Callable, Generic, Optional, TypeVar

import grpc

from ._core import LinkKey, ProxyInfo, rpc_code
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
from .errors import SwitchyardError
from .v1 import broker_pb2 as pb

T = TypeVar("T")
S = TypeVar("S")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One unary broker call, not yet made: the stub's ``method``, the
    ``request``, its ``timeout`` in seconds, whether its errors are login
    errors (``LoginError`` subclasses) and what the reply becomes
    (``finish``)."""

    method: str
    request: Any
    finish: Callable[[Any], T]
    login: bool = False
    timeout: Optional[float] = 60


class ClientCalls(Generic[S]):
    """The calls of a client whose service handles are ``S``; each flavour
    says how a handle is made (``_service``) and which session it is
    (``session_id``)."""

    @property
    def session_id(self) -> str:
        raise NotImplementedError

    def _service(self, reply: pb.ServiceResponse, link: LinkKey, cloud: bool = False) -> S:
        raise NotImplementedError

    def _service_call(self, method: str, built: tuple[Any, LinkKey], login: bool = False,
                      cloud: bool = False) -> Call[S]:
        request, link = built
        return Call(method, request, lambda reply: self._service(reply, link, cloud), login)

    def _direct(self, username: str, password: Optional[str], host: str, port: int,
                fingerprint: Optional[str], rpc_url: Optional[str],
                proxy: Optional[ProxyInfo], tcp_port: Optional[int] = None) -> Call[S]:
        built = direct_request(self.session_id, username, password, host, port, fingerprint,
                               rpc_url, proxy, tcp_port)
        return self._service_call("ServiceDirect", built, login=True)

    def _direct_retry(self, call: Call[S], err: grpc.RpcError, password: Optional[str],
                      username: str, host: str) -> Optional[Call[S]]:
        """After a failed ``ServiceDirect``: the same call with a password
        typed on the terminal, when none was given and the broker wants one
        (None: the error stands)."""
        if not asks_password(password, rpc_code(err) == grpc.StatusCode.INVALID_ARGUMENT):
            return None
        call.request.password = getpass.getpass(f"Password for {username}@{host}: ")
        return call

    def _integrated(self, admin_password: Optional[str], db: Optional[str]) -> Call[S]:
        built = integrated_request(self.session_id, admin_password, db)
        return self._service_call("ServiceIntegrated", built, login=True)

    def _cloud(self, serial: str, e2ee_fingerprint: Optional[str],
               identity: Optional[str]) -> Call[S]:
        built = cloud_request(self.session_id, serial, e2ee_fingerprint, identity)
        return self._service_call("ServiceCloud", built, cloud=True)

    def _direct_sso(self, serial: str, host: Optional[str], port: int,
                    e2ee_fingerprint: Optional[str], identity: Optional[str]) -> Call[S]:
        built = direct_sso_request(self.session_id, serial, host, port, e2ee_fingerprint,
                                   identity)
        return self._service_call("ServiceDirectWithSso", built, cloud=True)

    def _certificate(self, identity: str, cert_path: Optional[str], key_path: Optional[str],
                     ca_path: Optional[str], key_password: Optional[str],
                     domain: Optional[str], proxy: Optional[ProxyInfo],
                     relay_url: Optional[str], cert_dir: Optional[str]) -> Call[Login]:
        request = certificate_request(self.session_id, identity, cert_path, key_path, ca_path,
                                      key_password, domain, proxy, relay_url, cert_dir)
        return Call("CertificateLogin", request, Login, login=True)

    def _token(self, access_token: str, domain: Optional[str], proxy: Optional[ProxyInfo],
               relay_url: Optional[str]) -> Call[Login]:
        request = token_request(self.session_id, access_token, domain, relay_url, proxy)
        return Call("AccessTokenLogin", request, Login, login=True)

    def _logout(self, identity: Optional[str], domain: Optional[str],
                relay_url: Optional[str]) -> Call[int]:
        request = pb.LogoutRequest(identity=identity or "", relay=relay(relay_url, domain))
        return Call("Logout", request, lambda reply: int(reply.logged_out))

    def _status(self) -> Call[pb.StatusResponse]:
        return Call("Status", pb.StatusRequest(), lambda reply: reply)

    def _sso(self, identity: str, domain: Optional[str], relay_url: Optional[str],
             proxy: Optional[ProxyInfo]) -> pb.SsoLoginRequest:
        return sso_request(self.session_id, identity, domain, relay_url, proxy)


def sso_event(event: pb.SsoLoginEvent, identity: str, open_browser: bool,
              on_prompt: Optional[OnPrompt]) -> Optional[Login]:
    """Handles one event of an SSO login: shows a prompt, or returns the
    login once approved."""
    which = event.WhichOneof("event")
    if which == "prompt":
        show_prompt(identity, event.prompt, open_browser, on_prompt)
    elif which == "logged_in":
        return Login(event.logged_in)
    return None


def sso_without_outcome() -> SwitchyardError:
    """The error when the broker ends an SSO login stream with no outcome."""
    return SwitchyardError("the broker ended the SSO login without an outcome")


def wait_call(ref: pb.ServiceRef, limit: float, named: Callable[[str], None]) -> Call[None]:
    """``Wait`` up to ``limit`` seconds for a service; ``named`` gets the
    name the broker reports."""
    def finish(reply: pb.WaitResponse) -> None:
        named(reply.service_name)

    return Call("Wait", pb.WaitRequest(service=ref, timeout_secs=limit), finish,
                timeout=limit + 10)


def inventory_call(ref: pb.ServiceRef, make: Callable[[pb.InventoryResponse], T]) -> Call[T]:
    """``Inventory`` for a service; ``make`` builds the flavour's set."""
    return Call("Inventory", pb.InventoryRequest(service=ref), make)


F = TypeVar("F")


class DeviceTransfers(Generic[F]):
    """A device's file transfers, described once for the sync and asyncio
    clients: each flavour starts a copy in its own way (``_download``,
    ``_upload``: a thread and ``transfer.FileTransfer``, or a task and
    ``transfer.AsyncFileTransfer``) and returns its handle ``F`` at once.
    The service runs SFTP or SCP against the device; the bytes stream
    through the broker (``FileDownload`` / ``FileUpload``)."""

    def _download(self, remote_path: str, local_path: str, protocol: "pb.TransferProtocol",
                  max_bytes: Optional[int]) -> F:
        raise NotImplementedError

    def _upload(self, local_path: str, remote_path: str, protocol: "pb.TransferProtocol") -> F:
        raise NotImplementedError

    def sftp_download_to_file(self, remote_path: str, local_path: str,
                              max_bytes: Optional[int] = None) -> F:
        """Copies ``remote_path`` on this device to ``local_path`` over SFTP
        (a transfer: ``wait()``, ``bytes_transferred``, ``protocol``). The
        file lands under its name only when complete; ``max_bytes`` refuses
        a larger file. Errors name the device and path."""
        return self._download(remote_path, str(local_path), pb.TRANSFER_PROTOCOL_SFTP, max_bytes)

    def sftp_upload_from_file(self, local_path: str, remote_path: str) -> F:
        """Copies ``local_path`` to ``remote_path`` on this device over SFTP
        (written under a temporary name, renamed into place when complete)."""
        return self._upload(str(local_path), remote_path, pb.TRANSFER_PROTOCOL_SFTP)

    def scp_download_to_file(self, remote_path: str, local_path: str,
                             max_bytes: Optional[int] = None) -> F:
        """``sftp_download_to_file`` over SCP (``scp -f`` on the device)."""
        return self._download(remote_path, str(local_path), pb.TRANSFER_PROTOCOL_SCP, max_bytes)

    def scp_upload_from_file(self, local_path: str, remote_path: str) -> F:
        """``sftp_upload_from_file`` over SCP (``scp -t`` on the device;
        written in place: a failed copy may leave a partial file there)."""
        return self._upload(str(local_path), remote_path, pb.TRANSFER_PROTOCOL_SCP)
