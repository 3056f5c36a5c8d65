"""Exceptions raised by the Switchyard client."""

from __future__ import annotations

import grpc

from .paths import socket_problem, start_command


class SwitchyardError(Exception):
    """Base class: a broker call failed. ``code`` is the gRPC status code."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class BrokerUnreachableError(SwitchyardError):
    """The broker's socket cannot be used: the message says what is wrong
    with the path (too long, a directory, not a socket, permission denied)."""


class BrokerNotRunningError(BrokerUnreachableError):
    """No broker answers on the socket."""


class NotAvailableError(SwitchyardError):
    """The feature exists in the API but not in this version of Switchyard."""


class ExecError(SwitchyardError):
    """Reading the data of a command or device that failed."""


def from_rpc(err: grpc.RpcError, socket: str) -> SwitchyardError:
    """Turns a gRPC error into a SwitchyardError with the broker's message."""
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    lowered = (details or "").lower()
    if code == grpc.StatusCode.UNAVAILABLE or "target uri" in lowered:
        # gRPC's own words ("failed to connect", "the target uri is not
        # valid") do not say what is wrong with the path; look at it.
        problem = socket_problem(socket)
        if problem is not None:
            return BrokerUnreachableError(problem, code)
        # gRPC's own failure ("failed to connect to all addresses"), not
        # the broker's UNAVAILABLE for a service it cannot reach (which may
        # say "Connection refused" too: the broker runs).
        if "failed to connect" in lowered or "target uri" in lowered:
            return BrokerNotRunningError(
                f"the broker is not running at {socket}; start it with "
                f"`{start_command(socket)}`",
                code,
            )
    return SwitchyardError(details or str(code), code)


# -- added for the reference client's shape (issue 19) ----------------------


class LoginError(SwitchyardError):
    """A login or connection to a service or relay failed."""


class WrongCredentialsError(LoginError):
    """The password, key password, token or certificate was refused."""


class UnreachableError(LoginError):
    """The service or relay could not be reached (the broker is running)."""


class ExpiredError(LoginError):
    """The credential (token, certificate, login code) has expired; log in
    again."""


class UnknownDevicesError(SwitchyardError, KeyError):
    """Names that are not devices of the inventory (``subset``). ``unknown``
    lists them; ``known`` lists the devices there are."""

    def __init__(self, unknown: "list[str]", known: "list[str]") -> None:
        shown = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        super().__init__(
            f"no such device{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
            f"(the inventory has: {shown or 'no devices'})"
        )
        self.unknown = unknown
        self.known = known

    def __str__(self) -> str:
        return str(self.args[0])


class ClientForkedError(SwitchyardError):
    """A client was used in a process forked after it was created."""


class TerminalClosedError(SwitchyardError):
    """The terminal ended (the device closed it, or it was closed) before
    what was being read arrived."""


def login_error(err: grpc.RpcError, socket: str) -> SwitchyardError:
    """Like ``from_rpc``, but a failed login gets its own class:
    ``ExpiredError`` when the broker says the credential expired,
    ``WrongCredentialsError`` for UNAUTHENTICATED and PERMISSION_DENIED,
    ``UnreachableError`` for UNAVAILABLE and DEADLINE_EXCEEDED."""
    base = from_rpc(err, socket)
    if type(base) is not SwitchyardError:
        return base  # e.g. the broker itself is not running
    text = str(base)
    if "expired" in text.lower():
        return ExpiredError(text, base.code)
    if base.code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return WrongCredentialsError(text, base.code)
    if base.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UnreachableError(text, base.code)
    return base
