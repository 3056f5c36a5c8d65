"""Where the broker's socket is, and what is wrong with a socket path that
cannot be reached (the CLI's rule and messages, in ``broker/socket.rs``)."""

from __future__ import annotations

import os
import socket as _socket
import stat
import tempfile
from pathlib import Path
from typing import Optional

# A Unix socket address holds 108 bytes, one of them the terminating NUL.
MAX_PATH_BYTES = 107


def builtin_socket() -> str:
    """The default socket path: ``$XDG_RUNTIME_DIR/switchyard/broker.sock``,
    else ``/run/switchyard/broker.sock`` for root, else
    ``$TMPDIR/switchyard-UID/broker.sock``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return str(Path(runtime) / "switchyard" / "broker.sock")
    if os.geteuid() == 0:
        return "/run/switchyard/broker.sock"
    return str(Path(tempfile.gettempdir()) / f"switchyard-{os.geteuid()}" / "broker.sock")


def default_socket() -> str:
    """The broker socket, found the way the CLI finds it without a config
    file: ``$SWITCHYARD_SOCKET``, else :func:`builtin_socket`."""
    return os.environ.get("SWITCHYARD_SOCKET") or builtin_socket()


def start_command(path: str) -> str:
    """``switchyard broker``, with ``--socket PATH`` when ``path`` is not the
    default."""
    if path == builtin_socket():
        return "switchyard broker"
    return f"switchyard --socket {path} broker"


def socket_problem(path: str) -> Optional[str]:
    """What is wrong with ``path`` as the broker's socket, or None when
    nothing is (no file: the broker is not running; or it answers)."""
    size = len(os.fsencode(path))
    if size > MAX_PATH_BYTES:
        return (
            f"the socket path {path} is {size} bytes long; a Unix socket path holds "
            f"at most {MAX_PATH_BYTES}: choose a shorter socket path"
        )
    denied = (
        f"permission denied opening {path}: this user may not use that broker (the "
        f"socket's group is broker.socket_group; join it, or run your own broker with "
        f"`{start_command(path)}`)"
    )
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except PermissionError:
        return denied
    except OSError as err:
        return f"cannot use {path} as the broker's socket: {err.strerror}"
    if stat.S_ISDIR(mode):
        return (
            f"{path} is a directory, not the broker's socket; name the socket itself, "
            f"e.g. {Path(path) / 'broker.sock'}"
        )
    if not stat.S_ISSOCK(mode):
        kind = "regular file" if stat.S_ISREG(mode) else "special file"
        return (
            f"{path} is not a socket (it is a {kind}); the socket path must name the "
            f"socket the broker listens on"
        )
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except PermissionError:
        return denied
    except OSError:
        return None
    finally:
        probe.close()
    return None
