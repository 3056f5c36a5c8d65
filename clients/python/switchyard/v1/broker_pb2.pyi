from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXEC_STATUS_UNSPECIFIED: _ClassVar[ExecStatus]
    EXEC_STATUS_SUCCESS: _ClassVar[ExecStatus]
    EXEC_STATUS_PARTIAL_SUCCESS: _ClassVar[ExecStatus]
    EXEC_STATUS_FAILURE: _ClassVar[ExecStatus]

class TransferProtocol(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSFER_PROTOCOL_AUTO: _ClassVar[TransferProtocol]
    TRANSFER_PROTOCOL_SFTP: _ClassVar[TransferProtocol]
    TRANSFER_PROTOCOL_SCP: _ClassVar[TransferProtocol]
EXEC_STATUS_UNSPECIFIED: ExecStatus
EXEC_STATUS_SUCCESS: ExecStatus
EXEC_STATUS_PARTIAL_SUCCESS: ExecStatus
EXEC_STATUS_FAILURE: ExecStatus
TRANSFER_PROTOCOL_AUTO: TransferProtocol
TRANSFER_PROTOCOL_SFTP: TransferProtocol
TRANSFER_PROTOCOL_SCP: TransferProtocol

class OpenSessionRequest(_message.Message):
    __slots__ = ("client_name",)
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    client_name: str
    def __init__(self, client_name: _Optional[str] = ...) -> None: ...

class OpenSessionResponse(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class SessionEvent(_message.Message):
    __slots__ = ("attached", "shutting_down")
    ATTACHED_FIELD_NUMBER: _ClassVar[int]
    SHUTTING_DOWN_FIELD_NUMBER: _ClassVar[int]
    attached: Attached
    shutting_down: ShuttingDown
    def __init__(self, attached: _Optional[_Union[Attached, _Mapping]] = ..., shutting_down: _Optional[_Union[ShuttingDown, _Mapping]] = ...) -> None: ...

class Attached(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class ShuttingDown(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class CloseSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServiceDirectRequest(_message.Message):
    __slots__ = ("session_id", "name", "username", "host", "port", "password", "fingerprint", "rpc_url", "proxy_url", "proxy_password", "tcp_port")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    RPC_URL_FIELD_NUMBER: _ClassVar[int]
    PROXY_URL_FIELD_NUMBER: _ClassVar[int]
    PROXY_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    TCP_PORT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    name: str
    username: str
    host: str
    port: int
    password: str
    fingerprint: str
    rpc_url: str
    proxy_url: str
    proxy_password: str
    tcp_port: int
    def __init__(self, session_id: _Optional[str] = ..., name: _Optional[str] = ..., username: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., password: _Optional[str] = ..., fingerprint: _Optional[str] = ..., rpc_url: _Optional[str] = ..., proxy_url: _Optional[str] = ..., proxy_password: _Optional[str] = ..., tcp_port: _Optional[int] = ...) -> None: ...

class ServiceIntegratedRequest(_message.Message):
    __slots__ = ("session_id", "name", "db", "admin_password")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DB_FIELD_NUMBER: _ClassVar[int]
    ADMIN_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    name: str
    db: str
    admin_password: str
    def __init__(self, session_id: _Optional[str] = ..., name: _Optional[str] = ..., db: _Optional[str] = ..., admin_password: _Optional[str] = ...) -> None: ...

class ServiceResponse(_message.Message):
    __slots__ = ("service_id", "name", "service_name", "fingerprint", "reused")
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    service_id: str
    name: str
    service_name: str
    fingerprint: str
    reused: bool
    def __init__(self, service_id: _Optional[str] = ..., name: _Optional[str] = ..., service_name: _Optional[str] = ..., fingerprint: _Optional[str] = ..., reused: _Optional[bool] = ...) -> None: ...

class ServiceRef(_message.Message):
    __slots__ = ("session_id", "service_id", "name")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    service_id: str
    name: str
    def __init__(self, session_id: _Optional[str] = ..., service_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DisconnectRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DisconnectResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InventoryRequest(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: ServiceRef
    def __init__(self, service: _Optional[_Union[ServiceRef, _Mapping]] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("name", "host", "port", "device_type", "attributes")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    host: str
    port: int
    device_type: str
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., device_type: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class InventoryResponse(_message.Message):
    __slots__ = ("devices",)
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    def __init__(self, devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ...) -> None: ...

class ExecRequest(_message.Message):
    __slots__ = ("service", "devices", "commands", "timeout_ms", "max_output_bytes", "reset_before", "reset_after")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    RESET_BEFORE_FIELD_NUMBER: _ClassVar[int]
    RESET_AFTER_FIELD_NUMBER: _ClassVar[int]
    service: ServiceRef
    devices: _containers.RepeatedScalarFieldContainer[str]
    commands: _containers.RepeatedScalarFieldContainer[str]
    timeout_ms: int
    max_output_bytes: int
    reset_before: bool
    reset_after: bool
    def __init__(self, service: _Optional[_Union[ServiceRef, _Mapping]] = ..., devices: _Optional[_Iterable[str]] = ..., commands: _Optional[_Iterable[str]] = ..., timeout_ms: _Optional[int] = ..., max_output_bytes: _Optional[int] = ..., reset_before: _Optional[bool] = ..., reset_after: _Optional[bool] = ...) -> None: ...

class ExecInput(_message.Message):
    __slots__ = ("start", "data")
    START_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    start: ExecRequest
    data: bytes
    def __init__(self, start: _Optional[_Union[ExecRequest, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class ExecEvent(_message.Message):
    __slots__ = ("device", "output", "device_result", "summary")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_RESULT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    device: int
    output: CommandOutput
    device_result: DeviceResult
    summary: ExecSummary
    def __init__(self, device: _Optional[int] = ..., output: _Optional[_Union[CommandOutput, _Mapping]] = ..., device_result: _Optional[_Union[DeviceResult, _Mapping]] = ..., summary: _Optional[_Union[ExecSummary, _Mapping]] = ...) -> None: ...

class CommandOutput(_message.Message):
    __slots__ = ("command", "data", "stderr")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    command: int
    data: bytes
    stderr: bool
    def __init__(self, command: _Optional[int] = ..., data: _Optional[bytes] = ..., stderr: _Optional[bool] = ...) -> None: ...

class ExecSummary(_message.Message):
    __slots__ = ("status", "succeeded", "failed", "elapsed_us")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    ELAPSED_US_FIELD_NUMBER: _ClassVar[int]
    status: ExecStatus
    succeeded: int
    failed: int
    elapsed_us: int
    def __init__(self, status: _Optional[_Union[ExecStatus, str]] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., elapsed_us: _Optional[int] = ...) -> None: ...

class DeviceResult(_message.Message):
    __slots__ = ("commands", "error", "error_code")
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    commands: _containers.RepeatedCompositeFieldContainer[CommandResult]
    error: str
    error_code: str
    def __init__(self, commands: _Optional[_Iterable[_Union[CommandResult, _Mapping]]] = ..., error: _Optional[str] = ..., error_code: _Optional[str] = ...) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("command", "output", "exit_status", "duration_us", "error", "stderr")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    EXIT_STATUS_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    command: int
    output: bytes
    exit_status: int
    duration_us: int
    error: str
    stderr: bytes
    def __init__(self, command: _Optional[int] = ..., output: _Optional[bytes] = ..., exit_status: _Optional[int] = ..., duration_us: _Optional[int] = ..., error: _Optional[str] = ..., stderr: _Optional[bytes] = ...) -> None: ...

class TerminalRequest(_message.Message):
    __slots__ = ("open", "data", "resize")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    open: TerminalOpen
    data: bytes
    resize: WindowSize
    def __init__(self, open: _Optional[_Union[TerminalOpen, _Mapping]] = ..., data: _Optional[bytes] = ..., resize: _Optional[_Union[WindowSize, _Mapping]] = ...) -> None: ...

class TerminalOpen(_message.Message):
    __slots__ = ("service", "device", "size")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    service: ServiceRef
    device: str
    size: WindowSize
    def __init__(self, service: _Optional[_Union[ServiceRef, _Mapping]] = ..., device: _Optional[str] = ..., size: _Optional[_Union[WindowSize, _Mapping]] = ...) -> None: ...

class WindowSize(_message.Message):
    __slots__ = ("cols", "rows")
    COLS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    cols: int
    rows: int
    def __init__(self, cols: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...

class TerminalEvent(_message.Message):
    __slots__ = ("ready", "data", "closed")
    READY_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    ready: TerminalReady
    data: bytes
    closed: TerminalClosed
    def __init__(self, ready: _Optional[_Union[TerminalReady, _Mapping]] = ..., data: _Optional[bytes] = ..., closed: _Optional[_Union[TerminalClosed, _Mapping]] = ...) -> None: ...

class TerminalReady(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TerminalClosed(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("sessions", "named_services", "links", "version", "logins", "forwards", "ssh_proxy")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NAMED_SERVICES_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LOGINS_FIELD_NUMBER: _ClassVar[int]
    FORWARDS_FIELD_NUMBER: _ClassVar[int]
    SSH_PROXY_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionStatus]
    named_services: _containers.RepeatedCompositeFieldContainer[NamedServiceStatus]
    links: _containers.RepeatedCompositeFieldContainer[LinkStatus]
    version: str
    logins: _containers.RepeatedCompositeFieldContainer[LoginStatus]
    forwards: _containers.RepeatedCompositeFieldContainer[ForwardStatus]
    ssh_proxy: SshProxyStatus
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionStatus, _Mapping]]] = ..., named_services: _Optional[_Iterable[_Union[NamedServiceStatus, _Mapping]]] = ..., links: _Optional[_Iterable[_Union[LinkStatus, _Mapping]]] = ..., version: _Optional[str] = ..., logins: _Optional[_Iterable[_Union[LoginStatus, _Mapping]]] = ..., forwards: _Optional[_Iterable[_Union[ForwardStatus, _Mapping]]] = ..., ssh_proxy: _Optional[_Union[SshProxyStatus, _Mapping]] = ...) -> None: ...

class LoginStatus(_message.Message):
    __slots__ = ("identity", "relay_url", "method", "state", "expires_unix", "sessions", "connected", "reach", "last_error", "carrier")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    RELAY_URL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    REACH_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CARRIER_FIELD_NUMBER: _ClassVar[int]
    identity: str
    relay_url: str
    method: str
    state: str
    expires_unix: int
    sessions: int
    connected: bool
    reach: str
    last_error: str
    carrier: str
    def __init__(self, identity: _Optional[str] = ..., relay_url: _Optional[str] = ..., method: _Optional[str] = ..., state: _Optional[str] = ..., expires_unix: _Optional[int] = ..., sessions: _Optional[int] = ..., connected: _Optional[bool] = ..., reach: _Optional[str] = ..., last_error: _Optional[str] = ..., carrier: _Optional[str] = ...) -> None: ...

class SessionStatus(_message.Message):
    __slots__ = ("session_id", "client_name", "pid", "services", "in_flight")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_NAME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    client_name: str
    pid: int
    services: int
    in_flight: int
    def __init__(self, session_id: _Optional[str] = ..., client_name: _Optional[str] = ..., pid: _Optional[int] = ..., services: _Optional[int] = ..., in_flight: _Optional[int] = ...) -> None: ...

class NamedServiceStatus(_message.Message):
    __slots__ = ("name", "link_id", "idle_secs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    IDLE_SECS_FIELD_NUMBER: _ClassVar[int]
    name: str
    link_id: str
    idle_secs: int
    def __init__(self, name: _Optional[str] = ..., link_id: _Optional[str] = ..., idle_secs: _Optional[int] = ...) -> None: ...

class LinkStatus(_message.Message):
    __slots__ = ("link_id", "target", "principal", "transport", "state", "holders", "in_flight", "connects", "last_error", "fingerprint", "carrier")
    LINK_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HOLDERS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    CONNECTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CARRIER_FIELD_NUMBER: _ClassVar[int]
    link_id: str
    target: str
    principal: str
    transport: str
    state: str
    holders: int
    in_flight: int
    connects: int
    last_error: str
    fingerprint: str
    carrier: str
    def __init__(self, link_id: _Optional[str] = ..., target: _Optional[str] = ..., principal: _Optional[str] = ..., transport: _Optional[str] = ..., state: _Optional[str] = ..., holders: _Optional[int] = ..., in_flight: _Optional[int] = ..., connects: _Optional[int] = ..., last_error: _Optional[str] = ..., fingerprint: _Optional[str] = ..., carrier: _Optional[str] = ...) -> None: ...

class RelaySelector(_message.Message):
    __slots__ = ("relay_url", "domain", "proxy_url", "proxy_password")
    RELAY_URL_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    PROXY_URL_FIELD_NUMBER: _ClassVar[int]
    PROXY_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    relay_url: str
    domain: str
    proxy_url: str
    proxy_password: str
    def __init__(self, relay_url: _Optional[str] = ..., domain: _Optional[str] = ..., proxy_url: _Optional[str] = ..., proxy_password: _Optional[str] = ...) -> None: ...

class SsoLoginRequest(_message.Message):
    __slots__ = ("session_id", "identity", "relay")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    RELAY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    identity: str
    relay: RelaySelector
    def __init__(self, session_id: _Optional[str] = ..., identity: _Optional[str] = ..., relay: _Optional[_Union[RelaySelector, _Mapping]] = ...) -> None: ...

class SsoLoginEvent(_message.Message):
    __slots__ = ("prompt", "logged_in")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    LOGGED_IN_FIELD_NUMBER: _ClassVar[int]
    prompt: SsoPrompt
    logged_in: LoginResponse
    def __init__(self, prompt: _Optional[_Union[SsoPrompt, _Mapping]] = ..., logged_in: _Optional[_Union[LoginResponse, _Mapping]] = ...) -> None: ...

class SsoPrompt(_message.Message):
    __slots__ = ("verification_uri", "verification_uri_complete", "user_code", "expires_in_secs")
    VERIFICATION_URI_FIELD_NUMBER: _ClassVar[int]
    VERIFICATION_URI_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    USER_CODE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_SECS_FIELD_NUMBER: _ClassVar[int]
    verification_uri: str
    verification_uri_complete: str
    user_code: str
    expires_in_secs: int
    def __init__(self, verification_uri: _Optional[str] = ..., verification_uri_complete: _Optional[str] = ..., user_code: _Optional[str] = ..., expires_in_secs: _Optional[int] = ...) -> None: ...

class LoginResponse(_message.Message):
    __slots__ = ("identity", "relay_url", "method", "expires_unix")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    RELAY_URL_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    identity: str
    relay_url: str
    method: str
    expires_unix: int
    def __init__(self, identity: _Optional[str] = ..., relay_url: _Optional[str] = ..., method: _Optional[str] = ..., expires_unix: _Optional[int] = ...) -> None: ...

class CertificateLoginRequest(_message.Message):
    __slots__ = ("session_id", "identity", "relay", "cert_pem", "encrypted_key", "key_password")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    RELAY_FIELD_NUMBER: _ClassVar[int]
    CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_KEY_FIELD_NUMBER: _ClassVar[int]
    KEY_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    identity: str
    relay: RelaySelector
    cert_pem: str
    encrypted_key: bytes
    key_password: str
    def __init__(self, session_id: _Optional[str] = ..., identity: _Optional[str] = ..., relay: _Optional[_Union[RelaySelector, _Mapping]] = ..., cert_pem: _Optional[str] = ..., encrypted_key: _Optional[bytes] = ..., key_password: _Optional[str] = ...) -> None: ...

class AccessTokenLoginRequest(_message.Message):
    __slots__ = ("session_id", "token", "relay")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    RELAY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    token: str
    relay: RelaySelector
    def __init__(self, session_id: _Optional[str] = ..., token: _Optional[str] = ..., relay: _Optional[_Union[RelaySelector, _Mapping]] = ...) -> None: ...

class LogoutRequest(_message.Message):
    __slots__ = ("identity", "relay")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    RELAY_FIELD_NUMBER: _ClassVar[int]
    identity: str
    relay: RelaySelector
    def __init__(self, identity: _Optional[str] = ..., relay: _Optional[_Union[RelaySelector, _Mapping]] = ...) -> None: ...

class LogoutResponse(_message.Message):
    __slots__ = ("logged_out",)
    LOGGED_OUT_FIELD_NUMBER: _ClassVar[int]
    logged_out: int
    def __init__(self, logged_out: _Optional[int] = ...) -> None: ...

class EnrollClientRequest(_message.Message):
    __slots__ = ("session_id", "identity", "key_password")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    KEY_PASSWORD_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    identity: str
    key_password: str
    def __init__(self, session_id: _Optional[str] = ..., identity: _Optional[str] = ..., key_password: _Optional[str] = ...) -> None: ...

class EnrollClientResponse(_message.Message):
    __slots__ = ("identity", "relay_url", "cert_pem", "encrypted_key")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    RELAY_URL_FIELD_NUMBER: _ClassVar[int]
    CERT_PEM_FIELD_NUMBER: _ClassVar[int]
    ENCRYPTED_KEY_FIELD_NUMBER: _ClassVar[int]
    identity: str
    relay_url: str
    cert_pem: str
    encrypted_key: bytes
    def __init__(self, identity: _Optional[str] = ..., relay_url: _Optional[str] = ..., cert_pem: _Optional[str] = ..., encrypted_key: _Optional[bytes] = ...) -> None: ...

class CreateServiceOtpRequest(_message.Message):
    __slots__ = ("session_id", "identity", "serial")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    identity: str
    serial: str
    def __init__(self, session_id: _Optional[str] = ..., identity: _Optional[str] = ..., serial: _Optional[str] = ...) -> None: ...

class CreateServiceOtpResponse(_message.Message):
    __slots__ = ("otp", "expires_unix")
    OTP_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    otp: str
    expires_unix: int
    def __init__(self, otp: _Optional[str] = ..., expires_unix: _Optional[int] = ...) -> None: ...

class CreateAccessTokenRequest(_message.Message):
    __slots__ = ("session_id", "identity", "lifetime_secs")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_SECS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    identity: str
    lifetime_secs: int
    def __init__(self, session_id: _Optional[str] = ..., identity: _Optional[str] = ..., lifetime_secs: _Optional[int] = ...) -> None: ...

class CreateAccessTokenResponse(_message.Message):
    __slots__ = ("id", "token", "expires_unix")
    ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    id: str
    token: str
    expires_unix: int
    def __init__(self, id: _Optional[str] = ..., token: _Optional[str] = ..., expires_unix: _Optional[int] = ...) -> None: ...

class ServiceCloudRequest(_message.Message):
    __slots__ = ("session_id", "name", "serial", "e2ee_fingerprint", "identity")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    E2EE_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    name: str
    serial: str
    e2ee_fingerprint: str
    identity: str
    def __init__(self, session_id: _Optional[str] = ..., name: _Optional[str] = ..., serial: _Optional[str] = ..., e2ee_fingerprint: _Optional[str] = ..., identity: _Optional[str] = ...) -> None: ...

class ServiceDirectWithSsoRequest(_message.Message):
    __slots__ = ("session_id", "name", "serial", "host", "port", "e2ee_fingerprint", "identity")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    E2EE_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    name: str
    serial: str
    host: str
    port: int
    e2ee_fingerprint: str
    identity: str
    def __init__(self, session_id: _Optional[str] = ..., name: _Optional[str] = ..., serial: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., e2ee_fingerprint: _Optional[str] = ..., identity: _Optional[str] = ...) -> None: ...

class WaitRequest(_message.Message):
    __slots__ = ("service", "timeout_secs")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECS_FIELD_NUMBER: _ClassVar[int]
    service: ServiceRef
    timeout_secs: float
    def __init__(self, service: _Optional[_Union[ServiceRef, _Mapping]] = ..., timeout_secs: _Optional[float] = ...) -> None: ...

class WaitResponse(_message.Message):
    __slots__ = ("service_name",)
    SERVICE_NAME_FIELD_NUMBER: _ClassVar[int]
    service_name: str
    def __init__(self, service_name: _Optional[str] = ...) -> None: ...

class ListKnownServicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListKnownServicesResponse(_message.Message):
    __slots__ = ("services",)
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[KnownService]
    def __init__(self, services: _Optional[_Iterable[_Union[KnownService, _Mapping]]] = ...) -> None: ...

class KnownService(_message.Message):
    __slots__ = ("target", "fingerprint")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    target: str
    fingerprint: str
    def __init__(self, target: _Optional[str] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class ForgetKnownServiceRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: str
    def __init__(self, target: _Optional[str] = ...) -> None: ...

class ForgetKnownServiceResponse(_message.Message):
    __slots__ = ("fingerprint", "target")
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    fingerprint: str
    target: str
    def __init__(self, fingerprint: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class ForwardStartRequest(_message.Message):
    __slots__ = ("service", "device", "port", "listen")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    LISTEN_FIELD_NUMBER: _ClassVar[int]
    service: ServiceRef
    device: str
    port: int
    listen: str
    def __init__(self, service: _Optional[_Union[ServiceRef, _Mapping]] = ..., device: _Optional[str] = ..., port: _Optional[int] = ..., listen: _Optional[str] = ...) -> None: ...

class ForwardStatus(_message.Message):
    __slots__ = ("forward_id", "service", "device", "port", "address", "local_port", "connections_open", "connections_total", "connections_failed", "bytes_to_device", "bytes_from_device", "last_error", "kind", "username")
    FORWARD_ID_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_OPEN_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FAILED_FIELD_NUMBER: _ClassVar[int]
    BYTES_TO_DEVICE_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_DEVICE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    forward_id: str
    service: str
    device: str
    port: int
    address: str
    local_port: int
    connections_open: int
    connections_total: int
    connections_failed: int
    bytes_to_device: int
    bytes_from_device: int
    last_error: str
    kind: str
    username: str
    def __init__(self, forward_id: _Optional[str] = ..., service: _Optional[str] = ..., device: _Optional[str] = ..., port: _Optional[int] = ..., address: _Optional[str] = ..., local_port: _Optional[int] = ..., connections_open: _Optional[int] = ..., connections_total: _Optional[int] = ..., connections_failed: _Optional[int] = ..., bytes_to_device: _Optional[int] = ..., bytes_from_device: _Optional[int] = ..., last_error: _Optional[str] = ..., kind: _Optional[str] = ..., username: _Optional[str] = ...) -> None: ...

class SocksProxyStartRequest(_message.Message):
    __slots__ = ("service", "listen", "username", "password")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    LISTEN_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    service: ServiceRef
    listen: str
    username: str
    password: str
    def __init__(self, service: _Optional[_Union[ServiceRef, _Mapping]] = ..., listen: _Optional[str] = ..., username: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class ForwardStopRequest(_message.Message):
    __slots__ = ("forward_id",)
    FORWARD_ID_FIELD_NUMBER: _ClassVar[int]
    forward_id: str
    def __init__(self, forward_id: _Optional[str] = ...) -> None: ...

class ForwardStopResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForwardListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForwardListResponse(_message.Message):
    __slots__ = ("forwards",)
    FORWARDS_FIELD_NUMBER: _ClassVar[int]
    forwards: _containers.RepeatedCompositeFieldContainer[ForwardStatus]
    def __init__(self, forwards: _Optional[_Iterable[_Union[ForwardStatus, _Mapping]]] = ...) -> None: ...

class SshProxyStartRequest(_message.Message):
    __slots__ = ("listen", "authorized_keys", "password", "session_id")
    LISTEN_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZED_KEYS_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    listen: str
    authorized_keys: str
    password: str
    session_id: str
    def __init__(self, listen: _Optional[str] = ..., authorized_keys: _Optional[str] = ..., password: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class SshProxyStatus(_message.Message):
    __slots__ = ("address", "local_port", "host_key_fingerprint", "authorized_keys", "password", "connections_open", "connections_total", "connections_failed", "last_error")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PORT_FIELD_NUMBER: _ClassVar[int]
    HOST_KEY_FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZED_KEYS_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_OPEN_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FAILED_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    address: str
    local_port: int
    host_key_fingerprint: str
    authorized_keys: int
    password: bool
    connections_open: int
    connections_total: int
    connections_failed: int
    last_error: str
    def __init__(self, address: _Optional[str] = ..., local_port: _Optional[int] = ..., host_key_fingerprint: _Optional[str] = ..., authorized_keys: _Optional[int] = ..., password: _Optional[bool] = ..., connections_open: _Optional[int] = ..., connections_total: _Optional[int] = ..., connections_failed: _Optional[int] = ..., last_error: _Optional[str] = ...) -> None: ...

class SshProxyStopRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SshProxyStopResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FileDownloadRequest(_message.Message):
    __slots__ = ("service", "device", "remote_path", "protocol", "max_bytes")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PATH_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    service: ServiceRef
    device: str
    remote_path: str
    protocol: TransferProtocol
    max_bytes: int
    def __init__(self, service: _Optional[_Union[ServiceRef, _Mapping]] = ..., device: _Optional[str] = ..., remote_path: _Optional[str] = ..., protocol: _Optional[_Union[TransferProtocol, str]] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class FileDownloadEvent(_message.Message):
    __slots__ = ("started", "data", "done")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    started: FileTransferStarted
    data: bytes
    done: FileTransferResult
    def __init__(self, started: _Optional[_Union[FileTransferStarted, _Mapping]] = ..., data: _Optional[bytes] = ..., done: _Optional[_Union[FileTransferResult, _Mapping]] = ...) -> None: ...

class FileTransferStarted(_message.Message):
    __slots__ = ("protocol", "size")
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    protocol: TransferProtocol
    size: int
    def __init__(self, protocol: _Optional[_Union[TransferProtocol, str]] = ..., size: _Optional[int] = ...) -> None: ...

class FileUploadStart(_message.Message):
    __slots__ = ("service", "device", "remote_path", "protocol", "size", "mode")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    REMOTE_PATH_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    service: ServiceRef
    device: str
    remote_path: str
    protocol: TransferProtocol
    size: int
    mode: int
    def __init__(self, service: _Optional[_Union[ServiceRef, _Mapping]] = ..., device: _Optional[str] = ..., remote_path: _Optional[str] = ..., protocol: _Optional[_Union[TransferProtocol, str]] = ..., size: _Optional[int] = ..., mode: _Optional[int] = ...) -> None: ...

class FileUploadInput(_message.Message):
    __slots__ = ("start", "data")
    START_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    start: FileUploadStart
    data: bytes
    def __init__(self, start: _Optional[_Union[FileUploadStart, _Mapping]] = ..., data: _Optional[bytes] = ...) -> None: ...

class FileTransferResult(_message.Message):
    __slots__ = ("bytes", "protocol")
    BYTES_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    bytes: int
    protocol: TransferProtocol
    def __init__(self, bytes: _Optional[int] = ..., protocol: _Optional[_Union[TransferProtocol, str]] = ...) -> None: ...
