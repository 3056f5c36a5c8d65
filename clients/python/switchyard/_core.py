"""What the sync and asyncio clients share: finding the socket, the
channel options, inventory set logic, exec result shapes, the fork
guard, and terminals' output matching and read deadlines. Nothing here
performs I/O on the broker."""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Dict, Generic, List, Optional, Sequence, Tuple, TypeVar, Union

import grpc

from .paths import default_socket as default_socket  # re-exported for sync and aio
from .errors import (ClientForkedError, ExecError, NotAvailableError, SwitchyardError,
                     TerminalClosedError, UnknownDevicesError)
from .v1 import broker_pb2 as pb

#: Channel options every client uses. gRPC core sends the socket path as
#: ``:authority``, which the broker's HTTP/2 stack refuses; it expects
#: "localhost" (see proto/switchyard/v1/broker.proto).
CHANNEL_OPTIONS: List[Tuple[str, Any]] = [("grpc.default_authority", "localhost")]

#: Commands given to exec: one command (results keyed by device only) or a
#: list of them.
Commands = Union[str, Sequence[str]]


class ForkGuard:
    """Remembers the process that opened a client. gRPC channels do not
    survive ``fork()``: using an inherited one can hang or fail with
    internal errors, so the child is refused at once instead."""

    def __init__(self) -> None:
        self.pid = os.getpid()

    def forked(self) -> bool:
        """True in a child process forked after the client was opened."""
        return os.getpid() != self.pid

    def check(self) -> None:
        """Raises ``ClientForkedError`` in a forked child."""
        if self.forked():
            raise ClientForkedError(
                f"this client was created in process {self.pid} and cannot be used in "
                f"process {os.getpid()} after fork(); create the client after forking "
                "(for example in the worker's start-up or lifespan handler)"
            )


@dataclass(frozen=True)
class ProxyInfo:
    """An HTTP proxy (``CONNECT``, optional Basic authentication), in the
    reference client's shape: ``url`` is ``http://HOST:PORT``; ``username``
    and ``password`` the proxy's credentials.

    ``service_direct(..., rpc_url=..., proxy=...)`` reaches the service's
    TCP listener through it; ``sso_login``, ``certificate_login`` and
    ``access_token_login`` reach the relay through it (its HTTPS requests,
    and its relay connection, then over TLS/TCP). The broker makes the
    connections; the password is sent to it beside the URL, never in it."""

    url: str
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)


def proxy_fields(proxy: Optional[ProxyInfo]) -> Tuple[str, str]:
    """``(proxy_url, proxy_password)`` of a ServiceDirect request: the user
    name goes into the URL, the password beside it (never into the URL)."""
    if proxy is None:
        return "", ""
    url = proxy.url if "://" in proxy.url else f"http://{proxy.url}"
    if proxy.username:
        scheme, rest = url.split("://", 1)
        if "@" not in rest.split("/", 1)[0]:
            url = f"{scheme}://{urllib.parse.quote(proxy.username, safe='')}@{rest}"
    return url, proxy.password or ""


