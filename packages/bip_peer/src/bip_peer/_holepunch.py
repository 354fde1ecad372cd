"""BEP 55 holepunching as a :class:`~bip_peer.PeerService`: relay, initiator and target.

Two peers behind NATs cannot dial each other, but both can be connected to a third. BEP 55
lets one of them (the *initiator*) ask that third peer (the *relay*) for a *rendezvous* with
the other (the *target*); the relay sends each end a *connect* message with the other's
address, both dial at once over uTP, and the outgoing packets of each open its NAT for the
other's. :class:`HolepunchService` plays every part over the connections of a
:class:`~bip_peer.PeerManager`:

- it adds ``ut_holepunch`` to our extended handshake (so peers may relay to us and ask us
  to relay);
- as a relay, it answers a rendezvous for a peer of the same torrent with a connect to both
  ends, or an error (BEP 55's codes, checked in libtorrent's order), within a per-peer budget;
- as an initiator, :meth:`~HolepunchService.rendezvous` asks a relay, and the errors that
  come back are counted, logged and handed to an optional callback;
- as either end, a connect is handed to the ``on_connect`` callback (the client dials uTP
  there), within a per-peer budget unless it answers our own rendezvous.

Peers are hostile, so everything a message can make us do is bounded: one rendezvous makes
us send two messages, so rendezvous are rate-limited per peer (a token bucket) and a peer
over budget is ignored; a connect makes the client send packets to an address a peer chose,
so connects are rate-limited per peer too, and addresses that cannot be dialled, ours, peers
we are connected to already, or private ones from a public peer are dropped. State is per
connected peer plus a bounded table of our own pending rendezvous.

Malformed or unknown messages are ignored and counted, never fatal, as in libtorrent: it
drops a ``ut_holepunch`` message it cannot read (too short, an unknown ``msg_type`` or
``addr_type``) and messages from a peer that did not offer the extension (it could not
answer them), and keeps the connection.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Final

import trio

from bip_handshake import PeerAddress
from bip_metainfo import InfoHash

from ._bandwidth import TokenBucket
from ._connection import UnknownExtended
from ._errors import LocalProtocolError, PeerError, RemoteProtocolError
from ._exchange import _check_extension_id, _same_torrent
from ._exchange import _offers as _offers_extension
from ._extended import (
    HOLEPUNCH_EXTENSION,
    HOLEPUNCH_EXTENSION_ID,
    HolepunchError,
    HolepunchMessage,
    HolepunchMessageType,
    decode_holepunch_message,
)
from ._manager import Peer, PeerManager
from ._pex import _is_local, _OurAddresses

__all__ = [
    "DEFAULT_HOLEPUNCH_CONNECT_BURST",
    "DEFAULT_HOLEPUNCH_CONNECT_RATE",
    "DEFAULT_HOLEPUNCH_MAX_PENDING",
    "DEFAULT_HOLEPUNCH_PENDING_TIMEOUT",
    "DEFAULT_HOLEPUNCH_RELAY_BURST",
    "DEFAULT_HOLEPUNCH_RELAY_RATE",
    "HolepunchService",
    "HolepunchStatistics",
]

DEFAULT_HOLEPUNCH_RELAY_BURST: Final = 5
"""Rendezvous a peer may ask us to relay at once. A client asks when a dial fails, a few at a
time; each one we relay costs two messages, so a peer must not ask for many."""

DEFAULT_HOLEPUNCH_RELAY_RATE: Final = 0.2
"""Rendezvous per second a peer's relay budget refills at (one every 5 seconds)."""

DEFAULT_HOLEPUNCH_CONNECT_BURST: Final = 5
"""Unsolicited connects a peer may send us at once (each one makes the client dial)."""

DEFAULT_HOLEPUNCH_CONNECT_RATE: Final = 0.2
"""Unsolicited connects per second a peer's connect budget refills at."""

DEFAULT_HOLEPUNCH_PENDING_TIMEOUT: Final = 30.0
"""Seconds a rendezvous we sent waits for its connect or error before it is forgotten."""

