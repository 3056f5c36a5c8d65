"""``python -m switchyard``: an interactive Python prompt with an open
client whose methods are globals, as in the reference client's REPL:

    >>> service = service_direct("alice", host="svc.example.net")
    >>> service.inventory

Tab completes names and attributes. The client is closed when the prompt
ends (Ctrl-D, ``exit()``), and the broker then releases its session.
"""

from __future__ import annotations

import argparse
import code
import sys
from typing import Any, Optional, Sequence

from . import errors
from .sync import Client


def namespace(client: Client) -> dict[str, Any]:
    """The prompt's globals: ``client``, its public methods by name, and the
    exception classes."""
    names: dict[str, Any] = {"client": client, "Client": Client}
    for name in dir(client):
        if not name.startswith("_") and callable(getattr(client, name)):
            names[name] = getattr(client, name)
    for name in errors.__all__ if hasattr(errors, "__all__") else dir(errors):
        value = getattr(errors, name)
        if isinstance(value, type) and issubclass(value, Exception):
            names[name] = value
    return names


def enable_completion(names: dict[str, Any]) -> None:
    """Tab completion over ``names`` (when readline is available)."""
    try:
        import readline
        import rlcompleter
    except ImportError:  # pragma: no cover - Windows without pyreadline
        return
    readline.set_completer(rlcompleter.Completer(names).complete)
    readline.parse_and_bind("tab: complete")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the prompt; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m switchyard", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", help="the broker's socket (default: as the CLI finds it)")
    args = parser.parse_args(argv)
    try:
        client = Client.create(args.socket, client_name="python -m switchyard")
        client.open()
    except errors.SwitchyardError as err:
        print(f"switchyard: {err}", file=sys.stderr)
        return 1
    try:
        names = namespace(client)
        enable_completion(names)
        banner = (f"Switchyard client (session {client.session_id}). Globals: "
                  + ", ".join(sorted(n for n in names if n[0].islower()))
                  + ". Ctrl-D ends it.")
        code.InteractiveConsole(names).interact(banner=banner, exitmsg="")
    finally:
        client.close()
    return 0
