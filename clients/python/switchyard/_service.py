"""What the sync and asyncio ``Service`` handles share: the handle's
identity, its reference in requests, and the attributes that need no
call to the broker. The methods that call the broker stay in ``sync.py``
and ``aio.py`` (they differ by ``await``)."""

from __future__ import annotations

from typing import Optional, Protocol

from ._core import CAPABILITIES, LinkKey, link_state_name
from .errors import SwitchyardError
from .v1 import broker_pb2 as pb


class SessionHolder(Protocol):
    """A client as a service handle sees it: the session it belongs to."""

    @property
    def session_id(self) -> str: ...


class ServiceBase:
    """A service reached through the broker: name, fingerprint and the
    link it uses; ``logout()`` ends the handle."""

    def __init__(self, client: SessionHolder, reply: pb.ServiceResponse, link: LinkKey,
                 cloud: bool = False) -> None:
        self._session = client
        self._id = reply.service_id
        self.name: str = reply.service_name or reply.name
        self.fingerprint: str = reply.fingerprint
        self._link = link
        self._cloud = cloud
        self._failed: set[str] = set()
        self._closed = False

    def __repr__(self) -> str:
        return f"<Service {self.name!r}>"

    def _ref(self) -> pb.ServiceRef:
        if self._closed:
            raise SwitchyardError(f"service {self.name!r} was logged out of; connect again")
        return pb.ServiceRef(session_id=self._session.session_id, service_id=self._id)

    def _named(self, name: str) -> None:
        """Takes the name the broker reports (when it reports one)."""
        self.name = name or self.name

    def _state_in(self, status: pb.StatusResponse) -> str:
        """The link's state as ``status`` reports it (see ``status``)."""
        if self._closed:
            return "LOGGED_OUT"
        link = self._link.find(status)
        return link_state_name(link.state) if link is not None else "UNKNOWN"

    @property
    def version(self) -> Optional[str]:
        """The service's software version: None, because the broker API
        does not report it (``client.status().version`` is the broker's)."""
        return None

    @property
    def capabilities(self) -> frozenset[str]:
        """What can be done with this service through the broker."""
        return CAPABILITIES

    def logout(self) -> None:
        """Stops using this handle; later calls on it raise. The broker
        keeps the link for other sessions and releases this session's hold
        when the client closes (the API has no per-handle release)."""
        self._closed = True
