from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("session_id", "name", "username", "host", "port", "password", "fingerprint")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    name: str
    username: str
    host: str
    port: int
    password: str
    fingerprint: str
    def __init__(self, session_id: _Optional[str] = ..., name: _Optional[str] = ..., username: _Optional[str] = ..., host: _Optional[str] = ..., port: _Optional[int] = ..., password: _Optional[str] = ..., fingerprint: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("service", "devices", "commands", "timeout_ms")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    service: ServiceRef
    devices: _containers.RepeatedScalarFieldContainer[str]
    commands: _containers.RepeatedScalarFieldContainer[str]
    timeout_ms: int
    def __init__(self, service: _Optional[_Union[ServiceRef, _Mapping]] = ..., devices: _Optional[_Iterable[str]] = ..., commands: _Optional[_Iterable[str]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class ExecEvent(_message.Message):
    __slots__ = ("device", "output", "device_result")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_RESULT_FIELD_NUMBER: _ClassVar[int]
    device: int
    output: CommandOutput
    device_result: DeviceResult
    def __init__(self, device: _Optional[int] = ..., output: _Optional[_Union[CommandOutput, _Mapping]] = ..., device_result: _Optional[_Union[DeviceResult, _Mapping]] = ...) -> None: ...

class CommandOutput(_message.Message):
    __slots__ = ("command", "data")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    command: int
    data: bytes
    def __init__(self, command: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

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
    __slots__ = ("command", "output", "exit_status", "duration_us", "error")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    EXIT_STATUS_FIELD_NUMBER: _ClassVar[int]
    DURATION_US_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    command: int
    output: bytes
    exit_status: int
    duration_us: int
    error: str
    def __init__(self, command: _Optional[int] = ..., output: _Optional[bytes] = ..., exit_status: _Optional[int] = ..., duration_us: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("sessions", "named_services", "links", "version")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NAMED_SERVICES_FIELD_NUMBER: _ClassVar[int]
    LINKS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[SessionStatus]
    named_services: _containers.RepeatedCompositeFieldContainer[NamedServiceStatus]
    links: _containers.RepeatedCompositeFieldContainer[LinkStatus]
    version: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[SessionStatus, _Mapping]]] = ..., named_services: _Optional[_Iterable[_Union[NamedServiceStatus, _Mapping]]] = ..., links: _Optional[_Iterable[_Union[LinkStatus, _Mapping]]] = ..., version: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("link_id", "target", "principal", "transport", "state", "holders", "in_flight", "connects", "last_error", "fingerprint")
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
    def __init__(self, link_id: _Optional[str] = ..., target: _Optional[str] = ..., principal: _Optional[str] = ..., transport: _Optional[str] = ..., state: _Optional[str] = ..., holders: _Optional[int] = ..., in_flight: _Optional[int] = ..., connects: _Optional[int] = ..., last_error: _Optional[str] = ..., fingerprint: _Optional[str] = ...) -> None: ...
