"""Logins and service requests, built the same way for the sync and the
asyncio clients: argument checks, file reading and the request messages.
Nothing here talks to the broker."""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Optional, Tuple

from ._core import LinkKey, ProxyInfo, proxy_fields, rpc_url_target
from .errors import NotAvailableError, SwitchyardError
from .v1 import broker_pb2 as pb

#: Called with each SSO prompt instead of printing it.
OnPrompt = Callable[[pb.SsoPrompt], None]


class Login:
    """A cloud login the broker holds for this local user: ``identity``,
    ``relay_url``, ``method`` ("sso", "certificate", "token") and
    ``expires_unix`` (0: no expiry known)."""

    def __init__(self, reply: pb.LoginResponse) -> None:
        self.identity = reply.identity
        self.relay_url = reply.relay_url
        self.method = reply.method
        self.expires_unix = reply.expires_unix

    def __repr__(self) -> str:
        return f"<Login {self.identity} at {self.relay_url} ({self.method})>"


def relay(relay_url: Optional[str], domain: Optional[str],
          proxy: Optional[ProxyInfo] = None) -> pb.RelaySelector:
    """Which relay: a URL, a domain of the broker's config, or (neither) the
    configured default; and the HTTP proxy the broker reaches it through
    (``None``: the broker's own proxy settings)."""
    proxy_url, proxy_password = proxy_fields(proxy)
    return pb.RelaySelector(relay_url=relay_url or "", domain=domain or "",
                            proxy_url=proxy_url, proxy_password=proxy_password)


def direct_request(session_id: str, username: str, password: Optional[str], host: str,
                   port: int, fingerprint: Optional[str],
                   rpc_url: Optional[str], proxy: Optional[ProxyInfo] = None,
                   tcp_port: Optional[int] = None,
                   ) -> Tuple[pb.ServiceDirectRequest, LinkKey]:
    """The ServiceDirect request and how to find its link: QUIC to
    ``host:port`` (falling back to TLS over TCP at ``host:tcp_port``, 8081
    when None), or TLS over TCP to ``rpc_url`` (through ``proxy``).
    ``tcp_port`` outside 1-65535, or given with ``rpc_url`` (whose URL names
    its port), raises ``ValueError``."""
    if tcp_port is not None and not 0 < tcp_port < 65536:
        raise ValueError(f"tcp_port must be 1-65535, not {tcp_port}")
    if rpc_url is None:
        if proxy is not None:
            raise SwitchyardError(
                "proxy= carries TCP only: give the service's rpc_url= "
                "(https://HOST:8081/rpc) with it")
        request = pb.ServiceDirectRequest(
            session_id=session_id, username=username, host=host, port=port,
            password=password or "", fingerprint=fingerprint or "", tcp_port=tcp_port or 0,
        )
        return request, LinkKey("direct", f"{host}:{port or 8181}", username)
    if tcp_port is not None:
        raise ValueError(
            "tcp_port= is the TCP fallback of a host= link; an rpc_url= names its port itself "
            "(https://HOST:PORT/rpc)")
    proxy_url, proxy_password = proxy_fields(proxy)
    request = pb.ServiceDirectRequest(
        session_id=session_id, username=username, rpc_url=rpc_url,
        password=password or "", fingerprint=fingerprint or "",
        proxy_url=proxy_url, proxy_password=proxy_password,
    )
    return request, LinkKey("direct", rpc_url_target(rpc_url), username)


def asks_password(password: Optional[str], invalid_argument: bool) -> bool:
    """Whether to ask for the password on the terminal and retry: none was
    given, the broker wants one, and a person is there to type it."""
    return password is None and invalid_argument and sys.stdin.isatty()


def integrated_request(session_id: str, admin_password: Optional[str],
                       db: Optional[str]) -> Tuple[pb.ServiceIntegratedRequest, LinkKey]:
    """The ServiceIntegrated request (``db`` else ``$SWITCHYARD_DB``; the
    password asked for on the terminal when not given)."""
    db = db or os.environ.get("SWITCHYARD_DB")
    if not db:
        raise SwitchyardError("service_integrated needs db= (or $SWITCHYARD_DB)")
    if admin_password is None:
        admin_password = getpass.getpass("Admin password: ")
    path = str(Path(db).resolve())
    request = pb.ServiceIntegratedRequest(session_id=session_id, db=path,
                                          admin_password=admin_password)
    return request, LinkKey("integrated", f"integrated:{path}")