def rpc_url_target(rpc_url: str) -> str:
    """The broker's name for an ``rpc_url``'s link (its ``status`` target):
    ``https://HOST:PORT/PATH``, port 8081 and path ``/rpc`` when left out."""
    parts = urllib.parse.urlsplit(rpc_url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    path = parts.path if parts.path not in ("", "/") else "/rpc"
    return f"https://{host}:{parts.port or 8081}{path}"


class ExecStatus(str, Enum):
    """Outcome of a command, a device, or a whole exec request."""

    #: Still running (a request only).
    PROCESSING = "PROCESSING"
    #: Everything succeeded.
    SUCCESS = "SUCCESS"
    #: Some devices succeeded and some failed (a request only).
    PARTIAL_SUCCESS = "PARTIAL_SUCCESS"
    #: Nothing succeeded.
    FAILURE = "FAILURE"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


SUCCESS = ExecStatus.SUCCESS
PARTIAL_SUCCESS = ExecStatus.PARTIAL_SUCCESS
FAILURE = ExecStatus.FAILURE


def overall(statuses: Iterable[ExecStatus]) -> ExecStatus:
    """SUCCESS when all succeeded, FAILURE when none did (or there were
    none), else PARTIAL_SUCCESS."""
    values = list(statuses)
    ok = sum(1 for s in values if s == SUCCESS)
    if values and ok == len(values):
        return SUCCESS
    return PARTIAL_SUCCESS if ok else FAILURE


# -- inventory -------------------------------------------------------------


class DeviceAttributes(Dict[str, str]):
    """A device's free-form attributes (a dict), with the reference
    client's views: ``internal`` (the inventory's fields and the
    attributes), ``metadata`` (the attributes) and ``ephemeral`` (always
    empty: the broker keeps none)."""

    def __init__(self, fields: Mapping[str, str], attributes: Mapping[str, str]) -> None:
        super().__init__(attributes)
        self._fields = dict(fields)

    @property
    def internal(self) -> Dict[str, str]:
        """The device's name, host, port and device_type, then its attributes."""
        merged = dict(self._fields)
        merged.update(self)
        return merged

    @property
    def metadata(self) -> Dict[str, str]:
        """The free-form attributes."""
        return dict(self)

    @property
    def ephemeral(self) -> Dict[str, str]:
        """Empty: the broker keeps no per-session attributes."""
        return {}


class DeviceInfo:
    """One device of a service's inventory: ``name``, ``host``, ``port``,
    ``device_type`` and free-form ``attributes``."""

    def __init__(self, d: pb.Device) -> None:
        self.name: str = d.name
        self.host: str = d.host
        self.port: int = d.port
        self.device_type: str = d.device_type
        self.attributes = DeviceAttributes(
            {"name": d.name, "host": d.host, "port": str(d.port), "device_type": d.device_type},
            d.attributes,
        )

    def __repr__(self) -> str:
        return f"<Device {self.name} {self.device_type} {self.host}:{self.port}>"

    def field(self, attr: str) -> Optional[str]:
        """A field (name, host, port, device_type) or attribute, as text;
        None when the device has neither."""
        if attr in ("name", "host", "port", "device_type"):
            return str(getattr(self, attr))
        return self.attributes.get(attr)


D = TypeVar("D", bound=DeviceInfo)
S = TypeVar("S", bound="DeviceSet[Any]")


class DeviceSet(Mapping[str, D], Generic[D]):
    """Devices by name: a read-only dict with the reference client's
    selection methods. Every method returns a new set of the same kind;
    none changes this one. ``_failed`` names devices whose last exec
    failed as a whole (unreachable, refused), for ``exclude_failed()``."""

    def __init__(self, devices: Mapping[str, D], failed: Optional[set[str]] = None) -> None:
        self._devices = dict(sorted(devices.items()))
        self._failed: set[str] = failed if failed is not None else set()

    def _new(self: S, devices: Mapping[str, D]) -> S:
        clone = type(self).__new__(type(self))
        clone.__dict__.update(self.__dict__)
        DeviceSet.__init__(clone, devices, self._failed)
        return clone

    def __getitem__(self, name: str) -> D:
        return self._devices[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._devices)

    def __len__(self) -> int:
        return len(self._devices)

    def __repr__(self) -> str:
        rows = "\n".join(f"  {d!r}" for d in self._devices.values())
        return f"<{type(self).__name__} of {len(self)} devices>\n{rows}"

    def filter(self: S, attr: str, pattern: str) -> S:
        """Devices whose field (``name``, ``host``, ``port``,
        ``device_type``) or attribute matches the regular expression
        ``pattern`` anywhere (``re.search``): ``filter("device_type",
        "IOS")`` keeps IOS and IOS-XE devices. Raises ``re.error`` for a
        malformed pattern."""
        regex = re.compile(pattern)

        def keep(d: D) -> bool:
            value = d.field(attr)
            return value is not None and regex.search(value) is not None

        return self._new({n: d for n, d in self._devices.items() if keep(d)})

    def subset(self: S, names: Iterable[str]) -> S:
        """The devices named. Raises ``UnknownDevicesError`` (a
        ``KeyError``) naming every name that is not in this set."""
        wanted = [names] if isinstance(names, str) else list(names)
        unknown = sorted({n for n in wanted if n not in self._devices})
        if unknown:
            raise UnknownDevicesError(unknown, sorted(self._devices))
        return self._new({n: self._devices[n] for n in wanted})

    def exclude_failed(self: S) -> S:
        """This set without the devices whose last exec (through this
        service handle) failed as a whole: unreachable, refused, unknown."""
        return self._new({n: d for n, d in self._devices.items() if n not in self._failed})

    def _exec_target(self) -> Tuple[D, List[str]]:
        """For ``exec`` on this set: a device (its service runs the exec)
        and every name. ``ValueError`` for an empty set."""
        if not self._devices:
            raise ValueError("exec on an empty set of devices")
        return next(iter(self._devices.values())), list(self._devices)

    def singleton(self) -> D:
        """The only device of this set; ``ValueError`` unless it has exactly
        one."""
        if len(self._devices) != 1:
            raise ValueError(f"singleton() needs exactly one device; this set has {len(self)}: "
                             f"{', '.join(self._devices) or 'none'}")
        return next(iter(self._devices.values()))

    # Set operations, by device name; the left operand's device objects win.
    def union(self: S, other: Mapping[str, D]) -> S:
        """Devices in either set (``a | b``)."""
        merged = dict(other)
        merged.update(self._devices)
        return self._new(merged)

    def intersection(self: S, other: Mapping[str, D]) -> S:
        """Devices in both sets (``a & b``)."""
        return self._new({n: d for n, d in self._devices.items() if n in other})

    def difference(self: S, other: Mapping[str, D]) -> S:
        """Devices of this set not in the other (``a - b``)."""
        return self._new({n: d for n, d in self._devices.items() if n not in other})

    def symmetric_difference(self: S, other: Mapping[str, D]) -> S:
        """Devices in exactly one of the sets (``a ^ b``)."""
        mine = {n: d for n, d in self._devices.items() if n not in other}
        mine.update({n: d for n, d in other.items() if n not in self._devices})
        return self._new(mine)

    def __or__(self: S, other: Mapping[str, D]) -> S:
        return self.union(other)

    def __and__(self: S, other: Mapping[str, D]) -> S:
        return self.intersection(other)

    def __sub__(self: S, other: Mapping[str, D]) -> S:
        return self.difference(other)

    def __xor__(self: S, other: Mapping[str, D]) -> S:
        return self.symmetric_difference(other)


# -- exec results ----------------------------------------------------------


# Output chunks an ExecRequest made with stream=True holds for its consumer
# before it stops reading the broker (and so the device).
STREAM_QUEUE = 64


class OutputChunk:
    """A piece of a command's output as it arrived from the device
    (``ExecRequest.chunks()``): ``device`` and ``command`` names, ``data``
    (the bytes exactly), ``stderr`` (True for the command's standard
    error)."""

    __slots__ = ("device", "command", "data", "stderr")

    def __init__(self, device: str, command: str, data: bytes, stderr: bool) -> None:
        self.device = device
        self.command = command
        self.data = data
        self.stderr = stderr

    def __repr__(self) -> str:
        stream = "stderr" if self.stderr else "stdout"
        return f"<OutputChunk {self.device} {self.command!r} {stream} {len(self.data)} bytes>"


class CommandResult:
    """One command's outcome on one device: ``status`` (SUCCESS or
    FAILURE), ``status_message`` (why it failed, else empty), ``data``
    (the output text, decoded as UTF-8 with invalid bytes replaced by
    U+FFFD; raises ``ExecError`` for a failure), ``raw`` / ``output_bytes``
    (the stdout bytes exactly, also of a failure), ``stderr`` (the stderr
    bytes exactly; SSH devices keep it apart, shells cannot),
    ``exit_status`` when the device reports one."""

    def __init__(self, device: str, command: str, status: ExecStatus, output: bytes,
                 exit_status: Optional[int], error: str, stderr: bytes = b"") -> None:
        self.device = device
        self.command = command
        self.status = status
        self.exit_status = exit_status
        self.error = error
        self.raw = output
        self.stderr = stderr

    @property
    def output_bytes(self) -> bytes:
        """The command's stdout bytes exactly (the same as ``raw``)."""
        return self.raw

    @property
    def status_message(self) -> str:
        """Why the command failed; empty on success."""
        if self.status == SUCCESS:
            return ""
        return self.error or f"exit status {self.exit_status}"

    @property
    def data(self) -> str:
        """The command's output. Raises ExecError if the command failed."""
        if self.status != SUCCESS:
            raise ExecError(f"{self.command!r} failed on {self.device}: {self.status_message}")
        return self.raw.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<CommandResult {self.device} {self.command!r} {self.status}>"


class DeviceResult(Mapping[str, CommandResult]):
    """A device's results, by command: ``result[device][command].data``.
    ``status`` is SUCCESS when every command succeeded; ``status_message``
    says why not; ``data`` is the output of all commands (one command:
    its output), raising ``ExecError`` for a failure."""

    def __init__(self, device: str, status: ExecStatus, error: str,
                 commands: Mapping[str, CommandResult]) -> None:
        self.device = device
        self.status = status
        self.error = error
        self._commands = dict(commands)

    def __getitem__(self, command: str) -> CommandResult:
        return self._commands[command]

    def __iter__(self) -> Iterator[str]:
        return iter(self._commands)

    def __len__(self) -> int:
        return len(self._commands)

    @property
    def status_message(self) -> str:
        """Why the device (or one of its commands) failed; empty on success."""
        if self.error:
            return self.error
        failed = [c for c in self._commands.values() if c.status != SUCCESS]
        return "; ".join(f"{c.command!r}: {c.status_message}" for c in failed)

    @property
    def data(self) -> str:
        """All commands' output, in order. Raises ExecError if any failed."""
        if self.error:
            raise ExecError(f"{self.device} failed: {self.error}")
        return "".join(c.data for c in self._commands.values())

    def __repr__(self) -> str:
        return f"<DeviceResult {self.device} {self.status} {list(self._commands)}>"


class ExecResponse(Mapping[str, DeviceResult]):
    """An exec's results by device name, with the request's overall
    ``status`` (SUCCESS, PARTIAL_SUCCESS or FAILURE) and
    ``status_message``."""

    def __init__(self, results: Mapping[str, DeviceResult], error: str = "") -> None:
        self._results = dict(results)
        self._error = error

    def __getitem__(self, device: str) -> DeviceResult:
        return self._results[device]

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    @property
    def status(self) -> ExecStatus:
        """SUCCESS, PARTIAL_SUCCESS or FAILURE over the devices."""
        return overall(r.status for r in self._results.values())

    @property
    def status_message(self) -> str:
        """Failed devices and why, one per line; empty when all succeeded."""
        lines = [f"{n}: {r.status_message}" for n, r in self._results.items() if r.status != SUCCESS]
        if self._error:
            lines.insert(0, self._error)
        return "\n".join(lines)

    def exclude_failed(self) -> "ExecResponse":
        """Only the devices that succeeded."""
        return ExecResponse({n: r for n, r in self._results.items() if r.status == SUCCESS})

    def __repr__(self) -> str:
        return f"<ExecResponse {self.status} {dict((n, str(r.status)) for n, r in self._results.items())}>"


class ExecCollector:
    """Turns a stream of ``ExecEvent`` into results. Output chunks of a
    command are joined with its inline output (unless ``keep_output`` is
    False: then only ``chunk()`` sees them); each device's result arrives
    once; ``summary`` is the request's closing ``ExecSummary``."""

    def __init__(self, devices: Sequence[str], commands: Sequence[str],
                 keep_output: bool = True) -> None:
        # A device named twice runs once (the service merges repeats), so
        # event indices refer to this de-duplicated list.
        self.devices = list(dict.fromkeys(devices))
        self.commands = list(commands)
        self.results: dict[str, DeviceResult] = {}
        self.summary: Optional[pb.ExecSummary] = None
        self._keep = keep_output
        self._chunks: dict[tuple[int, int, bool], bytearray] = {}

    def chunks(self, event: pb.ExecEvent) -> List[OutputChunk]:
        """The output an event carries, as chunks: an ``output`` event's
        piece, or the inline remainders of a ``device_result``."""
        if event.device >= len(self.devices):
            return []
        device = self.devices[event.device]
        kind = event.WhichOneof("event")
        if kind == "output":
            o = event.output
            if o.command >= len(self.commands):
                return []
            return [OutputChunk(device, self.commands[o.command], o.data, o.stderr)]
        if kind != "device_result":
            return []
        found = []
        for c in event.device_result.commands:
            if c.command >= len(self.commands):
                continue
            for data, stderr in ((c.output, False), (c.stderr, True)):
                if data:
                    found.append(OutputChunk(device, self.commands[c.command], data, stderr))
        return found

    def feed(self, event: pb.ExecEvent) -> Optional[DeviceResult]:
        """Takes one event; returns the device's result when it ended."""
        kind = event.WhichOneof("event")
        if kind == "summary":
            self.summary = event.summary
            return None
        if event.device >= len(self.devices):
            return None
        if kind == "output":
            if self._keep:
                key = (event.device, event.output.command, event.output.stderr)
                self._chunks.setdefault(key, bytearray()).extend(event.output.data)
            return None
        if kind != "device_result":
            return None
        result = self._device_result(event.device, event.device_result)
        self.results[result.device] = result
        return result

    def _device_result(self, index: int, r: pb.DeviceResult) -> DeviceResult:
        name = self.devices[index]
        commands: dict[str, CommandResult] = {}
        for c in r.commands:
            if c.command >= len(self.commands):
                continue
            output = bytes(self._chunks.pop((index, c.command, False), b""))
            stderr = bytes(self._chunks.pop((index, c.command, True), b""))
            if self._keep:
                output += c.output
                stderr += c.stderr
            exit_status = c.exit_status if c.HasField("exit_status") else None
            ok = not c.error and exit_status in (None, 0)
            cmd = self.commands[c.command]
            commands[cmd] = CommandResult(name, cmd, SUCCESS if ok else FAILURE, output,
                                          exit_status, c.error, stderr)
        ok = not r.error and all(x.status == SUCCESS for x in commands.values())
        return DeviceResult(name, SUCCESS if ok else FAILURE, r.error, commands)

    def response(self, error: str = "") -> ExecResponse:
        """The results so far. With ``error`` (the request failed as a
        whole), devices without a result are listed as failed with it."""
        results = dict(self.results)
        if error:
            for name in self.devices:
                results.setdefault(name, DeviceResult(name, FAILURE, error, {}))
        return ExecResponse({n: results[n] for n in self.devices if n in results}, error)


@dataclass(frozen=True)
class ExecArgs:
    """What ``exec(...)`` was asked to do, as its arguments say (see
    ``switchyard.sync.Inventory.exec``)."""

    commands: Commands
    timeout: Optional[float] = None
    reset_before: bool = False
    reset_after: bool = False
    sudo: bool = False
    stream: bool = False
    max_output: Optional[int] = None


def exec_request(ref: pb.ServiceRef, devices: Sequence[str], commands: Sequence[str],
                 args: ExecArgs) -> pb.ExecRequest:
    """Builds an ExecRequest. ``timeout`` is per command, in seconds (None
    or 0: the service's default). ``reset_before``/``reset_after`` go to
    the service (``ExecRequest.reset_before``/``reset_after``): on devices
    whose commands run in a warm shell (IOS-XE and ASA by default, a device
    set to ``session shell``, Telnet devices), ``reset_before`` closes the
    device's idle shells and runs the commands in a newly opened one, and
    ``reset_after`` closes the shell afterwards instead of keeping it warm,
    so a mode a command leaves (``configure terminal``, ``disable``,
    ``cd``) does not reach the next exec. Where commands run on exec
    channels (SSH devices by default: each command gets a new channel, a
    session of its own on the device) or on the in-process simulator (a
    fresh CLI per exec), every exec starts fresh anyway. ``sudo`` (run
    with raised privileges) raises ``NotAvailableError``: device
    credentials are the service's, and the broker has no way to ask for
    more."""
    if args.sudo:
        raise NotAvailableError(
            "sudo=True: Switchyard runs commands with the device account the service holds; "
            "it cannot raise privileges (put the privileged command in the command itself)"
        )
    timeout, max_output = args.timeout, args.max_output
    if timeout is not None and timeout < 0:
        raise ValueError(f"timeout must be >= 0 seconds, not {timeout}")
    if max_output is not None and max_output <= 0:
        raise ValueError(f"max_output must be a positive number of bytes, not {max_output}")
    return pb.ExecRequest(
        service=ref,
        devices=list(dict.fromkeys(devices)),
        commands=list(commands),
        timeout_ms=int(timeout * 1000) if timeout else 0,
        max_output_bytes=max_output or 0,
        reset_before=args.reset_before,
        reset_after=args.reset_after,
    )


class ExecBase:
    """What the sync and asyncio ``ExecRequest`` share: the request built
    from the arguments, the results gathered from the events, the devices
    that failed as a whole noted on the service handle (for
    ``exclude_failed()``), and the outcome. Each flavour reads the events
    (a thread, or a task) and waits in its own way."""

    _collector: ExecCollector
    _failed: set[str]
    _error: Optional[SwitchyardError]
    _streaming: bool

    def _start(self, ref: pb.ServiceRef, failed: set[str], devices: Sequence[str],
               args: ExecArgs) -> pb.ExecRequest:
        """Sets the request up; returns the message to send."""
        self._collector = ExecCollector(devices, command_list(args.commands),
                                        keep_output=not args.stream)
        self._failed = failed
        self._error = None
        self._streaming = args.stream
        return exec_request(ref, devices, self._collector.commands, args)

    def _take(self, event: pb.ExecEvent) -> List[OutputChunk]:
        """Takes one event; returns the output it carries for ``chunks()``
        (only with ``stream=True``)."""
        chunks = self._collector.chunks(event) if self._streaming else []
        result = self._collector.feed(event)
        if result is not None:
            (self._failed.add if result.error else self._failed.discard)(result.device)
        return chunks

    def _outcome(self, done: bool) -> "ExecStatus":
        """PROCESSING until ``done``; then SUCCESS, PARTIAL_SUCCESS or FAILURE."""
        if not done:
            return ExecStatus.PROCESSING
        return FAILURE if self._error is not None else self._collector.response().status

    def _results(self, full: bool) -> "ExecResponse":
        """The results of a finished request: raising its error unless
        ``full``, which lists devices without a result as failed."""
        if not full and self._error is not None:
            raise self._error
        return self._collector.response(str(self._error) if self._error else "")


def command_list(commands: Commands) -> List[str]:
    """One command or a list, as a list; refuses an empty list."""
    listed = [commands] if isinstance(commands, str) else list(commands)
    if not listed:
        raise ValueError("exec needs at least one command")
    return listed


#: What ``Service.capabilities`` reports: the operations the broker API
#: offers on every service.
CAPABILITIES = frozenset({"inventory", "exec", "terminal"})


def listen_address(local_address: str, local_port: int) -> str:
    """A forward's or SOCKS5 proxy's ``listen`` field: ``ADDRESS:PORT``
    (an IPv6 address in brackets)."""
    host = f"[{local_address}]" if ":" in local_address else local_address
    return f"{host}:{local_port}"


def socks_proxy_request(ref: pb.ServiceRef, local_port: int, local_address: str,
                        username: Optional[str], password: Optional[str]
                        ) -> pb.SocksProxyStartRequest:
    """The ``SocksProxyStart`` request; username and password go together."""
    if (username is None) != (password is None):
        raise ValueError("give both a SOCKS5 username and a password, or neither")
    return pb.SocksProxyStartRequest(
        service=ref, listen=listen_address(local_address, local_port),
        username=username or "", password=password or "")


def link_state_name(state: str) -> str:
    """A broker link state as the reference's service status word."""
    return {"up": "READY", "idle": "READY"}.get(state, state.upper().replace(" ", "_"))


@dataclass(frozen=True)
class LinkKey:
    """How to find a service handle's link in the broker's status: its
    transport ("direct", "integrated", "relayed", "direct-sso"), its target
    (``host:port``, ``integrated:DB``, or a cloud serial, which prefixes the
    target's label) and, for direct links, the remote user."""

    transport: str
    target: str
    principal: Optional[str] = None

    def matches(self, link: pb.LinkStatus) -> bool:
        """True when ``link`` is this handle's link."""
        if self.transport in ("relayed", "direct-sso"):
            target_ok = link.target.startswith(self.target + " (")
        else:
            target_ok = link.target == self.target
        return (
            target_ok
            and link.transport == self.transport
            and (self.principal is None or link.principal == self.principal)
        )

    def find(self, status: pb.StatusResponse) -> Optional[pb.LinkStatus]:
        """The matching link in ``status``, if the broker lists one."""
        return next((link for link in status.links if self.matches(link)), None)


# -- terminals ----------------------------------------------------------------
# The pure parts of ``terminal.Terminal`` and ``aio_terminal.AsyncTerminal``:
# what to wait for in the unread output, and when to stop waiting.

#: A prompt at the end of output: ``name#``, ``name>`` or ``$``, then
#: optional spaces. What ``exec()`` waits for by default.
DEFAULT_PROMPT = rb"[#>$]\s*$"

#: Most bytes kept unread before the reader stops taking output (the
#: device then waits): bounds memory when nobody reads.
MAX_BUFFER = 4 * 1024 * 1024

Pattern = Union[bytes, "re.Pattern[bytes]"]

#: Given the unread output, where what is wanted ends (None: not there yet).
Finder = Callable[[bytearray], Optional[int]]


def find_any(n: int) -> Finder:
    """Up to ``n`` bytes (all when ``n`` < 0), once there is at least one."""
    return lambda b: (len(b) if n < 0 else min(n, len(b))) if b else None


def find_delimiter(delimiter: bytes) -> Finder:
    """Up to and including ``delimiter``."""
    def find(b: bytearray) -> Optional[int]:
        at = b.find(delimiter)
        return None if at < 0 else at + len(delimiter)

    return find


def compile_prompt(pattern: Pattern) -> "re.Pattern[bytes]":
    """A bytes pattern compiled with MULTILINE (``$`` matches at line ends)."""
    return pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, re.MULTILINE)


