"""File transfer from the SDK: ``Device.sftp_download_to_file``,
``sftp_upload_from_file``, ``scp_download_to_file``, ``scp_upload_from_file``.

The service runs SFTP or SCP against the device; the bytes stream through
the broker (``FileDownload`` / ``FileUpload``) in chunks of 256 KiB with
back-pressure. Each call returns a ``FileTransfer`` at once: the copy runs
in a thread of its own; ``wait()`` blocks until it ends and raises its
error, ``bytes_transferred`` counts as it goes.

A download is written to a hidden temporary file beside the target
(``.NAME.XXXXXX.part``), fsynced and renamed over the target only when the
last byte came; on any failure the temporary file is removed, so the target
name never holds a partial file.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Optional

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


def download(stub: rpc.BrokerStub, socket: str, service: pb.ServiceRef, device: str,
             remote_path: str, local_path: str, protocol: "pb.TransferProtocol",
             max_bytes: Optional[int] = None) -> FileTransfer:
    """Starts copying ``device:remote_path`` to ``local_path`` (a directory
    takes the remote file's name)."""
    target = os.path.abspath(local_path)
    if os.path.isdir(target):
        target = os.path.join(target, os.path.basename(remote_path.rstrip("/")) or "file")
    request = pb.FileDownloadRequest(service=service, device=device, remote_path=remote_path,
                                     protocol=protocol, max_bytes=max_bytes or 0)

    def run(t: FileTransfer) -> None:
        folder = os.path.dirname(target)
        fd, part = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".part",
                                    dir=folder)
        try:
            with os.fdopen(fd, "wb") as out:
                done = None
                try:
                    for event in stub.FileDownload(request):
                        kind = event.WhichOneof("event")
                        if kind == "started":
                            t.protocol = _NAMES.get(event.started.protocol)
                        elif kind == "data":
                            out.write(event.data)
                            t._add(len(event.data))
                        elif kind == "done":
                            done = event.done
                            break
                except grpc.RpcError as err:
                    raise from_rpc(err, socket) from None
                if done is None or done.bytes != t.bytes_transferred:
                    raise SwitchyardError(
                        f"the copy of {device}:{remote_path} ended early; nothing was kept")
                out.flush()
                os.fsync(out.fileno())
            os.replace(part, target)
        except BaseException:
            try:
                os.unlink(part)
            except OSError:
                pass
            raise
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    return FileTransfer(f"download {device}:{remote_path}", run)


def upload(stub: rpc.BrokerStub, socket: str, service: pb.ServiceRef, device: str,
           local_path: str, remote_path: str,
           protocol: "pb.TransferProtocol") -> FileTransfer:
    """Starts copying ``local_path`` to ``device:remote_path`` (a path
    ending in ``/`` takes the local file's name)."""
    if remote_path.endswith("/") or not remote_path:
        remote_path += os.path.basename(local_path)
    size = os.stat(local_path).st_size
    mode = os.stat(local_path).st_mode & 0o777

    def run(t: FileTransfer) -> None:
        def messages() -> Iterator[pb.FileUploadInput]:
            yield pb.FileUploadInput(start=pb.FileUploadStart(
                service=service, device=device, remote_path=remote_path, protocol=protocol,
                size=size, mode=mode))
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
