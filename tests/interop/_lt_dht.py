"""libtorrent DHT nodes on loopback, run as a process of their own and driven over stdin/stdout.

``python _lt_dht.py --hosts 127.0.0.5,127.0.0.6 [--ipv6] [--lifetime S] [--log-dht]``

One process holds one libtorrent session per ``--hosts`` entry, each listening on a free port of
its own 127.0.0.X (TCP and UDP; the DHT is on the UDP socket), and with ``--ipv6`` on the same
port of ``::1`` too (libtorrent then runs one DHT node per socket, each with its own id).
Settings: _lt_common's loopback settings with the DHT on and the changes INTEROP.md lists for a
loopback DHT (no bootstrap routers; no /24 or BEP 42 restrictions, which every 127.0.0.X node
would fail), plus ``dht_block_ratelimit`` raised: libtorrent blocks an IP sending over 5 queries
a second for five minutes, and a test's lookups from one address easily do.

The protocol, one JSON object per line. The first line on stdout is
``{"event": "ready", "sessions": [{"host": H, "port": P, "node_id": hex, "node_id6": hex or ""},
...]}``. Then each
request on stdin, ``{"id": N, "cmd": C, "session": I, ...}``, gets one reply line ``{"reply": N,
"ok": true, ...}`` (or ``"ok": false, "error": ...``) at once. The DHT operations end later with an
event line, ``{"event": E, "session": I, ...}``, from libtorrent's alerts:

=================  ===============================================  ==========================
cmd                arguments                                        event when done
=================  ===============================================  ==========================
add_node           host, port (ping it; if it answers it joins)     -
announce           info_hash (hex), port (0: implied_port), seed    - (see announce_in)
get_peers          info_hash                                        peers {info_hash, peers}
                                                                    (of every DHT node)
put_immutable      value (hex: a byte string, stored bencoded)      put {target, num_success}
get_immutable      target                                           immutable {target, value}
put_mutable        seed (hex, 32 bytes), value, salt (hex)          put {target, public_key,
                                                                    salt, seq, num_success}
get_mutable        public_key, salt                                 mutable {public_key, salt,
                                                                    seq, value, signature,
                                                                    authoritative}
sample_infohashes  host, port, target (BEP 51, to that node)        samples {host, port,
                                                                    samples, num, interval,
                                                                    nodes}
stats              -                                                stats {nodes}
live_nodes         -                                                live_nodes {node_id, nodes}
exit               -                                                (the process exits)
=================  ===============================================  ==========================

Items' ``value`` in events is the bencoded ``v`` (hex). ``announce_in`` events ``{info_hash, host,
port}`` report announce_peer queries the session accepted from others. A mutable put is signed by
libtorrent itself with the 64-byte secret key libtorrent's ed25519 uses (SHA-512 of the seed,
clamped: the same key RFC 8032 derives from the seed, so ``cryptography`` computes the same
public key and signatures); the binding stores ``value`` as a bencoded string and takes ``seq``
one above the highest it finds.

It exits after ``--lifetime`` seconds or when stdin closes, so it never outlives its test for long.
Run as a script this file has no package, so it imports only _lt_common, found next to it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

import libtorrent as lt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# Run as a script this file has no package: see _lt_common.
if TYPE_CHECKING or __package__:
    from ._lt_common import loopback_settings
else:
    from _lt_common import loopback_settings

__all__ = ["dht_settings", "libtorrent_secret_key", "main"]

# A line longer than this on stdin is a broken parent, not a request.
_MAX_LINE = 64 * 1024


def dht_settings(host: str, port: int, *, ipv6: bool = False) -> lt.settings_pack:
    """Loopback settings with the DHT on, as INTEROP.md says a loopback DHT node needs them
    (and with ``ipv6``, listening on ``[::1]:port`` as well)."""
    mask = (
        lt.alert_category.error
        | lt.alert_category.status
        | lt.alert_category.dht
        | lt.alert_category.dht_operation
    )
    overrides: lt.settings_pack = {
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "dht_enforce_node_id": False,
        # Tests query one node many times a second from one address; libtorrent's default (5
        # a second, then a five-minute block) would silence it mid-test.
        "dht_block_ratelimit": 10_000,
        "dht_upload_rate_limit": 1_000_000,
    }
    if ipv6:
        overrides["listen_interfaces"] = f"{host}:{port},[::1]:{port}"
    return loopback_settings(port, host=host, alert_mask=mask, overrides=overrides)


def libtorrent_secret_key(seed: bytes) -> tuple[bytes, bytes]:
    """The (64-byte secret key, 32-byte public key) libtorrent's ed25519 makes from ``seed``.

    libtorrent (orlp's ed25519) keeps the expanded key: SHA-512 of the seed with the scalar
    clamped as RFC 8032 does. The public key comes from ``cryptography``, which derives it from
    the same seed, so both sides sign alike.
    """
    expanded = bytearray(hashlib.sha512(seed).digest())
    expanded[0] &= 248
    expanded[31] &= 63
    expanded[31] |= 64
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    return bytes(expanded), public


def _free_port(host: str, *, ipv6: bool = False) -> int:
    """A port free on ``host`` (and with ``ipv6`` on ``::1``) for TCP and UDP right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port: int = tcp.getsockname()[1]
            others = [(socket.AF_INET, socket.SOCK_DGRAM, host)]
            if ipv6:
                others += [
                    (socket.AF_INET6, socket.SOCK_STREAM, "::1"),
                    (socket.AF_INET6, socket.SOCK_DGRAM, "::1"),
                ]
            try:
                for family, kind, where in others:
                    with socket.socket(family, kind) as other:
                        other.bind((where, port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port on {host}")


def _ping_for_id(host: str, port: int) -> str:
    """The node id the DHT on ``host:port`` answers a ping with (hex), or "" for no answer yet.

    The binding has no getter for a session's own node id, so ask it the way any node would.
    """
    ping = b"d1:ad2:id20:" + bytes(20) + b"e1:q4:ping1:t2:id1:y1:qe"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        sock.settimeout(0.2)
        sock.sendto(ping, (host, port))
        try:
            reply = sock.recv(2048)
        except OSError:  # no answer yet (or ICMP port unreachable: not bound yet)
            return ""
    at = reply.find(b"2:id20:")
    return reply[at + 7 : at + 27].hex() if at >= 0 and b"1:y1:r" in reply else ""


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _log(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _sha1(hex_text: str) -> lt.sha1_hash:
    raw = bytes.fromhex(hex_text)
    if len(raw) != 20:
        raise ValueError(f"a 20-byte hash in hex, not {hex_text!r}")
    return lt.sha1_hash(raw)


def _bencoded(item: Any) -> str:
    """Hex of an alert's item (an entry the binding converted to Python), bencoded again."""
    data: bytes = lt.bencode(item)
    return data.hex()


def _hex(value: Any) -> str:
    """Hex of a sha1_hash, bytes or a str the binding made of bytes."""
    if isinstance(value, lt.sha1_hash):
        return bytes(value.to_bytes()).hex()
    if isinstance(value, str):
        return value.encode("latin-1").hex()
    return bytes(value).hex()


def _nodes(nodes: Any) -> list[list[Any]]:
    """An alert's node list as ``[[id hex, host, port], ...]``; the binding gives dicts
    ``{"nid": sha1_hash, "endpoint": (host, port)}``."""
    result = []
    for node in nodes:
        nid, endpoint = (node["nid"], node["endpoint"]) if isinstance(node, dict) else node
        result.append([_hex(nid), str(endpoint[0]), int(endpoint[1])])
    return result


class Node:
    """One session and what its operations wait for."""

    def __init__(self, index: int, host: str, *, ipv6: bool = False) -> None:
        self.index = index
        self.host = host
        self.ipv6 = ipv6
        self.port = _free_port(host, ipv6=ipv6)
        self.session = lt.session(dht_settings(host, self.port, ipv6=ipv6))
        self.node_id = ""
        self.node_id6 = ""
        # get_peers lookups running: info-hash hex -> (reply alerts still due, peers so far)
        self.searches: dict[str, tuple[int, list[list[Any]]]] = {}

    def ready(self) -> bool:
        ids = bool(self.node_id and (self.node_id6 or not self.ipv6))
        return bool(self.session.is_listening() and self.session.is_dht_running() and ids)

    def command(self, request: dict[str, Any]) -> dict[str, Any]:
        """Start one request; returns the reply's extra fields."""
        ses = self.session
        cmd = request["cmd"]
        if cmd == "add_node":
            ses.add_dht_node((str(request["host"]), int(request["port"])))
            return {}
        if cmd == "announce":
            flags = 0
            port = int(request.get("port", 0))
            if port == 0:
                flags |= 2  # implied_port: use the source port of the query
            if request.get("seed"):
                flags |= 1
            ses.dht_announce(_sha1(request["info_hash"]), port, flags)
            return {}
        if cmd == "get_peers":
            # libtorrent looks up on each of its DHT nodes (one per listen socket) and posts
            # one reply alert for each: the event waits for all of them.
            self.searches[request["info_hash"]] = (1 + self.ipv6, [])
            ses.dht_get_peers(_sha1(request["info_hash"]))
            return {}
        if cmd == "put_immutable":
            target = ses.dht_put_immutable_item(bytes.fromhex(request["value"]))
            return {"target": _hex(target)}
        if cmd == "get_immutable":
            ses.dht_get_immutable_item(_sha1(request["target"]))
            return {}
        if cmd == "put_mutable":
            secret, public = libtorrent_secret_key(bytes.fromhex(request["seed"]))
            salt = bytes.fromhex(request.get("salt", ""))
            ses.dht_put_mutable_item(secret, public, bytes.fromhex(request["value"]), salt)
            return {"public_key": public.hex(), "target": hashlib.sha1(public + salt).hexdigest()}
        if cmd == "get_mutable":
            key = bytes.fromhex(request["public_key"])
            ses.dht_get_mutable_item(key, bytes.fromhex(request.get("salt", "")))
            return {}
        if cmd == "sample_infohashes":
            endpoint = (str(request["host"]), int(request["port"]))
            ses.dht_sample_infohashes(endpoint, _sha1(request["target"]))
            return {}
        if cmd == "stats":
            ses.post_dht_stats()
            return {}
        if cmd == "live_nodes":
            ses.dht_live_nodes(lt.sha1_hash(bytes.fromhex(self.node_id)))
            return {}
        raise ValueError(f"unknown cmd {cmd!r}")

    def alerts(self, log_dht: bool) -> None:
        """Turn this session's alerts into event lines (and log lines on stderr)."""
        for alert in self.session.pop_alerts():
            try:
                event = self._event(alert)
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                # A binding detail we did not expect: keep the node running, say so.
                _log(f"[{self.index}] cannot report {type(alert).__name__}: {exc!r}")
                event = None
            if event is not None:
                event["session"] = self.index
                _emit(event)
            if log_dht or event is None:
                _log(f"[{self.index}] {type(alert).__name__}: {alert.message()}")

    def _event(self, alert: lt.alert) -> dict[str, Any] | None:
        if isinstance(alert, lt.dht_get_peers_reply_alert):
            info_hash = _hex(alert.info_hash)
            remaining, peers = self.searches.pop(info_hash, (1, []))
            peers += [[str(host), int(port)] for host, port in alert.peers()]
            if remaining > 1:
                self.searches[info_hash] = (remaining - 1, peers)
                return None
            return {"event": "peers", "info_hash": info_hash, "peers": peers}
        if isinstance(alert, lt.dht_announce_alert):
            return {
                "event": "announce_in",
                "info_hash": _hex(alert.info_hash),
                "host": str(alert.ip),
                "port": int(alert.port),
            }
        if isinstance(alert, lt.dht_immutable_item_alert):
            return {
                "event": "immutable",
                "target": _hex(alert.target),
                "value": _bencoded(alert.item),
            }
        if isinstance(alert, lt.dht_mutable_item_alert):
            return {
                "event": "mutable",
                "public_key": _hex(alert.key),
                "salt": _hex(alert.salt),
                "seq": int(alert.seq),
                "value": _bencoded(alert.item),
                "signature": _hex(alert.signature),
                "authoritative": bool(alert.authoritative),
            }
        if isinstance(alert, lt.dht_put_alert):
            return {
                "event": "put",
                "target": _hex(alert.target),
                "public_key": _hex(alert.public_key),
                "salt": _hex(alert.salt),
                "seq": int(alert.seq),
                "num_success": int(alert.num_success),
            }
        if isinstance(alert, lt.dht_sample_infohashes_alert):
            host, port = alert.endpoint
            return {
                "event": "samples",
                "host": str(host),
                "port": int(port),
                "samples": [_hex(sample) for sample in alert.samples],
                "num": int(alert.num_infohashes),
                "interval": int(alert.interval.total_seconds()),
                "nodes": _nodes(alert.nodes),
            }
        if isinstance(alert, lt.dht_stats_alert):
            nodes = sum(bucket["num_nodes"] for bucket in alert.routing_table)
            return {"event": "stats", "nodes": nodes}
        if isinstance(alert, lt.dht_live_nodes_alert):
            return {
                "event": "live_nodes",
                "node_id": _hex(alert.node_id),
                "nodes": _nodes(alert.nodes),
            }
        return None


def _read_lines(buffer: bytearray) -> tuple[list[bytes], bool]:
    """The complete lines waiting on stdin (never blocks), and whether stdin is closed."""
    readable, _, _ = select.select([0], [], [], 0)
    if not readable:
        return [], False
    chunk = os.read(0, 65536)
    if not chunk:
        return [], True
    buffer += chunk
    lines = []
    while (end := buffer.find(b"\n")) >= 0:
        lines.append(bytes(buffer[:end]))
        del buffer[: end + 1]
    if len(buffer) > _MAX_LINE:
        raise RuntimeError("a request line over 64 KiB")
    return lines, False


def _handle(nodes: list[Node], line: bytes) -> bool:
    """Answer one request line; False once told to exit."""
    request: dict[str, Any] = {}
    try:
        request = json.loads(line)
        if request.get("cmd") == "exit":
            _emit({"reply": request.get("id"), "ok": True})
            return False
        node = nodes[int(request.get("session", 0))]
        _emit({"reply": request.get("id"), "ok": True, **node.command(request)})
    except (ValueError, KeyError, IndexError, TypeError, RuntimeError) as exc:
        _emit({"reply": request.get("id"), "ok": False, "error": f"{type(exc).__name__}: {exc}"})
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", required=True, help="comma-separated 127.0.0.X, one a session")
    parser.add_argument("--lifetime", type=float, default=60.0)
    parser.add_argument("--ipv6", action="store_true", help="each session on [::1] too")
    parser.add_argument("--log-dht", action="store_true", help="every DHT alert to stderr")
    args = parser.parse_args()
    deadline = time.monotonic() + args.lifetime
    hosts = [host for host in args.hosts.split(",") if host]
    for host in hosts:
        if not host.startswith("127."):
            raise SystemExit(f"loopback only, not {host}")
    nodes = [Node(index, host, ipv6=args.ipv6) for index, host in enumerate(hosts)]
    ready = False
    buffer = bytearray()
    running = True
    while running and time.monotonic() < deadline:
        for node in nodes:
            node.alerts(args.log_dht)
        if not ready:
            for node in nodes:
                if node.session.is_dht_running() and not node.node_id:
                    node.node_id = _ping_for_id(node.host, node.port)
                if node.session.is_dht_running() and node.ipv6 and not node.node_id6:
                    node.node_id6 = _ping_for_id("::1", node.port)
            if all(node.ready() for node in nodes):
                sessions = [
                    {
                        "host": node.host,
                        "port": node.port,
                        "node_id": node.node_id,
                        "node_id6": node.node_id6,
                    }
                    for node in nodes
                ]
                _emit({"event": "ready", "sessions": sessions})
                ready = True
            time.sleep(0.02)
            continue
        lines, closed = _read_lines(buffer)
        for line in lines:
            running = _handle(nodes, line) and running
        if closed:
            break
        # Wait for an alert or a request, whichever first: select on stdin, short timeout.
        select.select([0], [], [], 0.02)
    _log("exiting" if running else "told to exit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
