"""What the benchmarks that start libtorrent share: the loopback host, sizes on the command
line, a port free for both TCP and UDP, and the error a failed run raises.

Imported by the benchmark scripts as a sibling module (``python benchmarks/X.py`` puts this
directory first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import socket

__all__ = ["HOST", "BenchmarkError", "free_port", "parse_size"]

HOST = "127.0.0.1"


class BenchmarkError(Exception):
    """A process did not start, or a transfer failed or took too long."""


def parse_size(text: str) -> int:
    """``1G``, ``256M``, ``512K`` or a number of bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    try:
        if text[-1:].upper() in units:
            return int(float(text[:-1]) * units[text[-1].upper()])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


def free_port() -> int:
    """A port free on 127.0.0.1 for TCP and UDP now (libtorrent binds both, uTP or not)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port: int = tcp.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind((HOST, port))
            except OSError:
                continue
            return port
    raise BenchmarkError("found no free port on 127.0.0.1")
