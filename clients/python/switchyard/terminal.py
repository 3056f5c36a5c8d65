"""An interactive shell on a device, over the broker's ``Terminal`` RPC.

    with service.inventory["core-1"].terminal() as term:
        term.readuntil_regex(rb"#\\s*$", timeout=10)
        print(term.exec("show clock"))

Output from the device is buffered as it arrives (by one reader thread per
terminal); the read methods take from that buffer. ``attach_socket()``
hands the terminal to code that wants a file descriptor, such as
``pexpect.fdpexpect``.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Optional, Union

import grpc

from ._core import (  # re-exported: the terminal's public helpers
    DEFAULT_PROMPT as DEFAULT_PROMPT,
    MAX_BUFFER as MAX_BUFFER,
    Finder as Finder,
    Pattern as Pattern,
    command_output as command_output,
    compile_prompt as compile_prompt,
    find_any as find_any,
    find_delimiter as find_delimiter,
    find_regex as find_regex,
    Wanted,
    any_output,
    cancelled,
    closed_error,
    keys_request,
    open_request,
    resize_request,
    take_found,
    until_delimiter,
    until_match,
    wait_left,
)
from .errors import SwitchyardError, TerminalClosedError
from .v1 import broker_pb2 as pb
from .v1 import broker_pb2_grpc as rpc

class Terminal:
    """An open interactive shell. Methods: ``write``, ``read``,
    ``readline``, ``readuntil``, ``readuntil_regex``, ``readuntil_timeout``,
    ``exec``, ``resize``, ``attach_socket``, ``close``. Read timeouts are
    in seconds (None: wait for ever); a read that times out raises
    ``TimeoutError`` and keeps the unread bytes; one that finds the shell
    closed raises ``TerminalClosedError``."""

    def __init__(self, stub: rpc.BrokerStub, ref: pb.ServiceRef, device: str, cols: int,
                 rows: int, timeout: float,
                 convert: Callable[[grpc.RpcError], SwitchyardError]) -> None:
        self.device = device
        self._convert = convert
        self._input: "queue.Queue[Optional[pb.TerminalRequest]]" = queue.Queue()
        self._input.put(open_request(ref, device, cols, rows))
        self._buffer = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        self._error: Optional[SwitchyardError] = None
        self._sink: Optional[socket.socket] = None
        self._call: Any = stub.Terminal(self._requests())
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read_events, args=(ready,),
                                        name=f"switchyard-terminal-{device}", daemon=True)
        self._reader.start()
        if not ready.wait(timeout):
            self.close()
            raise TimeoutError(f"the terminal on {device} did not open within {timeout} s")
        if self._error is not None:
            raise self._error

    def _requests(self) -> Iterator[pb.TerminalRequest]:
        while True:
            item = self._input.get()
            if item is None:
                return
            yield item

    def _read_events(self, ready: threading.Event) -> None:
        try:
            for event in self._call:
                kind = event.WhichOneof("event")
                if kind == "ready":
                    ready.set()
                elif kind == "data":
                    self._deliver(event.data)
                elif kind == "closed":
                    break
        except grpc.RpcError as err:
            if not cancelled(err):
                self._error = self._convert(err)
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if self._sink is not None:
                try:
                    self._sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            ready.set()

    def _deliver(self, data: bytes) -> None:
        sink = self._sink
        if sink is not None:
            try:
                sink.sendall(data)
            except OSError:
                self.close()
            return
        with self._cond:
            while len(self._buffer) > MAX_BUFFER and not self._closed:
                self._cond.wait(1)
            self._buffer.extend(data)
            self._cond.notify_all()

    # -- writing -------------------------------------------------------------
    def write(self, data: Union[bytes, str]) -> None:
        """Sends keystrokes (str is encoded as UTF-8). Raises
        ``TerminalClosedError`` once the terminal is closed."""
        if self._closed:
            raise closed_error(self.device)
        self._input.put(keys_request(data))

    def resize(self, cols: int, rows: int) -> None:
        """Tells the device the window's new size."""
        self._input.put(resize_request(cols, rows))

    # -- reading -------------------------------------------------------------
    def _take_when(self, wanted: Wanted, timeout: Optional[float]) -> bytes:
        """Waits until what is ``wanted`` is in the unread output, then
        takes the bytes up to its end."""
        find, what = wanted
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                taken = take_found(self._buffer, find)
                if taken is not None:
                    self._cond.notify_all()
                    return taken
                self._cond.wait(wait_left(self._buffer, self._closed, self._error, deadline,
                                          time.monotonic(), self.device, what, timeout))

    def read(self, n: int = -1, timeout: Optional[float] = None) -> bytes:
        """Up to ``n`` bytes (all buffered when ``n`` < 0), waiting for at
        least one. Returns b"" once the terminal closed and all was read."""
        try:
            return self._take_when(any_output(n), timeout)
        except TerminalClosedError:
            if self._error is not None:
                raise self._error from None
            return b""

    def readuntil(self, delimiter: bytes, timeout: Optional[float] = None) -> bytes:
        """Everything up to and including ``delimiter``."""
        return self._take_when(until_delimiter(delimiter), timeout)

    def readline(self, timeout: Optional[float] = None) -> bytes:
        """One line, with its ``\\n``."""
        return self.readuntil(b"\n", timeout)

    def readuntil_regex(self, pattern: Pattern, timeout: Optional[float] = None) -> bytes:
        """Everything up to the end of the first match of ``pattern`` (bytes
        or compiled; searched with MULTILINE, so ``$`` matches at line ends
        and the end of the output so far)."""
        return self._take_when(until_match(pattern), timeout)

    def readuntil_timeout(self, timeout: float) -> bytes:
        """Everything that arrives within ``timeout`` seconds (for output
        with no end marker). Returns early only when the terminal closes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken = bytes(self._buffer)
            self._buffer.clear()
            self._cond.notify_all()
            return taken

    def exec(self, command: str, prompt: Pattern = DEFAULT_PROMPT,
             timeout: Optional[float] = 30.0) -> bytes:
        """Types ``command`` and Enter, and returns its output: the lines
        after the echoed command, up to (not including) the next prompt
        line."""
        self.write(command.encode() + b"\r")
        return command_output(command, self.readuntil_regex(prompt, timeout))

    # -- handing over ----------------------------------------------------------
    def attach_socket(self) -> socket.socket:
        """A connected socket that carries the terminal from now on: bytes
        written to it go to the device, the device's output (and whatever
        was still buffered) can be read from it; it reads end of file when
        the terminal closes. For ``pexpect.fdpexpect.fdspawn(sock)``. The
        read methods of this object are not to be used afterwards."""
        ours, theirs = socket.socketpair()
        with self._cond:
            if self._buffer:
                ours.sendall(bytes(self._buffer))
                self._buffer.clear()
            self._sink = ours
            if self._closed:
                ours.shutdown(socket.SHUT_WR)
        threading.Thread(target=self._pump_socket, args=(ours,),
                         name=f"switchyard-terminal-socket-{self.device}", daemon=True).start()
        return theirs

    def _pump_socket(self, ours: socket.socket) -> None:
        while True:
            try:
                data = ours.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.close()
                return
            try:
                self.write(data)
            except TerminalClosedError:
                return

    # -- closing ----------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once the shell ended."""
        return self._closed

    def close(self) -> None:
        """Ends the shell (the device sees its input end) and the call."""
        self._input.put(None)
        with self._cond:
            closed = self._closed
        if not closed:
            self._call.cancel()
        if threading.current_thread() is not self._reader:
            self._reader.join(timeout=5)

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Terminal {self.device} {'closed' if self._closed else 'open'}>"
