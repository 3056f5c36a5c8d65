"""Python client for the Switchyard broker.

Scripts use ``from switchyard.sync import Client`` (asyncio code
``switchyard.aio``; code written for the reference client
``switchyard.compat.radkit.sync``); see the package README.
The generated gRPC stubs live in ``switchyard.v1`` (from ``proto/``).
"""

import os as _os

# fork(): gRPC core can make a forked child's new channels work only with
# its fork support on and the "poll" polling strategy (with the default
# epoll1 poller, a child's new client failed intermittently with "Wrong file
# descriptor generation" while the parent's session stream was open). These
# are read when gRPC initialises, so they are set here, before this package
# imports grpc; an application can still choose otherwise by exporting them.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "1")
_os.environ.setdefault("GRPC_POLL_STRATEGY", "poll")
# With fork support on, gRPC logs informational lines about every fork() on
# stderr ("FD from fork parent still in poll list"); errors still show.
_os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from .errors import (  # noqa: E402 - after the environment above
    BrokerNotRunningError,
    BrokerUnreachableError,
    ClientForkedError,
    ExecError,
    ExpiredError,
    LoginError,
    NotAvailableError,
    SwitchyardError,
    TerminalClosedError,
    UnknownDevicesError,
    UnreachableError,
    WrongCredentialsError,
)

__all__ = [
    "BrokerNotRunningError",
    "BrokerUnreachableError",
    "ClientForkedError",
    "ExecError",
    "ExpiredError",
    "LoginError",
    "NotAvailableError",
    "SwitchyardError",
    "TerminalClosedError",
    "UnknownDevicesError",
    "UnreachableError",
    "WrongCredentialsError",
]