DEFAULT_HOLEPUNCH_MAX_PENDING: Final = 256
"""Rendezvous we remember waiting for an answer; the oldest is forgotten beyond it."""

_log = logging.getLogger("bip_peer.holepunch")

ConnectCallback = Callable[[InfoHash, PeerAddress], None]
ErrorCallback = Callable[[InfoHash, PeerAddress, int], None]


@dataclass(frozen=True, slots=True)
class HolepunchStatistics:
    """A snapshot of a :class:`HolepunchService`'s counters.

    Attributes:
        rendezvous_sent: rendezvous we sent as an initiator.
        relayed: rendezvous we relayed (a connect sent to both ends).
        relay_refused: rendezvous we answered with an error.
        connects: connects handed to ``on_connect``.
        connects_ignored: connects dropped (not dialable, ours, already connected, private
            from a public peer).
        errors_received: errors answering our rendezvous.
        rate_limited: rendezvous and unsolicited connects beyond a peer's budget, ignored.
        messages_ignored: messages ignored whole: malformed, of an unknown type, from a peer
            that did not offer ``ut_holepunch``, a rendezvous sent to us, an error for a
            rendezvous we did not send.
        pending: our rendezvous waiting for an answer now.
    """

    rendezvous_sent: int
    relayed: int
    relay_refused: int
    connects: int
    connects_ignored: int
    errors_received: int
    rate_limited: int
    messages_ignored: int
    pending: int