def find_regex(regex: "re.Pattern[bytes]") -> Finder:
    """Up to the end of the first match."""
    def find(b: bytearray) -> Optional[int]:
        match = regex.search(b)
        return None if match is None else match.end()

    return find


#: What a read waits for: where it ends in the unread output, and how an
#: error names it.
Wanted = Tuple[Finder, str]


def any_output(n: int) -> Wanted:
    """``read(n)``: up to ``n`` bytes (all when ``n`` < 0), at least one."""
    return find_any(n), "output"


def until_delimiter(delimiter: bytes) -> Wanted:
    """``readuntil``: up to and including ``delimiter``."""
    return find_delimiter(delimiter), repr(delimiter)


def until_match(pattern: Pattern) -> Wanted:
    """``readuntil_regex``: up to the end of the first match (MULTILINE)."""
    regex = compile_prompt(pattern)
    return find_regex(regex), f"match of {regex.pattern!r}"


def open_request(ref: pb.ServiceRef, device: str, cols: int, rows: int) -> pb.TerminalRequest:
    """The first message of a ``Terminal`` call: which shell, what size."""
    return pb.TerminalRequest(open=pb.TerminalOpen(
        service=ref, device=device, size=pb.WindowSize(cols=cols, rows=rows)))


def keys_request(data: Union[bytes, str]) -> pb.TerminalRequest:
    """Keystrokes (str is encoded as UTF-8)."""
    return pb.TerminalRequest(data=data.encode() if isinstance(data, str) else data)


