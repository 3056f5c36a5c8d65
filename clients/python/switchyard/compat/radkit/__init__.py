"""The reference client's package layout: use ``switchyard.compat.radkit.sync``
where the reference's code imports its ``sync`` module."""

from . import sync

__all__ = ["sync"]