class _HolepunchPeer:
    """A peer's two budgets: rendezvous it may ask us to relay, connects it may send us."""

    __slots__ = ("connect", "relay")

    def __init__(self, relay: TokenBucket, connect: TokenBucket) -> None:
        self.relay = relay
        self.connect = connect


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _check_positive(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _offers(peer: Peer) -> bool:
    return _offers_extension(peer, HOLEPUNCH_EXTENSION)


def _listen_address(peer: Peer) -> PeerAddress | None:
    """Where a peer that dialled us over TCP listens: its host and the ``p`` it gave."""
    handshake = peer.extended_handshake
    if peer.direction != "inbound" or handshake is None or not handshake.p:
        return None
    return PeerAddress(peer.address.normalized().host, handshake.p)


def _address_for_others(peer: Peer) -> PeerAddress:
    """The address we give the other end of a rendezvous to dial ``peer`` at.

    libtorrent sends the connection's remote address. For a peer on uTP that is the NAT's
    mapping of the UDP socket the peer dials from (its listen socket, in libtorrent and bip):
    the very hole the other end's packets must hit. For a peer we dialled, it is where the
    peer listens. But for a peer that dialled us over TCP, it is an ephemeral TCP port that no
    uTP packet can reach; there we send the host with the listen port of its extended
    handshake (``p``), which is also the address our PEX lists for it, so the rendezvous
    meets the address the initiator learnt. Without ``p``, the remote address, as libtorrent.
    """
    if peer.transport == "tcp":
        listen = _listen_address(peer)
        if listen is not None:
            return listen
    return peer.address.normalized()


class HolepunchService:
    """BEP 55 over a :class:`~bip_peer.PeerManager`: relay rendezvous, ask for them, take connects.

    >>> dialled = []
    >>> service = HolepunchService(on_connect=lambda info_hash, address: dialled.append(address))
    >>> service.statistics().relayed
    0

    Args:
        on_connect: called with the torrent and the address when a peer tells us to dial
            (a connect message); the client dials uTP there at once. Must not block; an
            exception it raises removes the peer that sent the connect, as for any service.
        on_error: called with the torrent, the target and the error code (a
            :class:`~bip_peer.HolepunchError` when known) when a relay refuses one of our
            rendezvous.
        extension_id: the id we give ``ut_holepunch`` in our extended handshake
            (libtorrent's 4 by default).
        our_addresses: our own listening addresses: a rendezvous for one is refused
            (``NoSelf``), a connect to one ignored (more can be added later:
            :meth:`add_our_address`).
        relay_burst: rendezvous a peer may ask us to relay at once.
        relay_rate: rendezvous per second a peer's budget refills at.
        connect_burst: unsolicited connects a peer may send us at once.
        connect_rate: unsolicited connects per second a peer's budget refills at.
        pending_timeout: seconds our rendezvous waits for its answer.
        max_pending: our rendezvous remembered waiting for an answer.
    """

    message_types = (UnknownExtended, HolepunchMessage)
    """The messages its :meth:`message_received` takes, the manager's only questions to it
    (:class:`~bip_peer.PeerService`): ``ut_holepunch`` ones, decoded or still raw."""

    def __init__(
        self,
        *,
        on_connect: ConnectCallback | None = None,
        on_error: ErrorCallback | None = None,
        extension_id: int = HOLEPUNCH_EXTENSION_ID,
        our_addresses: Iterable[PeerAddress] = (),
        relay_burst: int = DEFAULT_HOLEPUNCH_RELAY_BURST,
        relay_rate: float = DEFAULT_HOLEPUNCH_RELAY_RATE,
        connect_burst: int = DEFAULT_HOLEPUNCH_CONNECT_BURST,
        connect_rate: float = DEFAULT_HOLEPUNCH_CONNECT_RATE,
        pending_timeout: float = DEFAULT_HOLEPUNCH_PENDING_TIMEOUT,
        max_pending: int = DEFAULT_HOLEPUNCH_MAX_PENDING,
    ) -> None:
        _check_extension_id(extension_id)
        self._extension_id = extension_id
        self._on_connect = on_connect
        self._on_error = on_error
        self._ours = _OurAddresses(our_addresses)  # checks they are PeerAddresses
        self._relay_burst = _check_count("relay_burst", relay_burst)
        self._relay_rate = _check_positive("relay_rate", relay_rate)
        self._connect_burst = _check_count("connect_burst", connect_burst)
        self._connect_rate = _check_positive("connect_rate", connect_rate)
        self._pending_timeout = _check_positive("pending_timeout", pending_timeout)
        self._max_pending = _check_count("max_pending", max_pending)
        self._peers: dict[Peer, _HolepunchPeer] = {}
        # Our peers by host (normalised), so that finding the peer at an address a message
        # names looks at the few peers of that host, not at every peer: both addresses
        # _find matches on (remote, listen) have the host of the connection.
        self._by_host: dict[IPv4Address | IPv6Address, set[Peer]] = {}
        # (relay, target) -> when we stop waiting; oldest first, so the bound evicts it.
        self._pending: OrderedDict[tuple[Peer, PeerAddress], float] = OrderedDict()
        self._sent = 0
        self._relayed = 0
        self._refused = 0
        self._connects = 0
        self._connects_ignored = 0
        self._errors = 0
        self._rate_limited = 0
        self._ignored = 0
        # Peers whose ignored or over-budget messages were logged: once per peer, so that a
        # flooding peer does not flood the log too (its messages are still counted).
        self._noted: set[Peer] = set()

    # -- public API ----------------------------------------------------------------------

    @staticmethod
    def supports(peer: Peer) -> bool:
        """Whether ``peer`` offered ``ut_holepunch`` (it can relay, and be relayed to)."""
        return _offers(peer)

    def rendezvous(self, manager: PeerManager, relay: Peer, target: PeerAddress) -> bool:
        """Ask ``relay`` to introduce us to the peer at ``target`` (BEP 55 rendezvous).

        On success the relay sends us a connect for ``target`` (handed to ``on_connect``)
        and the target one for us; on failure an error (to ``on_error``). ``target`` is the
        address the relay knows the peer by (where PEX said it is:
        :meth:`~bip_peer.PeerExchange.relay_for` names a relay that listed it).

        Returns:
            ``True`` if the message was queued; ``False`` if ``relay`` did not offer
            ``ut_holepunch``, was removed, or its send queue is full.

        Raises:
            LocalProtocolError: this service is not one of the manager's (it would never
                see the answer).
            ValueError: ``target`` cannot be dialled (port 0, unspecified, multicast).
            TypeError: ``target`` is not a :class:`~bip_handshake.PeerAddress`.
        """
        if not isinstance(target, PeerAddress):
            raise TypeError(f"target must be a PeerAddress, not {target!r}")
        address = target.normalized()
        if not address.is_connectable:
            raise ValueError(f"cannot rendezvous with {target}: not a dialable address")
        if not any(service is self for service in manager.services):
            raise LocalProtocolError(
                "add the HolepunchService to the manager's services before a rendezvous"
            )
        if not _offers(relay):
            return False
        if not self._send(manager, relay, HolepunchMessage.rendezvous(address)):
            return False
        self._sent += 1
        key = (relay, address)
        self._pending.pop(key, None)
        self._pending[key] = trio.current_time() + self._pending_timeout
        while len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)
        _log.debug("asked %s for a rendezvous with %s", relay.address, address)
        return True

    @property
    def our_addresses(self) -> frozenset[PeerAddress]:
        """The addresses taken as ours (normalised)."""
        return self._ours.all()

    def add_our_address(self, address: PeerAddress) -> None:
        """Take ``address`` as ours from now on (our external IP with a listening port): a
        rendezvous for it is refused (``NoSelf``), a connect to it ignored. At most
        :data:`~bip_peer.MAX_OUR_ADDRESSES` are added this way (the oldest added is forgotten
        first); already known is no error.

        Raises:
            TypeError: ``address`` is not a :class:`~bip_handshake.PeerAddress`.
        """
        self._ours.add(address)

    def remove_our_address(self, address: PeerAddress) -> None:
        """No longer take ``address`` as ours (our external address changed); unknown is no
        error. Only an address added with :meth:`add_our_address` goes: one given at
        construction (a listening address) stays ours, even if it was added too.

        Raises:
            TypeError: ``address`` is not a :class:`~bip_handshake.PeerAddress`.
        """
        self._ours.discard(address)

    def statistics(self) -> HolepunchStatistics:
        """A snapshot of the counters."""
        return HolepunchStatistics(
            rendezvous_sent=self._sent,
            relayed=self._relayed,
            relay_refused=self._refused,
            connects=self._connects,
            connects_ignored=self._connects_ignored,
            errors_received=self._errors,
            rate_limited=self._rate_limited,
            messages_ignored=self._ignored,
            pending=len(self._pending),
        )

    # -- PeerService -------------------------------------------------------------------------

    def handshake_fields(self, peer: Peer) -> Mapping[str, object]:
        """``ut_holepunch`` under our id, for every torrent (as libtorrent)."""
        return {"m": {HOLEPUNCH_EXTENSION: self._extension_id}}

    def peer_added(self, manager: PeerManager, peer: Peer) -> None:
        """Give the peer its relay and connect budgets."""
        now = trio.current_time()
        self._peers[peer] = _HolepunchPeer(
            TokenBucket(self._relay_rate, burst=self._relay_burst, now=now),
            TokenBucket(self._connect_rate, burst=self._connect_burst, now=now),
        )
        self._by_host.setdefault(peer.address.normalized().host, set()).add(peer)

    def message_received(self, manager: PeerManager, peer: Peer, message: object) -> bool:
        """Take every ``ut_holepunch`` message: relay, hand on or count it."""
        if isinstance(message, UnknownExtended):
            if message.name != HOLEPUNCH_EXTENSION:
                return False
            try:
                decoded = decode_holepunch_message(message.payload)
            except RemoteProtocolError as error:
                self._ignore(peer, f"malformed: {error}")
                return True
            if decoded is None:
                self._ignore(peer, "of an unknown message or address type")
                return True
        elif isinstance(message, HolepunchMessage):
            decoded = message
        else:
            return False
        state = self._peers.get(peer)
        if state is None or not _offers(peer):
            # As libtorrent: a peer that did not offer ut_holepunch has no id for our answer.
            self._ignore(peer, "from a peer that did not offer ut_holepunch")
            return True
        if decoded.msg_type is HolepunchMessageType.RENDEZVOUS:
            self._on_rendezvous(manager, peer, state, decoded.address)
        elif decoded.msg_type is HolepunchMessageType.CONNECT:
            self._on_connect_message(manager, peer, state, decoded.address)
        else:
            assert decoded.error is not None  # an error message always has its code
            self._on_error_message(peer, decoded.address, decoded.error)
        return True

    def peer_removed(self, manager: PeerManager, peer: Peer) -> None:
        """Forget the peer's budgets and our rendezvous waiting on it."""
        self._peers.pop(peer, None)
        self._noted.discard(peer)
        host = peer.address.normalized().host
        same_host = self._by_host.get(host)
        if same_host is not None:
            same_host.discard(peer)
            if not same_host:
                del self._by_host[host]
        for key in [key for key in self._pending if key[0] is peer]:
            del self._pending[key]

    def tick(self, manager: PeerManager, now: float) -> None:
        """Forget our rendezvous that went unanswered."""
        while self._pending:
            key, deadline = next(iter(self._pending.items()))
            if deadline > now:
                break  # refreshed entries move to the end, so the order is by deadline
            del self._pending[key]

    # -- relay -----------------------------------------------------------------------------

    def _on_rendezvous(
        self, manager: PeerManager, peer: Peer, state: _HolepunchPeer, target: PeerAddress
    ) -> None:
        if not state.relay.take(1, trio.current_time()):
            self._rate_limited += 1
            self._note(peer, f"rendezvous for {target} over the peer's budget, ignored")
            return
        address = target.normalized()
        other = self._relay_target(manager, peer, address)
        if isinstance(other, HolepunchError):
            self._refuse(manager, peer, target, other)
            return
        # The target first: if its queue is full, the initiator hears it failed instead of
        # dialling a peer that will never dial back.
        if not self._send(manager, other, HolepunchMessage.connect(_address_for_others(peer))):
            self._refuse(manager, peer, target, HolepunchError.NOT_CONNECTED)
            return
        # The initiator dials the target at the address it asked for, as libtorrent.
        self._send(manager, peer, HolepunchMessage.connect(address))
        self._relayed += 1
        _log.debug("relayed a rendezvous between %s and %s", peer.address, other.address)

    def _relay_target(
        self, manager: PeerManager, peer: Peer, address: PeerAddress
    ) -> HolepunchError | Peer:
        """The target's connection, or why there is none (libtorrent's checks, in its order)."""
        if not address.is_connectable:
            return HolepunchError.NO_SUCH_PEER
        if address in self._ours:
            return HolepunchError.NO_SELF
        target = self._find(manager, peer.info_hash, address)
        if target is None:
            return HolepunchError.NOT_CONNECTED
        if not _offers(target):
            return HolepunchError.NO_SUPPORT
        if target is peer:
            # libtorrent's reading of NoSelf: the initiator asked for itself.
            return HolepunchError.NO_SELF
        return target

    def _find(self, manager: PeerManager, info_hash: InfoHash, address: PeerAddress) -> Peer | None:
        """Our peer of the torrent at ``address`` (normalised): by its connection's remote
        address (as libtorrent's ``find_peer``), else, for one that dialled us, by its listen
        address (what our PEX told others, so what an initiator is likely to ask for).

        Only the peers at ``address``'s host are looked at (an index, not a scan of every
        peer); one being removed is not connected any more, as for ``manager.peers``.
        """
        by_listen = None
        for peer in self._by_host.get(address.host, ()):
            if not manager.is_connected(peer) or not _same_torrent(info_hash, peer.info_hash):
                continue
            if peer.address.normalized() == address:
                return peer
            if by_listen is None and _listen_address(peer) == address:
                by_listen = peer
        return by_listen

    def _refuse(
        self, manager: PeerManager, peer: Peer, target: PeerAddress, error: HolepunchError
    ) -> None:
        self._refused += 1
        self._send(manager, peer, HolepunchMessage.failed(target, error))
        _log.debug("refused a rendezvous from %s with %s: %s", peer.address, target, error.name)

    # -- initiator and target ------------------------------------------------------------------

    def _on_connect_message(
        self, manager: PeerManager, peer: Peer, state: _HolepunchPeer, address: PeerAddress
    ) -> None:
        normalized = address.normalized()
        solicited = self._pending.pop((peer, normalized), None) is not None
        reason = self._connect_problem(peer, normalized)
        if reason is not None:
            self._connects_ignored += 1
            self._note(peer, f"connect to {normalized} ignored: {reason}")
            return
        # A connect we asked for is not charged: our own rendezvous are bounded already.
        # The budget is looked at before the search for a peer at the address, so that a
        # flood over budget costs a token test per message and nothing more; it is charged
        # after, so that a connect to a peer we have (ignored) costs no token, as before.
        now = trio.current_time()
        if not solicited and state.connect.available(now) < 1:
            self._rate_limited += 1
            self._note(peer, f"connect to {normalized} over the peer's budget, ignored")
            return
        if self._find(manager, peer.info_hash, normalized) is not None:
            self._connects_ignored += 1  # libtorrent ignores these too
            self._note(peer, f"connect to {normalized} ignored: already connected")
            return
        if not solicited:
            state.connect.take(1, now)  # the token seen above: nothing spent it meanwhile
        self._connects += 1
        _log.debug(
            "connect to %s from %s (%s)",
            normalized,
            peer.address,
            "our rendezvous" if solicited else "the other end's rendezvous",
        )
        if self._on_connect is not None:
            self._on_connect(peer.info_hash, normalized)

    def _connect_problem(self, peer: Peer, address: PeerAddress) -> str | None:
        """Why a connect to ``address`` is ignored whoever we are connected to (cheap checks)."""
        if not address.is_connectable:
            return "not a dialable address"
        if address in self._ours:
            return "our own address"
        if not _is_local(peer.address.normalized().host) and _is_local(address.host):
            # As PEX: a stranger must not point the client at its own network.
            return "a private address from a public peer"
        return None

    def _on_error_message(self, peer: Peer, target: PeerAddress, code: int) -> None:
        normalized = target.normalized()
        if self._pending.pop((peer, normalized), None) is None:
            self._ignore(peer, f"an error for {normalized}, for which we asked no rendezvous")
            return
        self._errors += 1
        name = code.name if isinstance(code, HolepunchError) else f"unknown code {code}"
        _log.debug("rendezvous with %s through %s failed: %s", normalized, peer.address, name)
        if self._on_error is not None:
            self._on_error(peer.info_hash, normalized, code)

    # -- helpers -----------------------------------------------------------------------------

    def _send(self, manager: PeerManager, peer: Peer, message: HolepunchMessage) -> bool:
        their_id = peer.connection.their_extension_ids.get(HOLEPUNCH_EXTENSION)
        if not their_id:
            return False
        # The connection has no ut_holepunch codec of its own: the message goes out framed
        # under the id the peer gave, which the connection checks. A full queue drops it
        # (a rendezvous is retried by the client, a connect is as good as lost: BEP 55 is
        # best effort).
        with contextlib.suppress(PeerError):
            return manager.send_nowait(peer, message.to_extended(their_id))
        return False

    def _ignore(self, peer: Peer, why: str) -> None:
        self._ignored += 1
        self._note(peer, f"message ignored: {why}")

    def _note(self, peer: Peer, what: str) -> None:
        if peer in self._noted:
            return
        self._noted.add(peer)
        _log.debug(
            "ut_holepunch from %s: %s (later ones from this peer are only counted)",
            peer.address,
            what,
        )
