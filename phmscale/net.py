"""A free TCP port on 127.0.0.1: for a process group's rendezvous (`train.dist`) and a local
Ray cluster's ports (`launch.local`). Dependency-free, so the CLI imports it without torch."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port the OS had free a moment ago (another process may take it before it is used:
    callers bind it at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
