"""Exceptions raised by the Switchyard client."""

from __future__ import annotations

import grpc


class SwitchyardError(Exception):
    """Base class: a broker call failed. ``code`` is the gRPC status code."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class BrokerNotRunningError(SwitchyardError):
    """No broker answers on the socket."""


class NotAvailableError(SwitchyardError):
    """The feature exists in the API but not in this version of Switchyard."""


class ExecError(SwitchyardError):
    """Reading the data of a command or device that failed."""


def from_rpc(err: grpc.RpcError, socket: str) -> SwitchyardError:
    """Turns a gRPC error into a SwitchyardError with the broker's message."""
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    if code == grpc.StatusCode.UNAVAILABLE and "connect" in (details or "").lower():
        return BrokerNotRunningError(
            f"the broker is not running at {socket}; start it with `switchyard broker`",
            code,
        )
    return SwitchyardError(details or str(code), code)
