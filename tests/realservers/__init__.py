"""Launchers for the real servers the tests and benchmarks run against (never mocks)."""

import socket


def free_port() -> int:
    """A loopback port free right now (the server binds it moments later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
