"""File transfer from the SDK: ``Device.sftp_download_to_file``,
``sftp_upload_from_file``, ``scp_download_to_file``, ``scp_upload_from_file``.

The service runs SFTP or SCP against the device; the bytes stream through
the broker (``FileDownload`` / ``FileUpload``) in chunks of 256 KiB with
back-pressure. Each call returns a ``FileTransfer`` at once: the copy runs
in a thread of its own; ``wait()`` blocks until it ends and raises its
error, ``bytes_transferred`` counts as it goes. The asyncio client's
``AsyncFileTransfer`` is the same copy as a task (``await transfer.wait()``);
both share the request shapes and the temporary-file handling here.

A download is written to a hidden temporary file beside the target
(``.NAME.XXXXXX.part``), fsynced and renamed over the target only when the
last byte came; on any failure the temporary file is removed, so the target
name never holds a partial file.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from typing import Any, Optional

import grpc

from .errors import SwitchyardError, from_rpc
from .v1 import broker_pb2 as pb
from .v1 import broker_pb2_grpc as rpc

#: Bytes per upload message.
CHUNK = 256 * 1024

_NAMES = {pb.TRANSFER_PROTOCOL_SFTP: "sftp", pb.TRANSFER_PROTOCOL_SCP: "scp"}


class FileTransfer:
    """One file copy running in the background."""

    def __init__(self, what: str, run: Callable[["FileTransfer"], None]) -> None:
        self._what = what
        self._bytes = 0
        self._error: Optional[BaseException] = None
        #: ``"sftp"`` or ``"scp"`` once the transfer has started.
        self.protocol: Optional[str] = None
        self._thread = threading.Thread(target=self._main, args=(run,), daemon=True,
                                        name=f"switchyard {what}")
        self._thread.start()

    def __repr__(self) -> str:
        state = "done" if self.done else "running"
        return f"<FileTransfer {self._what} {state} {self._bytes} bytes>"

    def _main(self, run: Callable[["FileTransfer"], None]) -> None:
        try:
            run(self)
        except BaseException as err:  # kept for wait(), which raises it
            self._error = err

    def _add(self, n: int) -> None:
        self._bytes += n

    @property
    def bytes_transferred(self) -> int:
        """File bytes copied so far (all of them once ``wait()`` returned)."""
        return self._bytes

    @property
    def done(self) -> bool:
        """Whether the copy has ended (successfully or not)."""
        return not self._thread.is_alive()

    def wait(self, timeout: Optional[float] = None) -> "FileTransfer":
        """Blocks until the copy ends (at most ``timeout`` seconds: then
        ``TimeoutError``); raises its ``SwitchyardError`` (the message names
        the device and path) if it failed."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"{self._what} still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self


def download_target(local_path: str, remote_path: str) -> str:
    """Where a download lands: ``local_path``, or in it under the remote
    file's name when it is a directory."""
    target = os.path.abspath(local_path)
    if os.path.isdir(target):
        target = os.path.join(target, os.path.basename(remote_path.rstrip("/")) or "file")
    return target


def upload_plan(local_path: str, remote_path: str) -> tuple[str, int, int]:
    """An upload's remote path (one ending in ``/`` takes the local file's
    name), the local file's size and its permission bits."""
    if remote_path.endswith("/") or not remote_path:
        remote_path += os.path.basename(local_path)
    st = os.stat(local_path)
    return remote_path, st.st_size, st.st_mode & 0o777


