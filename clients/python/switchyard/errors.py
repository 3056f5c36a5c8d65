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
        if "connect" in lowered or "target uri" in lowered:
            return BrokerNotRunningError(
                f"the broker is not running at {socket}; start it with "
                f"`{start_command(socket)}`",
                code,
            )
    return SwitchyardError(details or str(code), code)