def sso_request(session_id: str, identity: str, domain: Optional[str],
                relay_url: Optional[str], proxy: Optional[ProxyInfo]) -> pb.SsoLoginRequest:
    """The SsoLogin request (the broker reaches the relay through ``proxy``
    when given)."""
    return pb.SsoLoginRequest(session_id=session_id, identity=identity,
                              relay=relay(relay_url, domain, proxy))


def show_prompt(identity: str, prompt: pb.SsoPrompt, open_browser: bool,
                on_prompt: Optional[OnPrompt]) -> None:
    """Shows an SSO prompt: to ``on_prompt``, else on stderr; opens a
    browser when asked."""
    url = prompt.verification_uri_complete or prompt.verification_uri
    if on_prompt is not None:
        on_prompt(prompt)
    else:
        print(f"To log in as {identity}, open {url} and check that it shows "
              f"the code {prompt.user_code}.", file=sys.stderr, flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)


def certificate_request(
    session_id: str, identity: str, cert_path: Optional[str], key_path: Optional[str],
    ca_path: Optional[str], key_password: Optional[str], domain: Optional[str],
    proxy: Optional[ProxyInfo], relay_url: Optional[str], cert_dir: Optional[str],
) -> pb.CertificateLoginRequest:
    """The CertificateLogin request: reads the certificate and the
    encrypted key, asks for the key's password on the terminal when not
    given. Refuses ``ca_path`` (``NotAvailableError``)."""
    if ca_path is not None:
        raise NotAvailableError(
            "ca_path: the broker trusts the relay through its own config "
            "(domains.NAME.ca_file); set it there and pass domain= instead"
        )
    if cert_path is None or key_path is None:
        if cert_dir is None:
            if not relay_url:
                raise SwitchyardError(
                    "certificate_login needs cert_path= and key_path=, cert_dir=, or relay_url=")
            cert_dir = str(default_cert_dir(relay_url, identity))
    folder = Path(cert_dir or ".")
    cert = Path(cert_path) if cert_path else folder / "cert.pem"
    key = Path(key_path) if key_path else folder / "key.enc"
    encrypted = read_encrypted_key(key)
    if key_password is None:
        key_password = getpass.getpass(f"Password for the key of {identity}: ")
    return pb.CertificateLoginRequest(
        session_id=session_id, identity=identity, relay=relay(relay_url, domain, proxy),
        cert_pem=cert.read_text(), encrypted_key=encrypted, key_password=key_password,
    )


def read_encrypted_key(path: Path) -> bytes:
    """The key file's bytes; refuses a plain PEM key, which the broker
    cannot take (it only accepts keys encrypted the way ``switchyard enroll
    client`` saves them)."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        raise NotAvailableError(
            f"{path} is a PEM private key; the broker takes only the encrypted key that "
            "`switchyard enroll client` saves (key.enc)"
        )
    return data


def token_request(session_id: str, token: str, domain: Optional[str],
                  relay_url: Optional[str], proxy: Optional[ProxyInfo]) -> pb.AccessTokenLoginRequest:
    """The AccessTokenLogin request (the broker reaches the relay through
    ``proxy`` when given)."""
    return pb.AccessTokenLoginRequest(session_id=session_id, token=token,
                                      relay=relay(relay_url, domain, proxy))


def cloud_request(session_id: str, serial: str, e2ee_fingerprint: Optional[str],
                  identity: Optional[str]) -> Tuple[pb.ServiceCloudRequest, LinkKey]:
    """The ServiceCloud request and how to find its link."""
    request = pb.ServiceCloudRequest(session_id=session_id, serial=serial,
                                     e2ee_fingerprint=e2ee_fingerprint or "",
                                     identity=identity or "")
    return request, LinkKey("relayed", serial)


def direct_sso_request(session_id: str, serial: str, host: Optional[str], port: int,
                       e2ee_fingerprint: Optional[str], identity: Optional[str],
                       ) -> Tuple[pb.ServiceDirectWithSsoRequest, LinkKey]:
    """The ServiceDirectWithSso request and how to find its link."""
    request = pb.ServiceDirectWithSsoRequest(
        session_id=session_id, serial=serial, host=host or "", port=port if host else 0,
        e2ee_fingerprint=e2ee_fingerprint or "", identity=identity or "",
    )
    return request, LinkKey("direct-sso", serial)


def default_cert_dir(relay_url: str, identity: str) -> Path:
    """Where ``switchyard enroll client`` saves a client certificate."""
    from urllib.parse import urlsplit

    parts = urlsplit(relay_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    relay_dir = f"{parts.hostname}_{port}"
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")

    def safe(text: str) -> str:
        return text.replace("/", "_").replace("\\", "_").replace(":", "_")

    return base / "switchyard" / "certs" / safe(relay_dir) / safe(identity)
