"""The reference client's ``sync`` module, backed by the Switchyard broker.

Change ``from radkit_client.sync import Client`` to
``from switchyard.compat.radkit.sync import Client``; the rest of the script
stays as it is. Every name here is the Switchyard SDK's own object (see
``switchyard.sync``); ``DeviceDict`` is the reference's name for the
inventory class. Arguments Switchyard cannot honour (``rpc_url``, ``proxy``,
``ca_path``) raise ``NotAvailableError`` saying why, never silently do
something else.
"""

from types import SimpleNamespace

from ...errors import (
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
from ...sync import (
    FAILURE,
    PARTIAL_SUCCESS,
    SUCCESS,
    Client,
    CommandResult,
    Device,
    DeviceResult,
    ExecRequest,
    ExecResponse,
    ExecStatus,
    Inventory,
    Login,
    ProxyInfo,
    Service,
    Terminal,
    access_token_login,
    certificate_login,
    create_context,
    get_client,
    logout,
    service,
    service_cloud,
    service_direct,
    service_direct_with_sso,
    service_integrated,
    sso_login,
)

#: The reference's base class of client errors (``except ClientError``).
ClientError = SwitchyardError
#: The reference's ``sync.exceptions`` module, as a namespace:
#: ``sync.exceptions.ClientError`` and the Switchyard error classes.
exceptions = SimpleNamespace(
    ClientError=SwitchyardError, SwitchyardError=SwitchyardError, ExecError=ExecError,
    LoginError=LoginError, WrongCredentialsError=WrongCredentialsError,
    UnreachableError=UnreachableError, ExpiredError=ExpiredError,
    NotAvailableError=NotAvailableError, UnknownDevicesError=UnknownDevicesError,
)

#: The reference's name for a service's inventory (a dict of devices).
DeviceDict = Inventory
#: The reference's name for a terminal connection.
InteractiveConnection = Terminal

__all__ = [
    "FAILURE", "PARTIAL_SUCCESS", "SUCCESS",
    "Client", "CommandResult", "Device", "DeviceDict", "DeviceResult", "ExecRequest",
    "ExecResponse", "ExecStatus", "InteractiveConnection", "Inventory", "Login", "ProxyInfo",
    "Service", "Terminal",
    "access_token_login", "certificate_login", "create_context", "get_client", "logout",
    "service", "service_cloud", "service_direct", "service_direct_with_sso",
    "service_integrated", "sso_login",
    "ClientError", "exceptions", "ClientForkedError", "ExecError", "ExpiredError", "LoginError", "NotAvailableError",
    "SwitchyardError", "TerminalClosedError", "UnknownDevicesError", "UnreachableError",
    "WrongCredentialsError",
]
