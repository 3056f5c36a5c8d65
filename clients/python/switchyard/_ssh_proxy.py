"""The SSH proxy's request and handle parts shared by the sync and the
asyncio clients. Nothing here talks to the broker."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Union

from .errors import SwitchyardError
from .v1 import broker_pb2 as pb

#: An authorized_keys file, as a path.
KeysPath = Union[str, "os.PathLike[str]"]


def default_authorized_keys() -> Path:
    """``~/.ssh/authorized_keys`` of this user."""
    return Path.home() / ".ssh" / "authorized_keys"


def start_request(session_id: str, local_port: int, password: Optional[str],
                  authorized_keys: Optional[KeysPath], local_address: str,
                  persist: bool) -> pb.SshProxyStartRequest:
    """The ``SshProxyStart`` request: the keys file read here (the given
    one must exist; the default one is read when it does), the proxy bound
    to this client's session unless ``persist``."""
    if authorized_keys is not None:
        keys = Path(authorized_keys).read_text()
    else:
        path = default_authorized_keys()
        keys = path.read_text() if path.exists() else ""
    if not keys.strip() and not password:
        raise SwitchyardError(
            "the SSH proxy needs client keys or a password: pass password=... or "
            "authorized_keys=PATH (~/.ssh/authorized_keys was not found or is empty)")
    host = f"[{local_address}]" if ":" in local_address else local_address
    return pb.SshProxyStartRequest(
        listen=f"{host}:{local_port}", authorized_keys=keys, password=password or "",
        session_id="" if persist else session_id)


class SshProxyBase:
    """What both SSH proxy handles show: ``local_port``, ``address``,
    ``host_key_fingerprint`` (``SHA256:...``, as ``ssh`` prints it), and
    ``login_name(device)``, the user name that reaches a device."""

    def __init__(self, reply: pb.SshProxyStatus) -> None:
        #: The local TCP port it listens on.
        self.local_port: int = reply.local_port
        #: ``ADDRESS:PORT`` it listens on.
        self.address: str = reply.address
        #: The host key's SHA-256 fingerprint.
        self.host_key_fingerprint: str = reply.host_key_fingerprint

    def __repr__(self) -> str:
        return f"<SshProxy {self.address}>"

    @staticmethod
    def login_name(device: Any) -> str:
        """The SSH user name for ``device`` (a ``Device`` of one of this
        client's services): ``DEVICE@SERVICE_ID``, e.g. for
        ``ssh -p PORT NAME@127.0.0.1``. A named service's devices are
        reached as ``DEVICE@NAME``."""
        return f"{device.name}@{device._service._id}"