def resize_request(cols: int, rows: int) -> pb.TerminalRequest:
    """The window's new size."""
    return pb.TerminalRequest(resize=pb.WindowSize(cols=cols, rows=rows))


def closed_error(device: str) -> TerminalClosedError:
    """What writing to a closed terminal raises."""
    return TerminalClosedError(f"the terminal on {device} is closed")


def rpc_code(err: grpc.RpcError) -> Optional[grpc.StatusCode]:
    """The status code of a failed call (sync or asyncio), if it has one."""
    code = getattr(err, "code", None)
    return code() if callable(code) else None


def cancelled(err: grpc.RpcError) -> bool:
    """Whether a failed call (sync or asyncio) was cancelled by this side."""
    return rpc_code(err) == grpc.StatusCode.CANCELLED


def command_output(command: str, text: bytes) -> bytes:
    """What ``exec`` returns from the text read up to the prompt: the lines
    after the echoed command, without the prompt line."""
    lines = text.splitlines(keepends=True)
    if lines and command.encode() in lines[0]:
        lines = lines[1:]
    return b"".join(lines[:-1])


def take_found(buffer: bytearray, find: Finder) -> Optional[bytes]:
    """The unread bytes up to where ``find`` says what is wanted ends,
    removed from ``buffer``; None when it is not there yet."""
    end = find(buffer)
    if end is None:
        return None
    taken = bytes(buffer[:end])
    del buffer[:end]
    return taken


def wait_left(buffer: bytearray, closed: bool, error: Optional[SwitchyardError],
              deadline: Optional[float], now: float, device: str, what: str,
              timeout: Optional[float]) -> Optional[float]:
    """How long a read may still wait for ``what`` (None: for ever), or why
    it may not: the shell's error, ``TerminalClosedError`` once it closed,
    ``TimeoutError`` past ``deadline``. Errors quote the last unread bytes."""
    if closed:
        if error is not None:
            raise error
        raise TerminalClosedError(
            f"the terminal on {device} closed before {what}; unread: {bytes(buffer[-200:])!r}")
    left = None if deadline is None else deadline - now
    if left is not None and left <= 0:
        raise TimeoutError(f"no {what} from {device} within {timeout} s; "
                           f"unread: {bytes(buffer[-200:])!r}")
    return left
