"""An interactive shell on a device for asyncio code: the methods of
``switchyard.terminal.Terminal`` as coroutines, over one ``grpc.aio``
stream; the device's output is read by a task of the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Optional, Union

import grpc
import grpc.aio

from .errors import SwitchyardError, TerminalClosedError
from .terminal import (
    DEFAULT_PROMPT,
    MAX_BUFFER,
    Finder,
    Pattern,
    command_output,
    compile_prompt,
    find_any,
    find_delimiter,
    find_regex,
)
from .v1 import broker_pb2 as pb
from .v1 import broker_pb2_grpc as rpc


class AsyncTerminal:
    """An open shell; create it with ``await device.terminal()``. Read
    timeouts are in seconds (None: for ever): ``TimeoutError`` keeps the
    unread output; ``TerminalClosedError`` when the shell ended first."""

    def __init__(self, call: Any, device: str,
                 convert: Callable[[grpc.RpcError], SwitchyardError]) -> None:
        self.device = device
        self._call = call
        self._convert = convert
        self._buffer = bytearray()
        self._cond = asyncio.Condition()
        self._closed = False
        self._error: Optional[SwitchyardError] = None
        self._ready = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read_events())

    @classmethod
    async def open(cls, stub: rpc.BrokerAsyncStub, ref: pb.ServiceRef, device: str, cols: int,
                   rows: int, timeout: float,
                   convert: Callable[[grpc.RpcError], SwitchyardError]) -> "AsyncTerminal":
        """Opens the shell; raises when it is not open within ``timeout`` s."""
        call = stub.Terminal()
        term = cls(call, device, convert)
        try:
            await call.write(pb.TerminalRequest(open=pb.TerminalOpen(
                service=ref, device=device, size=pb.WindowSize(cols=cols, rows=rows))))
            await asyncio.wait_for(term._ready.wait(), timeout)
        except asyncio.TimeoutError:
            await term.close()
            raise TimeoutError(f"the terminal on {device} did not open within {timeout} s") from None
        except grpc.RpcError as err:
            await term.close()
            raise convert(err) from None
        if term._error is not None:
            raise term._error
        return term

    async def _read_events(self) -> None:
        try:
            async for event in self._call:
                kind = event.WhichOneof("event")
                if kind == "ready":
                    self._ready.set()
                elif kind == "data":
                    async with self._cond:
                        await self._cond.wait_for(
                            lambda: len(self._buffer) <= MAX_BUFFER or self._closed)
                        self._buffer.extend(event.data)
                        self._cond.notify_all()
                elif kind == "closed":
                    break
        except grpc.RpcError as err:
            if not (isinstance(err, grpc.aio.AioRpcError)
                    and err.code() == grpc.StatusCode.CANCELLED):
                self._error = self._convert(err)
        except asyncio.CancelledError:
            pass
        finally:
            self._closed = True
            self._ready.set()
            async with self._cond:
                self._cond.notify_all()

    async def write(self, data: Union[bytes, str]) -> None:
        """Sends keystrokes (str is encoded as UTF-8)."""
        if self._closed:
            raise TerminalClosedError(f"the terminal on {self.device} is closed")
        try:
            await self._call.write(
                pb.TerminalRequest(data=data.encode() if isinstance(data, str) else data))
        except grpc.RpcError as err:
            raise self._convert(err) from None

    async def resize(self, cols: int, rows: int) -> None:
        """Tells the device the window's new size."""
        await self._call.write(pb.TerminalRequest(resize=pb.WindowSize(cols=cols, rows=rows)))

    async def _take_when(self, find: Finder, timeout: Optional[float], what: str) -> bytes:
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._cond:
            while True:
                end = find(self._buffer)
                if end is not None:
                    taken = bytes(self._buffer[:end])
                    del self._buffer[:end]
                    self._cond.notify_all()
                    return taken
                if self._closed:
                    if self._error is not None:
                        raise self._error
                    raise TerminalClosedError(
                        f"the terminal on {self.device} closed before {what}; unread: "
                        f"{bytes(self._buffer[-200:])!r}")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"no {what} from {self.device} within {timeout} s; "
                                       f"unread: {bytes(self._buffer[-200:])!r}")
                try:
                    await asyncio.wait_for(self._cond.wait(), left)
                except asyncio.TimeoutError:
                    pass

    async def read(self, n: int = -1, timeout: Optional[float] = None) -> bytes:
        """Up to ``n`` bytes (all buffered when ``n`` < 0), at least one;
        b"" once the shell ended and all was read."""
        try:
            return await self._take_when(find_any(n), timeout, "output")
        except TerminalClosedError:
            return b""

    async def readuntil(self, delimiter: bytes, timeout: Optional[float] = None) -> bytes:
        """Everything up to and including ``delimiter``."""
        return await self._take_when(find_delimiter(delimiter), timeout, repr(delimiter))

    async def readline(self, timeout: Optional[float] = None) -> bytes:
        """One line, with its ``\\n``."""
        return await self.readuntil(b"\n", timeout)

    async def readuntil_regex(self, pattern: Pattern, timeout: Optional[float] = None) -> bytes:
        """Everything up to the end of the first match (MULTILINE)."""
        regex = compile_prompt(pattern)
        return await self._take_when(find_regex(regex), timeout, f"match of {regex.pattern!r}")

    async def readuntil_timeout(self, timeout: float) -> bytes:
        """Everything that arrives within ``timeout`` seconds."""
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            pass
        async with self._cond:
            taken = bytes(self._buffer)
            self._buffer.clear()
            self._cond.notify_all()
            return taken

    async def exec(self, command: str, prompt: Pattern = DEFAULT_PROMPT,
                   timeout: Optional[float] = 30.0) -> bytes:
        """Types ``command`` and Enter; returns its output up to the prompt."""
        await self.write(command.encode() + b"\r")
        return command_output(command, await self.readuntil_regex(prompt, timeout))

    @property
    def closed(self) -> bool:
        """True once the shell ended."""
        return self._closed

    async def close(self) -> None:
        """Ends the shell and the call."""
        if not self._closed:
            self._call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def __aenter__(self) -> "AsyncTerminal":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
