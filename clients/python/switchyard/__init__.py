"""Python client for the Switchyard broker.

Scripts use ``from switchyard.sync import Client``; see the package README.
The generated gRPC stubs live in ``switchyard.v1`` (from ``proto/``).
"""

from .errors import (
    BrokerNotRunningError,
    BrokerUnreachableError,
    ExecError,
    NotAvailableError,
    SwitchyardError,
)

__all__ = [
    "BrokerNotRunningError",
    "BrokerUnreachableError",
    "ExecError",
    "NotAvailableError",
    "SwitchyardError",
]
