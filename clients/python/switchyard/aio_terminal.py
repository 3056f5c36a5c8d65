"""An interactive shell on a device for asyncio code: the methods of
``switchyard.terminal.Terminal`` as coroutines, over one ``grpc.aio``
stream; the device's output is read by a task of the event loop.
``await term.attach_socket()`` hands the shell to pexpect (``fdspawn``,
with ``expect(..., async_=True)`` in asyncio code), pumped by tasks of the
loop, never a thread."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any, Optional, Union

import grpc

from .errors import SwitchyardError, TerminalClosedError
from ._core import (
    DEFAULT_PROMPT,
    MAX_BUFFER,
    Pattern,
    Wanted,
    any_output,
    cancelled,
    closed_error,
    command_output,
    keys_request,
    open_request,
    resize_request,
    take_found,
    until_delimiter,
    until_match,
    wait_left,
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
        #: After ``attach_socket``: our end of the socket pair, which gets
        #: the output instead of the buffer, and the task pumping its input.
        self._sink: Optional[socket.socket] = None
        self._pump: Optional["asyncio.Task[None]"] = None
        self._task = asyncio.get_running_loop().create_task(self._read_events())

    @classmethod
    async def open(cls, stub: rpc.BrokerAsyncStub, ref: pb.ServiceRef, device: str, cols: int,
                   rows: int, timeout: float,
                   convert: Callable[[grpc.RpcError], SwitchyardError]) -> "AsyncTerminal":
        """Opens the shell; raises when it is not open within ``timeout`` s."""
        call = stub.Terminal()
        term = cls(call, device, convert)
        try:
            await call.write(open_request(ref, device, cols, rows))
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
                    if not await self._buffered(event.data):
                        await self._to_sink(event.data)
                elif kind == "closed":
                    break
        except grpc.RpcError as err:
            if not cancelled(err):
                self._error = self._convert(err)
        except asyncio.CancelledError:
            pass
        finally:
            self._closed = True
            self._ready.set()
            async with self._cond:
                self._cond.notify_all()
            if self._sink is not None:
                try:
                    self._sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    async def _buffered(self, data: bytes) -> bool:
        """Keeps ``data`` for the read methods (waiting while the buffer is
        full); False when a socket is attached, which takes it instead."""
        async with self._cond:
            await self._cond.wait_for(lambda: len(self._buffer) <= MAX_BUFFER
                                      or self._closed or self._sink is not None)
            if self._sink is not None:
                return False
            self._buffer.extend(data)
            self._cond.notify_all()
            return True

    async def _to_sink(self, data: bytes) -> None:
        """Hands output to the attached socket (waiting while its reader is
        behind); a reader that went away ends the shell."""
        assert self._sink is not None
        try:
            await asyncio.get_running_loop().sock_sendall(self._sink, data)
        except OSError:
            self._call.cancel()

    async def write(self, data: Union[bytes, str]) -> None:
        """Sends keystrokes (str is encoded as UTF-8)."""
        if self._closed:
            raise closed_error(self.device)
        try:
            await self._call.write(keys_request(data))
        except grpc.RpcError as err:
            raise self._convert(err) from None

    async def resize(self, cols: int, rows: int) -> None:
        """Tells the device the window's new size."""
        await self._call.write(resize_request(cols, rows))

    async def _take_when(self, wanted: Wanted, timeout: Optional[float]) -> bytes:
        find, what = wanted
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self._cond:
            while True:
                taken = take_found(self._buffer, find)
                if taken is not None:
                    self._cond.notify_all()
                    return taken
                left = wait_left(self._buffer, self._closed, self._error, deadline,
                                 time.monotonic(), self.device, what, timeout)
                try:
                    await asyncio.wait_for(self._cond.wait(), left)
                except asyncio.TimeoutError:
                    pass

    async def read(self, n: int = -1, timeout: Optional[float] = None) -> bytes:
        """Up to ``n`` bytes (all buffered when ``n`` < 0), at least one;
        b"" once the shell ended and all was read."""
        try:
            return await self._take_when(any_output(n), timeout)
        except TerminalClosedError:
            return b""

    async def readuntil(self, delimiter: bytes, timeout: Optional[float] = None) -> bytes:
        """Everything up to and including ``delimiter``."""
        return await self._take_when(until_delimiter(delimiter), timeout)

    async def readline(self, timeout: Optional[float] = None) -> bytes:
        """One line, with its ``\\n``."""
        return await self.readuntil(b"\n", timeout)

    async def readuntil_regex(self, pattern: Pattern, timeout: Optional[float] = None) -> bytes:
        """Everything up to the end of the first match (MULTILINE)."""
        return await self._take_when(until_match(pattern), timeout)

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

    async def attach_socket(self) -> socket.socket:
        """A connected socket that carries the shell from now on, as the
        sync ``Terminal.attach_socket`` does: bytes written to it go to the
        device; the device's output (and whatever was still buffered) is
        read from it; it reads end of file when the shell closes. For
        ``pexpect.fdpexpect.fdspawn(sock)``. Both directions are pumped by
        tasks of the running loop. The read methods of this object are not
        to be used afterwards."""
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        loop = asyncio.get_running_loop()
        async with self._cond:
            # Holding the lock, the reader cannot add to the buffer: what was
            # buffered reaches the socket before anything newer.
            if self._buffer:
                await loop.sock_sendall(ours, bytes(self._buffer))
                self._buffer.clear()
            self._sink = ours
            self._cond.notify_all()
            if self._closed:
                ours.shutdown(socket.SHUT_WR)
        self._pump = loop.create_task(self._pump_socket(ours))
        return theirs

    async def _pump_socket(self, ours: socket.socket) -> None:
        """Sends what is written to the socket as keystrokes; its end (the
        other side closed) ends the shell."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(ours, 65536)
            except OSError:
                data = b""
            if not data:
                if not self._closed:
                    self._call.cancel()
                return
            try:
                await self.write(data)
            except (SwitchyardError, asyncio.InvalidStateError):
                return  # the shell ended: its reader sees the socket's end

    @property
    def closed(self) -> bool:
        """True once the shell ended."""
        return self._closed

    async def close(self) -> None:
        """Ends the shell and the call (and an attached socket's pump)."""
        if not self._closed:
            self._call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        if self._pump is not None and self._pump is not asyncio.current_task():
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        if self._sink is not None:
            self._sink.close()

    async def __aenter__(self) -> "AsyncTerminal":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
