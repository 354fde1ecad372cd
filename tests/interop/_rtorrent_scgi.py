"""rtorrent's XML-RPC over SCGI, the little the interop tests ask it: is a torrent seeding yet?

rtorrent listens for SCGI on ``network.scgi.open_port``; a request is a netstring of headers
(``CONTENT_LENGTH``, ``SCGI``) followed by an XML-RPC body, and the answer is CGI headers, a
blank line and the XML-RPC response.
"""

from __future__ import annotations

import socket
import xmlrpc.client
from typing import Any

__all__ = ["rtorrent_call", "rtorrent_seeding"]


def rtorrent_call(host: str, port: int, method: str, *params: Any, timeout: float = 5.0) -> Any:
    """Call ``method`` on the rtorrent whose SCGI port is ``port``; its result."""
    body = xmlrpc.client.dumps(params, method).encode()
    headers = b"CONTENT_LENGTH\0%d\0SCGI\x001\0" % len(body)
    request = b"%d:%s," % (len(headers), headers) + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks)
    _, _, xml = answer.partition(b"\r\n\r\n")
    (result,), _ = xmlrpc.client.loads(xml.decode())
    return result


def rtorrent_seeding(host: str, port: int, info_hash_hex: str) -> bool:
    """Whether rtorrent has checked the torrent and holds all of it (``d.complete``), so that
    a peer dialling it now meets a seed; False while it is still loading or hashing."""
    try:
        return bool(rtorrent_call(host, port, "d.complete", info_hash_hex.upper()))
    except (OSError, xmlrpc.client.Fault, ValueError):
        return False