class _Part:
    """A download's hidden temporary file beside ``target``
    (``.NAME.XXXXXX.part``): ``commit()`` fsyncs it and renames it over the
    target (then fsyncs the directory); ``discard()`` removes it."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.folder = os.path.dirname(target)
        fd, self.path = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.",
                                         suffix=".part", dir=self.folder)
        self.file = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.path, self.target)
        dir_fd = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def discard(self) -> None:
        self.file.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def _download_event(t: "FileTransfer | AsyncFileTransfer", part: _Part,
                    event: pb.FileDownloadEvent) -> Optional[pb.FileTransferResult]:
    """Applies one download event; the ``done`` event when it is one."""
    kind = event.WhichOneof("event")
    if kind == "started":
        t.protocol = _NAMES.get(event.started.protocol)
    elif kind == "data":
        part.file.write(event.data)
        t._add(len(event.data))
    elif kind == "done":
        return event.done
    return None


def _check_done(done: Optional[pb.FileTransferResult], got: int, device: str, remote_path: str) -> None:
    if done is None or done.bytes != got:
        raise SwitchyardError(f"the copy of {device}:{remote_path} ended early; nothing was kept")


def download(stub: rpc.BrokerStub, socket: str, service: pb.ServiceRef, device: str,
             remote_path: str, local_path: str, protocol: "pb.TransferProtocol",
             max_bytes: Optional[int] = None) -> FileTransfer:
    """Starts copying ``device:remote_path`` to ``local_path`` (a directory
    takes the remote file's name)."""
    target = download_target(local_path, remote_path)
    request = pb.FileDownloadRequest(service=service, device=device, remote_path=remote_path,
                                     protocol=protocol, max_bytes=max_bytes or 0)

    def run(t: FileTransfer) -> None:
        part = _Part(target)
        try:
            done = None
            try:
                for event in stub.FileDownload(request):
                    done = _download_event(t, part, event)
                    if done is not None:
                        break
            except grpc.RpcError as err:
                raise from_rpc(err, socket) from None
            _check_done(done, t.bytes_transferred, device, remote_path)
            part.commit()
        except BaseException:
            part.discard()
            raise

    return FileTransfer(f"download {device}:{remote_path}", run)


def upload(stub: rpc.BrokerStub, socket: str, service: pb.ServiceRef, device: str,
           local_path: str, remote_path: str,
           protocol: "pb.TransferProtocol") -> FileTransfer:
    """Starts copying ``local_path`` to ``device:remote_path`` (a path
    ending in ``/`` takes the local file's name)."""
    remote_path, size, mode = upload_plan(local_path, remote_path)
    start = pb.FileUploadInput(start=pb.FileUploadStart(
        service=service, device=device, remote_path=remote_path, protocol=protocol,
        size=size, mode=mode))

    def run(t: FileTransfer) -> None:
        def messages() -> Iterator[pb.FileUploadInput]:
            yield start
            with open(local_path, "rb") as f:
                while chunk := f.read(CHUNK):
                    t._add(len(chunk))
                    yield pb.FileUploadInput(data=chunk)

        try:
            reply = stub.FileUpload(messages())
        except grpc.RpcError as err:
            raise from_rpc(err, socket) from None
        t.protocol = _NAMES.get(reply.protocol)
        t._bytes = reply.bytes

    return FileTransfer(f"upload {device}:{remote_path}", run)


class AsyncFileTransfer:
    """One file copy running as an asyncio task (``switchyard.aio``):
    ``await transfer.wait(timeout)`` (or ``await transfer``) ends with it
    and raises its error; ``bytes_transferred`` counts as it goes;
    ``cancel()`` stops it (a download then leaves nothing)."""

    def __init__(self, what: str,
                 run: Callable[["AsyncFileTransfer"], Coroutine[Any, Any, None]]) -> None:
        self._what = what
        self._bytes = 0
        #: ``"sftp"`` or ``"scp"`` once the transfer has started.
        self.protocol: Optional[str] = None
        self._task = asyncio.get_running_loop().create_task(run(self),
                                                            name=f"switchyard {what}")

    def __repr__(self) -> str:
        state = "done" if self.done else "running"
        return f"<AsyncFileTransfer {self._what} {state} {self._bytes} bytes>"

    def _add(self, n: int) -> None:
        self._bytes += n

    @property
    def bytes_transferred(self) -> int:
        """File bytes copied so far (all of them once ``wait()`` returned)."""
        return self._bytes

    @property
    def done(self) -> bool:
        """Whether the copy has ended (successfully or not)."""
        return self._task.done()

    def cancel(self) -> None:
        """Stops the copy (its call is cancelled; a download's temporary
        file is removed)."""
        self._task.cancel()

    async def wait(self, timeout: Optional[float] = None) -> "AsyncFileTransfer":
        """Waits until the copy ends (at most ``timeout`` seconds: then
        ``TimeoutError``, the copy going on); raises its
        ``SwitchyardError`` (naming the device and path) if it failed."""
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            if self._task.done():
                raise
            raise TimeoutError(f"{self._what} still running after {timeout} s") from None
        return self

    def __await__(self) -> Generator[Any, None, "AsyncFileTransfer"]:
        return self.wait().__await__()


def download_async(stub: rpc.BrokerAsyncStub, socket: str, service: pb.ServiceRef, device: str,
                   remote_path: str, local_path: str, protocol: "pb.TransferProtocol",
                   max_bytes: Optional[int] = None) -> AsyncFileTransfer:
    """``download`` as an asyncio task (needs a running loop)."""
    target = download_target(local_path, remote_path)
    request = pb.FileDownloadRequest(service=service, device=device, remote_path=remote_path,
                                     protocol=protocol, max_bytes=max_bytes or 0)

    async def run(t: AsyncFileTransfer) -> None:
        part = _Part(target)
        call = stub.FileDownload(request)
        try:
            done = None
            try:
                async for event in call:
                    done = _download_event(t, part, event)
                    if done is not None:
                        break
            except grpc.RpcError as err:
                raise from_rpc(err, socket) from None
            _check_done(done, t.bytes_transferred, device, remote_path)
            await asyncio.to_thread(part.commit)
        except BaseException:
            call.cancel()
            part.discard()
            raise

    return AsyncFileTransfer(f"download {device}:{remote_path}", run)


def upload_async(stub: rpc.BrokerAsyncStub, socket: str, service: pb.ServiceRef, device: str,
                 local_path: str, remote_path: str,
                 protocol: "pb.TransferProtocol") -> AsyncFileTransfer:
    """``upload`` as an asyncio task (needs a running loop); the file is
    read off the event loop, one chunk at a time."""
    remote_path, size, mode = upload_plan(local_path, remote_path)
    start = pb.FileUploadInput(start=pb.FileUploadStart(
        service=service, device=device, remote_path=remote_path, protocol=protocol,
        size=size, mode=mode))

    async def run(t: AsyncFileTransfer) -> None:
        async def messages() -> AsyncIterator[pb.FileUploadInput]:
            yield start
            with open(local_path, "rb") as f:
                while chunk := await asyncio.to_thread(f.read, CHUNK):
                    t._add(len(chunk))
                    yield pb.FileUploadInput(data=chunk)

        try:
            reply = await stub.FileUpload(messages())
        except grpc.RpcError as err:
            raise from_rpc(err, socket) from None
        t.protocol = _NAMES.get(reply.protocol)
        t._bytes = reply.bytes

    return AsyncFileTransfer(f"upload {device}:{remote_path}", run)
