"""A listening socket for a server verb (serve, label-studio): bound before uvicorn starts, so
a port in use is one line naming it, not a traceback, and port 0's choice can be printed."""

from __future__ import annotations

import socket

from pipeline.errors import ConfigError


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or the reason in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise ConfigError(
            "port", port, f"cannot listen on {host} ({exc.strerror}); pick another {{port}}"
        ) from None
    listening.listen(2048)
    listening.set_inheritable(True)
    return listening
