"""Compatibility imports for code written for other clients' APIs.

``switchyard.compat.radkit.sync`` offers the reference client's names, so a
script written for it runs with only its import line changed. What is
covered, and what is not (with the reason), is listed in the SDK README.
"""
