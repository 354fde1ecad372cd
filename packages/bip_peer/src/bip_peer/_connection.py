"""PeerConnection: the protocol state of one peer wire connection, sans-IO.

Bytes from the peer go in with :meth:`PeerConnection.receive_data` and come out
of :meth:`PeerConnection.next_event` as message objects (extension messages
already decoded); messages we send go through :meth:`PeerConnection.send`, which
returns their bytes. Both directions update the state first and refuse what the
protocol forbids: the peer's mistakes raise :class:`RemoteProtocolError` (the
connection is then dead), ours raise :class:`LocalProtocolError` (nothing is
changed and the connection goes on); :class:`StaleSendError`, its subclass, when
the message was overtaken by one the peer sent (a cancel for a block that arrived).

The rules, decided the way libtorrent behaves where the BEPs leave room:

Availability. A bitfield, have all or have none may come at any time, and
replaces what the peer said before: libtorrent takes a late bitfield so (aria2
sends one mid-connection instead of many haves), and the event returned carries
nothing else, so a consumer must read it as a replacement (the connection's
:attr:`~PeerConnection.peer_pieces` is the new set). Have all / have none need
the fast extension (BEP 6). Other messages may come first: the extended handshake
and allowed-fast messages often do (Transmission sends its extended handshake
before its bitfield). A bitfield must have the torrent's length and clear spare
bits. Before the piece count is known (a magnet link), the latest bitfield or have
all and the haves (and donthaves) since are kept and checked once
:attr:`~PeerConnection.num_pieces` is set; a have index that could never fit a
bitfield message is refused at once, and haves for more than 1024 distinct pieces
are not kept: those past it are lost for the connection (a peer sends no have twice, so
the peer is taken not to have those pieces until it says so with another message).

Our requests (what we asked the peer for). A piece answers the request with
the same index, offset and length; a piece nobody requested (a duplicate, or
one that crossed our cancel on the wire) is counted in ``unrequested_blocks``
and dropped, as libtorrent does, because it happens to honest peers; a piece at
a requested offset with another length, not explained by a cancelled request,
is an error. A reject (fast only) clears its request; one for nothing
outstanding is counted and dropped. Cancelled requests are remembered
(:attr:`~PeerConnection.cancelled_requests`, bounded) until their answer comes,
so that with fast the reject answering a cancel is not taken for a later
request of the same block. A choke without the fast extension discards all our
requests (BEP 3); with it they stay until the peer rejects them (BEP 6). A
zero-length piece is read as a reject, as libtorrent reads BitComet's.

The peer's requests. A request above ``max_block_length`` or of length 0, or for
a piece index out of range, is a :class:`RemoteProtocolError`. A request we
cannot serve is refused: rejected (with fast: a reject request goes into
:meth:`~PeerConnection.data_to_send`) or silently dropped (without fast, as BEP 3
says a choke discards requests). Refused are: requests beyond
``max_peer_requests`` outstanding (the ``reqq`` we advertise; libtorrent rejects
those rather than disconnecting), requests before we know the piece count,
requests for a piece we have not announced (counted; too many is an error),
and requests while we choke the peer unless the piece is in the allowed-fast
set we gave it (counted from our last choke; more
than ``max_choked_requests`` is an error: a peer honouring our choke sends at
most what was already in flight). A cancel removes the request, and with fast
is answered by a reject, as libtorrent does. When we choke a peer, the requests
it has pending are dropped (without fast) or rejected (with fast, except those
for allowed-fast pieces, which may still be served): the rejects are returned by
:meth:`~PeerConnection.send` together with the choke.

Extensions. The ids come from the BEP 10 handshakes: ours (sent through
:meth:`~PeerConnection.send`) decode what the peer sends, theirs encode what we
send. An extended message under an id we did not assign, or under a name we
have no codec for, is surfaced as :class:`UnknownExtended`, and so is a
``lt_donthave`` or ``upload_only`` message of the wrong size (libtorrent ignores
those); sending an extension the peer did not offer is a
:class:`LocalProtocolError`. A later handshake updates the map (an id of 0 removes
an extension) and only the fields it carries (BEP 10: it may carry just the
changes), so :attr:`~PeerConnection.their_handshake` is the merged view.

Ignored and counted (``ignored_out_of_range``), as libtorrent does: a suggest,
allowed fast, cancel or reject for a piece past the end. The port message (BEP 5)
is accepted from any peer (libtorrent reads it as DHT support even without the
DHT bit) and sent only when both set the bit. The BEP 52 hash request / hashes / hash reject are
paired like requests and pieces (the peer's requests bounded; beyond the bound
answered with a hash reject). Whether a request's ``begin + length`` fits the
piece, and whether the peer wants an upload-only peer's pieces, is for the
caller: the connection knows piece counts, not piece sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, fields, replace
from typing import Final, TypeAlias, TypeVar

from bip_handshake import Extensions, PeerAddress
from bip_metainfo import InfoHash, PieceSet

from ._errors import LocalProtocolError, RemoteProtocolError, StaleSendError
from ._extended import (
    _U32_MAX,  # the largest reqq an extended handshake carries: max_peer_requests is ours
    MAX_EXTENSION_NAME_LENGTH,  # defined with the handshake's other bounds, exported here too
    MAX_HANDSHAKE_EXTRA_KEYS,
    DontHave,
    ExtendedHandshake,
    MetadataData,
    MetadataReject,
    MetadataRequest,
    PexMessage,
    UploadOnly,
    _decode_handshake,  # decodes our own raw handshake without the bounds put on a peer's
    decode_metadata_message,
)
from ._fast import DEFAULT_ALLOWED_FAST_SET_SIZE, allowed_fast_set
from ._messages import (
    _PIECE_HEAD,  # these two pack the headers of the two messages sent once per block
    _U32X3_ID,  # here, as Piece.encode_parts and Request.encode do: a Python call less
    BLOCK_SIZE,
    DEFAULT_MAX_MESSAGE_LENGTH,
    NEED_DATA,
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    Extended,
    Hashes,
    HashReject,
    HashRequest,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    Message,
    MessageDecoder,
    NeedData,
    NotInterested,
    Piece,
    Port,
    RejectRequest,
    Request,
    Suggest,
    Unchoke,
)

__all__ = [
    "DEFAULT_MAX_PEER_REQUESTS",
    "EXTENDED_HANDSHAKE_MIN_COST",
    "MAX_CANCELLED_REQUESTS",
    "MAX_EXTENDED_HANDSHAKE_BYTES",
    "MAX_EXTENSION_NAME_LENGTH",
    "MAX_PEER_EXTENSION_NAMES",
    "BlockKey",
    "ConnectionLimits",
    "Event",
    "ExtensionMessage",
    "HashKey",
    "PeerConnection",
    "UnknownExtended",
]

DEFAULT_MAX_PEER_REQUESTS: Final = 500
"""How many requests a peer may have outstanding with us: the ``reqq`` we advertise.

libtorrent advertises 500 (its ``max_allowed_in_request_queue`` default)."""

MAX_CANCELLED_REQUESTS: Final = 4096
"""How many cancelled requests are remembered, awaiting a late answer, before the oldest is
forgotten (without the fast extension a honoured cancel is never answered)."""

MAX_PEER_EXTENSION_NAMES: Final = 64
"""How many extension names a peer's extended handshakes may make us remember, besides the
ones we speak ourselves (in our ``m``): clients name about a dozen. Names past this, and names
longer than :data:`MAX_EXTENSION_NAME_LENGTH`, are ignored, since later handshakes add to the
map and a peer sending thousands of made-up names in each would otherwise grow it forever."""

MAX_EXTENDED_HANDSHAKE_BYTES: Final = 1024 * 1024
"""The budget of one connection for the extended handshakes it receives: 1 MiB in all, each
counted as at least :data:`EXTENDED_HANDSHAKE_MIN_COST` bytes. A handshake past it is a
protocol error.

BEP 10 lets a peer send its handshake again (to switch an extension on or off), and each one
is decoded (about 0.2 s of CPU per MiB of nested junk) and handed to every service and to the
owner. Real clients send one or two of a few hundred bytes; the budget allows 16 of the
largest (:data:`~bip_peer.MAX_EXTENDED_HANDSHAKE_SIZE`) or 1024 small ones."""

EXTENDED_HANDSHAKE_MIN_COST: Final = 1024
"""What a received extended handshake shorter than this costs of
:data:`MAX_EXTENDED_HANDSHAKE_BYTES`: it bounds how many times a peer's handshakes reach the
services, not only how many bytes are decoded."""

_MAX_PENDING_CHANGES: Final = 1024
"""The pieces whose haves and donthaves a connection keeps before the piece count is known;
past it, a have or donthave for another piece is ignored, and lost for the connection (it
is not asked again: the peer is taken not to have that piece, or to have it still).

Kept sparse (a dict of at most this many pieces, some 70 KB), not as a bitfield grown to the
highest index announced: a 9-byte have for piece 8,388,599 made that a 1 MiB bitfield (and a
donthave a second one), 400 MiB over 200 magnet peers. libtorrent, without the metadata,
ignores a have for a piece past its ``max_piece_count`` (2**21) and otherwise grows its
bitfield to the index, up to 256 KiB per peer for 9 bytes sent: its semantics at that bound
(a bitfield grown once past this many pieces) would still let 200 magnet peers make us hold
50 to 100 MiB. An honest peer says what it has with a bitfield or have all (kept whole, as
it came) and sends a few haves while we fetch the metadata, not a thousand: what is lost is
availability a peer announced piece by piece in bulk, which costs us a source for those
pieces, never a wrong block."""

BlockKey: TypeAlias = tuple[int, int, int]
"""A block request as ``(index, begin, length)``."""

HashKey: TypeAlias = tuple[bytes, int, int, int, int]
"""A BEP 52 hash request as ``(pieces_root, base_layer, index, length, proof_layers)``."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one peer may make a :class:`PeerConnection` hold or tolerate.

    Attributes:
        max_message_length: the largest message accepted (see ``MessageDecoder``).
        max_block_length: the largest block we request or serve (16 KiB, as every
            client; a larger request from the peer is a protocol error).
        max_peer_requests: the peer's outstanding requests we queue (the ``reqq``
            to advertise in our extended handshake, so at most 2**32 - 1); more are
            refused.
        max_choked_requests: requests refused because we choke the peer, since
            our last choke, before it is a protocol error.
        max_invalid_requests: requests refused for pieces we never announced
            before it is a protocol error.
        max_allowed_fast: allowed-fast pieces we remember from the peer; more are
            ignored (BEP 6 suggests 10).
        max_peer_hash_requests: BEP 52 hash requests from the peer we queue; more
            are answered with a hash reject.
    """

    max_message_length: int = DEFAULT_MAX_MESSAGE_LENGTH
    max_block_length: int = BLOCK_SIZE
    max_peer_requests: int = DEFAULT_MAX_PEER_REQUESTS
    max_choked_requests: int = DEFAULT_MAX_PEER_REQUESTS
    max_invalid_requests: int = 300
    max_allowed_fast: int = 100
    max_peer_hash_requests: int = 64

    def __post_init__(self) -> None:
        """Check every limit is a positive int (a block fits a message, reqq a u32)."""
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")
        # Refused here rather than when PeerManager.add_peer builds our handshake from it.
        if self.max_peer_requests > _U32_MAX:
            raise ValueError(
                f"max_peer_requests must be at most {_U32_MAX} (the reqq an extended"
                f" handshake carries), not {self.max_peer_requests}"
            )
        if self.max_block_length + 9 > self.max_message_length:
            raise ValueError("max_block_length does not fit in max_message_length")


@dataclass(frozen=True, slots=True)
class UnknownExtended:
    """An extended message we cannot decode, surfaced so the caller may ignore it (BEP 10).

    That is one under an id we assigned to no extension we decode, of a ``ut_metadata`` type
    we do not know, or a ``lt_donthave`` / ``upload_only`` message of the wrong size (which
    libtorrent ignores too).

    Attributes:
        extended_id: the id it came under (one of ours).
        name: the extension name we assigned that id to, or None if we assigned it
            to nothing (a peer using ids we never offered).
        payload: the raw payload.
    """

    extended_id: int
    name: str | None
    payload: bytes


ExtensionMessage: TypeAlias = (
    MetadataRequest | MetadataData | MetadataReject | PexMessage | DontHave | UploadOnly
)
"""The extension messages :class:`PeerConnection` decodes and encodes by name."""

Event: TypeAlias = Message | ExtendedHandshake | ExtensionMessage | UnknownExtended
"""What :meth:`PeerConnection.next_event` returns (besides ``NEED_DATA``)."""


# name -> (the message classes, the payload decoder). The decoders raise
# RemoteProtocolError on a malformed payload; ut_metadata's gives None for a
# message type it does not know (surfaced as UnknownExtended).
_EXTENSIONS: Final[dict[str, tuple[tuple[type, ...], Callable[[bytes], object]]]] = {
    "ut_metadata": ((MetadataRequest, MetadataData, MetadataReject), decode_metadata_message),
    "ut_pex": ((PexMessage,), PexMessage.decode_payload),
    "lt_donthave": ((DontHave,), DontHave.decode_payload),
    "upload_only": ((UploadOnly,), UploadOnly.decode_payload),
}
# Extensions whose wrong-size payload is ignored (surfaced as UnknownExtended), not fatal:
# libtorrent's on_extended logs a wrong-length lt_donthave or upload_only and keeps the
# connection (a malformed ut_metadata or ut_pex dictionary disconnects there, and here).
_IGNORED_WHEN_MALFORMED: Final = frozenset({"lt_donthave", "upload_only"})
_NAME_OF_CLASS: Final[dict[type, str]] = {
    cls: name for name, (classes, _) in _EXTENSIONS.items() for cls in classes
}

# Messages that exist only with an extension bit both sides set.
_REQUIRES: Final[dict[type, tuple[Extensions, str]]] = {
    Suggest: (Extensions.FAST, "the fast extension (BEP 6)"),
    HaveAll: (Extensions.FAST, "the fast extension (BEP 6)"),
    HaveNone: (Extensions.FAST, "the fast extension (BEP 6)"),
    RejectRequest: (Extensions.FAST, "the fast extension (BEP 6)"),
    AllowedFast: (Extensions.FAST, "the fast extension (BEP 6)"),
    Extended: (Extensions.EXTENSION_PROTOCOL, "the extension protocol (BEP 10)"),
}


_S = TypeVar("_S")


class _RequestsView(Set[BlockKey]):
    """Our outstanding requests as a live, read-only set of ``(index, begin, length)``.

    A view of the ``(index, begin) -> length`` map the connection matches pieces with,
    rather than a second structure to keep in step with it once per block each way.
    """

    __slots__ = ("_lengths",)

    def __init__(self, lengths: Mapping[tuple[int, int], int]) -> None:
        self._lengths = lengths

    def __contains__(self, key: object) -> bool:
        if type(key) is not tuple or len(key) != 3:
            return False
        index, begin, length = key
        requested = self._lengths.get((index, begin))
        return requested is not None and requested == length

    def __iter__(self) -> Iterator[BlockKey]:
        return ((index, begin, length) for (index, begin), length in self._lengths.items())

    def __len__(self) -> int:
        return len(self._lengths)

    def __repr__(self) -> str:
        return f"{{{', '.join(map(repr, self))}}}" if self._lengths else "set()"

    @classmethod
    def _from_iterable(cls, iterable: Iterable[_S], /) -> set[_S]:
        # What the Set operators (&, |, -) build: plain sets, as the set this view replaced.
        return set(iterable)


class PeerConnection:
    """The state of one peer wire connection after the handshake, both ways.

    >>> from bip_handshake import Extensions
    >>> from bip_metainfo import InfoHash
    >>> ext = Extensions.FAST | Extensions.EXTENSION_PROTOCOL
    >>> conn = PeerConnection(num_pieces=4, info_hash=InfoHash(v1=bytes(20)),
    ...                       our_extensions=ext, their_extensions=ext)
    >>> conn.send(HaveNone()).hex()
    '000000010f'
    >>> conn.receive_data(HaveAll().encode() + Unchoke().encode())
    >>> conn.next_event(), conn.next_event(), conn.next_event()
    (HaveAll(), Unchoke(), NEED_DATA)
    >>> conn.peer_pieces.is_seed, conn.peer_choking
    (True, False)
    >>> conn.send(Request(0, 0, 16384)).hex()
    '0000000d06000000000000000000004000'
    >>> sorted(conn.our_requests)
    [(0, 0, 16384)]
    """

    # Slots: with this many attributes an instance dict does not share its keys (CPython
    # shares at most 30), so each of the several attribute accesses per block would be a
    # dictionary look-up instead of a fixed offset.
    __slots__ = (
        "__weakref__",
        "_allowed_fast_from_peer",
        "_allowed_fast_to_peer",
        "_am_choking",
        "_am_interested",
        "_cancelled",
        "_common",
        "_decoder",
        "_error",
        "_fast",
        "_handshake_budget",
        "_info_hash",
        "_limits",
        "_max_block_length",
        "_max_peer_requests",
        "_next_message",
        "_num_pieces",
        "_our_ext_ids",
        "_our_ext_names",
        "_our_extensions",
        "_our_handshake",
        "_our_hash_requests",
        "_our_pieces",
        "_our_request_lengths",
        "_our_requests",
        "_outgoing",
        "_peer_address",
        "_peer_choking",
        "_peer_hash_requests",
        "_peer_interested",
        "_peer_pieces",
        "_peer_requests",
        "_peer_upload_only",
        "_pending_bitfield",
        "_pending_changes",
        "_pending_have_all",
        "_swarm_id",
        "_their_ext_ids",
        "_their_extensions",
        "_their_handshake",
        "_upload_only",
        "_we_talked_pieces",
        "choked_requests",
        "ignored_allowed_fast",
        "ignored_out_of_range",
        "invalid_requests",
        "refused_requests",
        "unmatched_rejects",
        "unrequested_blocks",
        "unrequested_bytes",
    )

    def __init__(
        self,
        *,
        num_pieces: int | None,
        info_hash: InfoHash,
        our_extensions: Extensions,
        their_extensions: Extensions,
        peer_address: PeerAddress | None = None,
        limits: ConnectionLimits | None = None,
        swarm_id: bytes | None = None,
    ) -> None:
        """Start the conversation after a completed handshake.

        Args:
            num_pieces: the torrent's piece count, or None until the metadata is
                known (a magnet link); set :attr:`num_pieces` when it is.
            info_hash: the torrent.
            our_extensions: the reserved bytes we sent.
            their_extensions: the reserved bytes the peer sent; the extensions in
                use are those both set.
            peer_address: the peer's address, for :meth:`allowed_fast_set`.
            limits: bounds on what the peer can make us hold (defaults if None).
            swarm_id: the 20-byte id used in the handshake (default: the v1
                info-hash, else the truncated v2 one); it seeds the allowed-fast set.
        """
        if not isinstance(our_extensions, Extensions) or not isinstance(
            their_extensions, Extensions
        ):
            raise TypeError("our_extensions and their_extensions must be Extensions")
        self._limits = limits if limits is not None else ConnectionLimits()
        self._info_hash = info_hash
        if swarm_id is None:
            swarm_id = info_hash.swarm_ids()[0]
        elif not info_hash.matches(swarm_id):
            raise ValueError("swarm_id is not one of the torrent's swarm ids")
        self._swarm_id = swarm_id
        self._peer_address = peer_address
        self._our_extensions = our_extensions
        self._their_extensions = their_extensions
        self._common = our_extensions & their_extensions
        self._fast = Extensions.FAST in self._common
        self._decoder = MessageDecoder(
            self._limits.max_message_length, max_block_length=self._limits.max_block_length
        )
        # Bound once: next_event calls it per message.
        self._next_message = self._decoder.next_message
        # Limits read per block, kept as plain attributes (ConnectionLimits is frozen).
        self._max_block_length = self._limits.max_block_length
        self._max_peer_requests = self._limits.max_peer_requests
        self._error: RemoteProtocolError | None = None
        self._outgoing = bytearray()

        self._am_choking = True
        self._am_interested = False
        self._peer_choking = True
        self._peer_interested = False

        self._num_pieces: int | None = None
        self._peer_pieces = PieceSet(0)
        self._our_pieces = PieceSet(0)
        # Availability heard before the piece count is known (magnet links).
        self._pending_bitfield: bytes | None = None
        self._pending_have_all = False
        # The haves (True) and donthaves (False) since, by piece: the last word on a piece
        # wins. Sparse and bounded (_MAX_PENDING_CHANGES pieces), not a bitfield grown to the
        # highest index: one 9-byte have for piece 8 million would make that 1 MiB.
        self._pending_changes: dict[int, bool] = {}
        self._we_talked_pieces = False

        # Requests we cancelled whose answer (a piece that crossed the cancel, or
        # with fast a reject) may still come; oldest first, bounded.
        self._cancelled: dict[BlockKey, None] = {}
        # Our outstanding requests, (index, begin) -> length: a piece is matched by its
        # position, and our_requests is a view of it (one structure to update per block).
        self._our_request_lengths: dict[tuple[int, int], int] = {}
        self._our_requests = _RequestsView(self._our_request_lengths)
        self._peer_requests: set[BlockKey] = set()
        self._allowed_fast_to_peer: set[int] = set()
        self._allowed_fast_from_peer: set[int] = set()
        self._our_hash_requests: set[HashKey] = set()
        self._peer_hash_requests: set[HashKey] = set()

        self._our_ext_ids: dict[str, int] = {}
        self._our_ext_names: dict[int, str] = {}
        self._their_ext_ids: dict[str, int] = {}
        self._their_handshake: ExtendedHandshake | None = None
        self._our_handshake: ExtendedHandshake | None = None
        self._handshake_budget = MAX_EXTENDED_HANDSHAKE_BYTES  # bytes left for theirs
        self._upload_only = False
        self._peer_upload_only = False

        self.unrequested_blocks = 0
        """Piece messages received that answered no outstanding request (dropped)."""
        self.unrequested_bytes = 0
        """Their block bytes."""
        self.unmatched_rejects = 0
        """Rejects (and hash replies) received for nothing outstanding (dropped)."""
        self.refused_requests = 0
        """Peer requests refused (rejected with fast, dropped without)."""
        self.choked_requests = 0
        """Peer requests refused because we choke it, since our last choke."""
        self.invalid_requests = 0
        """Peer requests refused for pieces we did not announce."""
        self.ignored_allowed_fast = 0
        """Allowed-fast messages beyond ``max_allowed_fast`` (ignored)."""
        self.ignored_out_of_range = 0
        """Suggest, allowed-fast, cancel and reject messages for a piece past the end (ignored)."""

        if num_pieces is not None:
            self.num_pieces = num_pieces

    # ------------------------------------------------------------------ state

    @property
    def limits(self) -> ConnectionLimits:
        """The limits in force."""
        return self._limits

    @property
    def info_hash(self) -> InfoHash:
        """The torrent."""
        return self._info_hash

    @property
    def peer_address(self) -> PeerAddress | None:
        """The peer's address, if given."""
        return self._peer_address

    @property
    def extensions(self) -> Extensions:
        """The handshake extensions both sides set (the ones in use)."""
        return self._common

    @property
    def fast(self) -> bool:
        """Whether the fast extension (BEP 6) is in use."""
        return self._fast

    @property
    def am_choking(self) -> bool:
        """Whether we choke the peer (we start choking, BEP 3)."""
        return self._am_choking

    @property
    def am_interested(self) -> bool:
        """Whether we told the peer we are interested."""
        return self._am_interested

    @property
    def peer_choking(self) -> bool:
        """Whether the peer chokes us."""
        return self._peer_choking

    @property
    def peer_interested(self) -> bool:
        """Whether the peer is interested in us."""
        return self._peer_interested

    @property
    def num_pieces(self) -> int | None:
        """The torrent's piece count, or None while unknown (magnet links).

        Set it once the metadata is known: what the peer said about its pieces
        meanwhile is then checked.

        Setting it raises :class:`TypeError` for a value that is not an int,
        :class:`ValueError` if it is already set to another value or out of
        range, and :class:`~bip_peer.RemoteProtocolError` if the peer's earlier
        bitfield or haves do not fit (the connection is then dead).
        """
        return self._num_pieces

    @num_pieces.setter
    def num_pieces(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"num_pieces must be an int, not {value!r}")
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"num_pieces must be a uint32, not {value}")
        if self._num_pieces is not None:
            if value != self._num_pieces:
                raise ValueError(f"num_pieces is already {self._num_pieces}")
            return
        self._check_alive()
        try:
            peer = self._settle_pending(value)
        except RemoteProtocolError as error:
            self._error = error
            raise
        self._num_pieces = value
        self._peer_pieces = peer
        self._our_pieces = PieceSet(value)
        self._decoder.num_pieces = value
        # Allowed-fast pieces beyond the torrent are forgotten, as libtorrent does.
        self._allowed_fast_from_peer = {i for i in self._allowed_fast_from_peer if i < value}
        self._pending_bitfield = None
        self._pending_changes = {}

    def _settle_pending(self, num_pieces: int) -> PieceSet:
        if self._pending_bitfield is not None:
            try:
                peer = PieceSet.from_bitfield(self._pending_bitfield, num_pieces)
            except ValueError as error:
                raise RemoteProtocolError(f"the peer's bitfield: {error}") from None
        elif self._pending_have_all:
            peer = PieceSet.full(num_pieces)
        else:
            peer = PieceSet(num_pieces)
        changes = self._pending_changes
        past = [index for index in changes if index >= num_pieces]  # at most a thousand
        if past:
            haves = [index for index in past if changes[index]]
            if haves:
                raise RemoteProtocolError(
                    f"the peer announced piece {min(haves)} of a {num_pieces}-piece torrent"
                )
            raise RemoteProtocolError(
                f"the peer dropped piece {min(past)} of a {num_pieces}-piece torrent"
            )
        # All fit the torrent now: applied over whatever availability message preceded them.
        for index, has in changes.items():
            if has:
                peer.add(index)
            else:
                peer.discard(index)
        return peer

    @property
    def peer_pieces(self) -> PieceSet:
        """The pieces the peer has (empty, of size 0, while :attr:`num_pieces` is unknown).

        Read it anew rather than keeping it: a bitfield or the piece count replaces it.
        """
        return self._peer_pieces

    @property
    def peer_has_all(self) -> bool:
        """Whether the peer has every piece (known even before :attr:`num_pieces`)."""
        if self._num_pieces is None:
            return self._pending_have_all and False not in self._pending_changes.values()
        return self._peer_pieces.is_seed

    @property
    def our_pieces(self) -> PieceSet:
        """The pieces we announced to the peer (bitfield, have all, haves, minus donthaves).

        Read it anew rather than keeping it: our bitfield or the piece count replaces it.
        """
        return self._our_pieces

    @property
    def our_requests(self) -> Set[BlockKey]:
        """Our outstanding requests, as ``(index, begin, length)`` (read only)."""
        return self._our_requests

    @property
    def cancelled_requests(self) -> Set[BlockKey]:
        """Requests we cancelled whose answer may still arrive (read only).

        A piece or reject answering one is dropped (counted as unrequested /
        unmatched) instead of being taken for a later request of the same block.
        """
        return self._cancelled.keys()

    @property
    def peer_requests(self) -> Set[BlockKey]:
        """The peer's requests we owe an answer to, as ``(index, begin, length)`` (read only)."""
        return self._peer_requests

    @property
    def our_hash_requests(self) -> Set[HashKey]:
        """Our outstanding BEP 52 hash requests (read only)."""
        return self._our_hash_requests

    @property
    def peer_hash_requests(self) -> Set[HashKey]:
        """The peer's BEP 52 hash requests we owe an answer to (read only)."""
        return self._peer_hash_requests

    @property
    def allowed_fast_to_peer(self) -> Set[int]:
        """Pieces we allowed the peer to request while choked (read only)."""
        return self._allowed_fast_to_peer

    @property
    def allowed_fast_from_peer(self) -> Set[int]:
        """Pieces the peer allowed us to request while choked (read only)."""
        return self._allowed_fast_from_peer

    @property
    def our_extension_ids(self) -> Mapping[str, int]:
        """Extension name -> the id we assigned (from our extended handshake)."""
        return self._our_ext_ids

    @property
    def their_extension_ids(self) -> Mapping[str, int]:
        """Extension name -> the id the peer assigned (from its extended handshakes)."""
        return self._their_ext_ids

    @property
    def their_handshake(self) -> ExtendedHandshake | None:
        """What the peer's extended handshakes said, merged, if it sent any.

        BEP 10 lets a later handshake carry only the changes: a field it leaves out (or
        sends invalid, which decoding drops) keeps the value an earlier one gave, one it
        sends replaces it, as libtorrent reads ``reqq``, ``p``, ``v`` and the others only
        when present. ``m`` is :attr:`their_extension_ids`, changed only by the names it
        carries (0 removes a name, one left out keeps its id, as BEP 10 says), where
        libtorrent resets the ``upload_only``, ``ut_holepunch`` and ``lt_donthave`` ids a
        later ``m`` leaves out and drops the other extensions it does not name. ``extra``
        keeps its earliest keys up to :data:`~bip_peer._extended.MAX_HANDSHAKE_EXTRA_KEYS`.
        The event :meth:`next_event` returns is the handshake as received.
        """
        return self._their_handshake

    @property
    def our_handshake(self) -> ExtendedHandshake | None:
        """Our latest extended handshake, if sent."""
        return self._our_handshake

    @property
    def peer_reqq(self) -> int | None:
        """How many outstanding requests the peer says it queues (``reqq``), if it said
        (in its latest handshake that has one)."""
        return None if self._their_handshake is None else self._their_handshake.reqq

    @property
    def upload_only(self) -> bool:
        """Whether we told the peer we only upload (BEP 21)."""
        return self._upload_only

    @property
    def peer_upload_only(self) -> bool:
        """Whether the peer told us it only uploads (BEP 21): it wants nothing from us."""
        return self._peer_upload_only

    def allowed_fast_set(self, k: int = DEFAULT_ALLOWED_FAST_SET_SIZE) -> list[int]:
        """The BEP 6 allowed-fast set to offer this peer, minus pieces it has.

        Send each as :class:`AllowedFast`. Empty when the piece count or the
        peer's address is unknown, as libtorrent does before it has the metadata.
        """
        if self._num_pieces is None or self._peer_address is None:
            return []
        pieces = allowed_fast_set(self._peer_address.host, self._swarm_id, self._num_pieces, k)
        return [index for index in pieces if index not in self._peer_pieces]

    def withdraw_peer_request(self, index: int, begin: int, length: int) -> bool:
        """Forget a request of the peer that we will never answer (a block the disk could
        not read), so that it stops holding one of the ``reqq`` slots we advertised.

        For a peer without the fast extension, which gets no reject (it times the request
        out); with fast, send :class:`RejectRequest` instead (BEP 6 answers every request),
        which frees the slot too. Nothing is sent. Returns whether the request was open.
        """
        key = (index, begin, length)
        if key not in self._peer_requests:
            return False
        self._peer_requests.discard(key)
        return True

    def __repr__(self) -> str:
        """The peer and the state a log line wants."""
        flags = [
            name
            for name, on in (
                ("am_choking", self._am_choking),
                ("am_interested", self._am_interested),
                ("peer_choking", self._peer_choking),
                ("peer_interested", self._peer_interested),
                ("fast", self._fast),
                ("failed", self._error is not None),
            )
            if on
        ]
        return (
            f"PeerConnection({self._peer_address or 'unknown peer'}, {' '.join(flags)}, "
            f"pieces={self._peer_pieces.count}/{self._num_pieces}, "
            f"requests={len(self._our_requests)} out/{len(self._peer_requests)} in)"
        )

    # ------------------------------------------------------------------ receiving

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes received from the peer (kept by reference: do not modify them).

        Raises:
            RemoteProtocolError: the connection already failed.
        """
        self._check_alive()
        self._decoder.receive_data(data)

    def receive_eof(self) -> None:
        """The peer closed the connection.

        Raises:
            RemoteProtocolError: it closed in the middle of a message.
        """
        self._check_alive()
        try:
            self._decoder.receive_eof()
        except RemoteProtocolError as error:
            self._error = error
            raise

    def next_event(self) -> Event | NeedData:
        """The next message from the peer, after the state is updated; or ``NEED_DATA``.

        Messages the connection handles itself (a refused request, an
        unrequested block, a cancel or reject for nothing outstanding) are not
        returned; replies they need are in :meth:`data_to_send`.

        Raises:
            RemoteProtocolError: the peer broke the protocol; the connection is dead
                and every later call raises the same error.
        """
        if self._error is not None:
            raise self._error
        next_message = self._next_message
        try:
            while True:
                message = next_message()
                # The receive hot path: pieces (downloading) and requests (seeding) need no
                # extension check and no table look-up, so they are tested first.
                if type(message) is Piece:
                    event = self._on_piece(message)
                elif type(message) is Request:
                    event = self._on_request(message)
                elif message is NEED_DATA:
                    return NEED_DATA
                else:
                    assert isinstance(message, Message)
                    event = self._receive(message)
                if event is not None:
                    return event
        except RemoteProtocolError as error:
            self._error = error
            raise

    def data_to_send(self) -> bytes:
        """Bytes owed to the peer because of what it sent (rejects, with fast); then cleared."""
        if not self._outgoing:  # nearly always: the manager asks after every read
            return b""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def _check_alive(self) -> None:
        if self._error is not None:
            raise self._error

    def _receive(self, message: Message) -> Event | None:
        required = _REQUIRES.get(type(message))
        if required is not None and required[0] not in self._common:
            raise RemoteProtocolError(
                f"the peer sent {type(message).__name__} without {required[1]}"
            )
        handler = _RECEIVE.get(type(message))
        if handler is None:
            return message  # KeepAlive, UnknownMessage: nothing to track
        return handler(self, message)

    def _out_of_range(self, index: int) -> bool:
        """Whether ``index`` is past the end; counted, for the messages that are then ignored.

        libtorrent ignores a suggest, allowed fast, cancel or reject for a piece that
        does not exist (it logs it and carries on), so we do the same: they ask nothing
        of us that we could get wrong. A have, a request or a piece past the end is
        still an error (:meth:`_check_index`).
        """
        if self._num_pieces is not None and index >= self._num_pieces:
            self.ignored_out_of_range += 1
            return True
        return False

    def _check_index(self, index: int, what: str) -> None:
        if self._num_pieces is not None and index >= self._num_pieces:
            raise RemoteProtocolError(
                f"{what} for piece {index} of a {self._num_pieces}-piece torrent"
            )

    def _refuse(self, index: int, begin: int, length: int) -> None:
        self.refused_requests += 1
        if self._fast:
            self._outgoing += RejectRequest(index, begin, length).encode()

    def _on_choke(self, message: Message) -> Event:
        self._peer_choking = True
        if not self._fast:
            # BEP 3: a choke discards every pending request. With fast they stay
            # until the peer rejects them (BEP 6).
            self._our_request_lengths.clear()
            self._cancelled.clear()
        return message

    def _on_unchoke(self, message: Message) -> Event:
        self._peer_choking = False
        return message

    def _on_interested(self, message: Message) -> Event:
        self._peer_interested = True
        return message

    def _on_not_interested(self, message: Message) -> Event:
        self._peer_interested = False
        return message

    def _on_bitfield(self, message: Message) -> Event:
        # Accepted at any time, replacing what the peer said before, as libtorrent does.
        assert isinstance(message, Bitfield)
        if self._num_pieces is None:
            self._forget_pending()
            self._pending_bitfield = message.bits
        else:
            try:
                self._peer_pieces = PieceSet.from_bitfield(message.bits, self._num_pieces)
            except ValueError as error:
                raise RemoteProtocolError(f"the peer's bitfield: {error}") from None
        return message

    def _on_have_all(self, message: Message) -> Event:
        if self._num_pieces is None:
            self._forget_pending()
            self._pending_have_all = True
        else:
            self._peer_pieces = PieceSet.full(self._num_pieces)
        return message

    def _on_have_none(self, message: Message) -> Event:
        if self._num_pieces is None:
            self._forget_pending()
        else:
            self._peer_pieces = PieceSet(self._num_pieces)
        return message

    def _forget_pending(self) -> None:
        """A new bitfield, have all or have none before the piece count: what came before
        is replaced, so the earlier haves and donthaves no longer count."""
        self._pending_bitfield = None
        self._pending_have_all = False
        self._pending_changes = {}

    def _on_have(self, message: Message) -> Event:
        assert isinstance(message, Have)
        self._check_index(message.index, "have")
        self._peer_has(message.index)
        return message

    def _peer_has(self, index: int) -> None:
        if self._num_pieces is not None:
            self._peer_pieces.add(index)
            return
        self._remember_pending(index, True, "have")

    def _remember_pending(self, index: int, has: bool, what: str) -> None:
        """Keep a have (``has``) or donthave heard before the piece count is known.

        An index that could not fit any bitfield message is refused. Past
        ``_MAX_PENDING_CHANGES`` pieces, a have or donthave for a piece not heard of yet is
        ignored, and lost for the connection: once the piece count is set, the peer is
        taken not to have that piece (a have), or to have it still (a donthave after a
        bitfield or have all), until it says otherwise. libtorrent ignores only a have past
        its ``max_piece_count``; see ``_MAX_PENDING_CHANGES`` for why not that: an honest
        peer says what it has with a bitfield or have all, and sends a few haves while we
        fetch the metadata, not thousands.
        """
        if index >= (self._limits.max_message_length - 1) * 8:
            raise RemoteProtocolError(f"{what} for piece {index}: no torrent here has that many")
        changes = self._pending_changes
        if index in changes or len(changes) < _MAX_PENDING_CHANGES:
            changes[index] = has

    def _on_request(self, message: Request) -> Event | None:
        # Once per block served: the checks are inlined (no _check_index call).
        index, begin, length = message.index, message.begin, message.length
        if not 0 < length <= self._max_block_length:
            raise RemoteProtocolError(
                f"request for {length} bytes (limit {self._max_block_length})"
            )
        num_pieces = self._num_pieces
        if num_pieces is not None and index >= num_pieces:
            self._check_index(index, "request")
        key = (index, begin, length)
        peer_requests = self._peer_requests
        if key in peer_requests:
            return None  # a duplicate: it is queued already
        limits = self._limits
        if len(peer_requests) >= self._max_peer_requests or num_pieces is None:
            # Over the queue we advertised, or before we have the metadata (so we
            # announced nothing): refused as libtorrent does, but not held against it.
            self._refuse(index, begin, length)
            return None
        # The index is in range (checked above): test its bit in place, which costs half
        # the Python-level PieceSet.__contains__ call (this runs once per block).
        if not self._our_pieces._bits[index >> 3] & (0x80 >> (index & 7)):
            self.invalid_requests += 1
            if self.invalid_requests > limits.max_invalid_requests:
                raise RemoteProtocolError(
                    f"more than {limits.max_invalid_requests} requests for pieces we do not have"
                )
            self._refuse(index, begin, length)
            return None
        if self._am_choking and not (self._fast and index in self._allowed_fast_to_peer):
            self.choked_requests += 1
            if self.choked_requests > limits.max_choked_requests:
                raise RemoteProtocolError(
                    f"more than {limits.max_choked_requests} requests while choked"
                )
            self._refuse(index, begin, length)
            return None
        peer_requests.add(key)
        return message

    def _on_cancel(self, message: Message) -> Event | None:
        assert isinstance(message, Cancel)
        if self._out_of_range(message.index):
            return None
        key = (message.index, message.begin, message.length)
        if key not in self._peer_requests:
            return None  # already served or refused: the cancel crossed our answer
        self._peer_requests.discard(key)
        if self._fast:
            # With fast every request gets an answer; libtorrent rejects a cancelled one.
            self._outgoing += RejectRequest(*key).encode()
        return message

    def _on_piece(self, message: Piece) -> Event | None:
        index, begin, length = message.index, message.begin, len(message.block)
        num_pieces = self._num_pieces
        if num_pieces is not None and index >= num_pieces:
            self._check_index(index, "piece")
        position = (index, begin)
        lengths = self._our_request_lengths
        # Taken out at once (one look-up in the common case), put back below if this piece
        # does not answer it.
        requested = lengths.pop(position, None)
        if requested == length:
            # The common case. Should the block also answer a cancelled request
            # of the same key, the data is the same either way; the cancelled
            # entry then absorbs the second answer.
            return message
        if length == 0:
            # BitComet rejects with an empty piece; libtorrent reads it so.
            if requested is None:
                self.unmatched_rejects += 1
                return None
            return RejectRequest(index, begin, requested)  # the request is forgotten
        if requested is not None:
            lengths[position] = requested  # still outstanding: this piece is not its answer
        key = (index, begin, length)
        if key in self._cancelled:
            # The answer to a request we cancelled, crossing the cancel.
            del self._cancelled[key]
        elif requested is not None:
            raise RemoteProtocolError(
                f"piece {index} offset {begin}: {length} bytes for a {requested}-byte request"
            )
        self.unrequested_blocks += 1
        self.unrequested_bytes += length
        return None

    def _forget_our_request(self, index: int, begin: int) -> None:
        del self._our_request_lengths[(index, begin)]

    def _on_reject(self, message: Message) -> Event | None:
        assert isinstance(message, RejectRequest)
        if self._out_of_range(message.index):
            return None
        key = (message.index, message.begin, message.length)
        if key in self._cancelled:
            # With fast, a cancelled request is answered by a reject or its piece;
            # this is that answer, not one for a later request of the same block.
            del self._cancelled[key]
            return None
        if key not in self._our_requests:
            self.unmatched_rejects += 1
            return None
        self._forget_our_request(key[0], key[1])
        return message

    def _on_allowed_fast(self, message: Message) -> Event | None:
        assert isinstance(message, AllowedFast)
        if self._out_of_range(message.index):
            return None
        if message.index not in self._allowed_fast_from_peer:
            if len(self._allowed_fast_from_peer) >= self._limits.max_allowed_fast:
                self.ignored_allowed_fast += 1
            else:
                self._allowed_fast_from_peer.add(message.index)
        return message

    def _on_suggest(self, message: Message) -> Event | None:
        assert isinstance(message, Suggest)
        if self._out_of_range(message.index):
            return None
        return message

    def _on_port(self, message: Message) -> Event:
        # Accepted even from a peer that did not set the DHT bit: libtorrent takes such a
        # port message as the peer's DHT support, and refusing it would cost a connection
        # to a peer whose only fault is a missing reserved bit.
        return message

    def _on_hash_request(self, message: Message) -> Event | None:
        assert isinstance(message, HashRequest)
        key = _hash_key(message)
        if key in self._peer_hash_requests:
            return None
        if len(self._peer_hash_requests) >= self._limits.max_peer_hash_requests:
            self.refused_requests += 1
            self._outgoing += HashReject(*key).encode()
            return None
        self._peer_hash_requests.add(key)
        return message

    def _on_hash_answer(self, message: Message) -> Event | None:
        assert isinstance(message, Hashes | HashReject)
        key = _hash_key(message)
        if key not in self._our_hash_requests:
            self.unmatched_rejects += 1
            return None
        self._our_hash_requests.discard(key)
        return message

    def _on_extended(self, message: Message) -> Event | None:
        assert isinstance(message, Extended)
        if message.extended_id == 0:
            return self._on_extended_handshake(message.payload)
        name = self._our_ext_names.get(message.extended_id)
        codec = None if name is None else _EXTENSIONS.get(name)
        if codec is None:
            return UnknownExtended(message.extended_id, name, message.payload)
        try:
            event = codec[1](message.payload)
        except (ValueError, RemoteProtocolError) as error:
            if name in _IGNORED_WHEN_MALFORMED:
                return UnknownExtended(message.extended_id, name, message.payload)
            raise RemoteProtocolError(f"malformed {name} message: {error}") from None
        if event is None:
            return UnknownExtended(message.extended_id, name, message.payload)
        if isinstance(event, DontHave):
            self._check_index(event.index, "lt_donthave")
            self._peer_lost(event.index)
        elif isinstance(event, UploadOnly):
            self._peer_upload_only = event.upload_only
        return event  # type: ignore[return-value]  # the codec table gives these classes

    def _peer_lost(self, index: int) -> None:
        if self._num_pieces is not None:
            self._peer_pieces.discard(index)
            return
        self._remember_pending(index, False, "lt_donthave")

    def _on_extended_handshake(self, payload: bytes) -> Event:
        # Charged before decoding: the decode is what a flood of handshakes costs us.
        self._handshake_budget -= max(len(payload), EXTENDED_HANDSHAKE_MIN_COST)
        if self._handshake_budget < 0:
            raise RemoteProtocolError(
                f"extended handshakes past the budget of {MAX_EXTENDED_HANDSHAKE_BYTES} bytes "
                f"(each counted as at least {EXTENDED_HANDSHAKE_MIN_COST})"
            )
        try:
            handshake = ExtendedHandshake.decode_payload(payload)
        except (ValueError, RemoteProtocolError) as error:
            raise RemoteProtocolError(f"malformed extended handshake: {error}") from None
        _merge_their_ids(self._their_ext_ids, handshake.m, self._our_ext_ids)
        self._their_handshake = _merged_handshake(
            self._their_handshake, handshake, self._their_ext_ids
        )
        if handshake.upload_only is not None:
            self._peer_upload_only = handshake.upload_only
        return handshake

    # ------------------------------------------------------------------ sending

    def send(self, message: Message | ExtendedHandshake | ExtensionMessage) -> bytes:
        """Record that we send ``message`` and return the bytes to write.

        Extension messages (the ``_extended`` classes) are framed under the id the
        peer assigned. ``Choke`` with the fast extension returns the choke
        followed by the rejects we owe for the peer's pending requests.

        Raises:
            StaleSendError: a :class:`LocalProtocolError` for a message overtaken by the
                peer's (a request meeting a choke, a cancel a block that arrived); nothing
                changed.
            LocalProtocolError: the protocol forbids sending it now (nothing changed).
            RemoteProtocolError: the connection already failed.
            TypeError: ``message`` is not a message.
        """
        return b"".join(self.send_parts(message))

    def send_parts(
        self, message: Message | ExtendedHandshake | ExtensionMessage
    ) -> list[bytes | memoryview]:
        """Like :meth:`send`, as pieces to write in order (a block is not copied).

        Raises:
            StaleSendError: a :class:`LocalProtocolError` for a message overtaken by the
                peer's (a request meeting a choke, a cancel a block that arrived); nothing
                changed.
            LocalProtocolError: the protocol forbids sending it now (nothing changed).
            RemoteProtocolError: the connection already failed.
            TypeError: ``message`` is not a message.
        """
        if self._error is not None:
            raise self._error
        # The send hot path: blocks (seeding) and requests (downloading) are told by the
        # identity of their type, before any table or isinstance check (Message is an ABC,
        # whose isinstance costs more than handling a request).
        if type(message) is Piece:
            return self._send_piece(message)
        if type(message) is Request:
            return [self._send_request(message)]
        handler = _SEND.get(type(message))
        if handler is not None:  # the other messages of _messages
            assert isinstance(message, Message)
            required = _REQUIRES.get(type(message))
            if required is not None and required[0] not in self._common:
                raise LocalProtocolError(f"{type(message).__name__} needs {required[1]}")
            extra = handler(self, message)
            if extra:
                return [message.encode(), *extra]
            return [message.encode()]
        if isinstance(message, ExtendedHandshake):
            return [self._send_extended_handshake(message)]
        name = _NAME_OF_CLASS.get(type(message))
        if name is not None:
            assert not isinstance(message, Message | ExtendedHandshake)
            return [self._send_extension(name, message)]
        if not isinstance(message, Message):
            raise TypeError(f"not a peer wire message: {message!r}")
        # KeepAlive, UnknownMessage (and subclasses of messages): nothing to track.
        return [message.encode()]

    def _local_index(self, index: int, what: str) -> None:
        if self._num_pieces is None:
            raise LocalProtocolError(f"{what} before the number of pieces is known")
        if index >= self._num_pieces:
            raise LocalProtocolError(f"{what} for piece {index} of {self._num_pieces}")

    def _local_availability_first(self, message: Message) -> None:
        if self._we_talked_pieces:
            raise LocalProtocolError(
                f"{type(message).__name__} must come before other piece messages"
            )

    def _send_choke(self, message: Message) -> list[bytes]:
        rejects: list[bytes] = []
        if self._fast:
            for key in sorted(self._peer_requests):
                if key[0] not in self._allowed_fast_to_peer:
                    rejects.append(RejectRequest(*key).encode())
            self._peer_requests = {
                key for key in self._peer_requests if key[0] in self._allowed_fast_to_peer
            }
        else:
            self._peer_requests.clear()
        self._am_choking = True
        self.choked_requests = 0
        return rejects

    def _send_unchoke(self, message: Message) -> None:
        self._am_choking = False
        self.choked_requests = 0

    def _send_interested(self, message: Message) -> None:
        self._am_interested = True

    def _send_not_interested(self, message: Message) -> None:
        self._am_interested = False

    def _send_bitfield(self, message: Message) -> None:
        assert isinstance(message, Bitfield)
        self._local_availability_first(message)
        if self._num_pieces is None:
            raise LocalProtocolError("a bitfield before the number of pieces is known")
        try:
            pieces = PieceSet.from_bitfield(message.bits, self._num_pieces)
        except ValueError as error:
            raise LocalProtocolError(str(error)) from None
        self._our_pieces = pieces
        self._we_talked_pieces = True

    def _send_have_all(self, message: Message) -> None:
        self._local_availability_first(message)
        if self._num_pieces is None:
            raise LocalProtocolError("have all before the number of pieces is known")
        self._our_pieces.set_all()
        self._we_talked_pieces = True

    def _send_have_none(self, message: Message) -> None:
        self._local_availability_first(message)
        self._we_talked_pieces = True

    def _send_have(self, message: Message) -> None:
        assert isinstance(message, Have)
        self._local_index(message.index, "have")
        self._our_pieces.add(message.index)
        self._we_talked_pieces = True

    def _send_request(self, message: Request) -> bytes:
        # Once per block requested: the checks are inlined, the message encoded here.
        index, begin, length = message.index, message.begin, message.length
        num_pieces = self._num_pieces
        if num_pieces is None or index >= num_pieces:
            self._local_index(index, "request")
        if not 0 < length <= self._max_block_length:
            raise LocalProtocolError(f"request for {length} bytes (limit {self._max_block_length})")
        # In range (checked above): the bit tested in place, as in _on_request.
        if not self._peer_pieces._bits[index >> 3] & (0x80 >> (index & 7)):
            raise StaleSendError(f"request for piece {index}, which the peer does not have")
        if self._peer_choking and not (self._fast and index in self._allowed_fast_from_peer):
            raise StaleSendError(
                f"request for piece {index} while choked (and not allowed fast)", choked=True
            )
        position = (index, begin)
        lengths = self._our_request_lengths
        if position in lengths:
            raise LocalProtocolError(f"piece {index} offset {begin} is already requested")
        lengths[position] = length
        self._we_talked_pieces = True
        return _U32X3_ID.pack(13, 6, index, begin, length)  # message.encode(), inlined

    def _send_cancel(self, message: Message) -> None:
        assert isinstance(message, Cancel)
        key = (message.index, message.begin, message.length)
        if key not in self._our_requests:
            raise StaleSendError(f"cancel of {key}, which is not outstanding")
        self._forget_our_request(key[0], key[1])
        self._cancelled[key] = None
        if len(self._cancelled) > MAX_CANCELLED_REQUESTS:
            # Without fast a honoured cancel is never answered: forget the oldest.
            del self._cancelled[next(iter(self._cancelled))]

    def _send_piece(self, message: Piece) -> list[bytes | memoryview]:
        # Once per block served; the block is not copied (see Piece.encode_parts).
        index, begin, block = message.index, message.begin, message.block
        key = (index, begin, len(block))
        peer_requests = self._peer_requests
        if key not in peer_requests:
            raise StaleSendError(f"piece {key} answers no pending request of the peer")
        peer_requests.remove(key)
        # message.encode_parts(), inlined.
        return [_PIECE_HEAD.pack(len(block) + 9, 7, index, begin), block]

    def _send_reject(self, message: Message) -> None:
        assert isinstance(message, RejectRequest)
        key = (message.index, message.begin, message.length)
        if key not in self._peer_requests:
            raise StaleSendError(f"reject of {key}, which the peer has not requested")
        self._peer_requests.discard(key)

    def _send_allowed_fast(self, message: Message) -> None:
        assert isinstance(message, AllowedFast)
        self._local_index(message.index, "allowed fast")
        self._allowed_fast_to_peer.add(message.index)

    def _send_suggest(self, message: Message) -> None:
        assert isinstance(message, Suggest)
        self._local_index(message.index, "suggest")

    def _send_port(self, message: Message) -> None:
        if Extensions.DHT not in self._common:
            raise LocalProtocolError("a port message needs the DHT bit on both sides (BEP 5)")

    def _send_hash_request(self, message: Message) -> None:
        assert isinstance(message, HashRequest)
        key = _hash_key(message)
        if key in self._our_hash_requests:
            raise LocalProtocolError("this hash request is already outstanding")
        self._our_hash_requests.add(key)

    def _send_hash_answer(self, message: Message) -> None:
        assert isinstance(message, Hashes | HashReject)
        key = _hash_key(message)
        if key not in self._peer_hash_requests:
            raise LocalProtocolError("this answers no pending hash request of the peer")
        self._peer_hash_requests.discard(key)

    def _send_raw_extended(self, message: Message) -> None:
        assert isinstance(message, Extended)
        if message.extended_id == 0:
            try:
                # Our own payload: kept whole, without the bounds put on a peer's.
                handshake = _decode_handshake(message.payload, received=False)
            except (ValueError, RemoteProtocolError) as error:
                raise LocalProtocolError(f"not an extended handshake: {error}") from None
            self._record_our_handshake(handshake)
        elif message.extended_id not in self._their_ext_ids.values():
            raise LocalProtocolError(
                f"extended id {message.extended_id} is not one the peer assigned"
            )

    def _send_extended_handshake(self, handshake: ExtendedHandshake) -> bytes:
        if Extensions.EXTENSION_PROTOCOL not in self._common:
            raise LocalProtocolError("an extended handshake needs the extension protocol (BEP 10)")
        data = Extended(0, handshake.encode_payload()).encode()
        self._record_our_handshake(handshake)  # checks before it changes anything
        return data

    def _record_our_handshake(self, handshake: ExtendedHandshake) -> None:
        ids = dict(self._our_ext_ids)
        _merge_ids(ids, handshake.m)
        names = {number: name for name, number in ids.items()}
        if len(names) != len(ids):
            # Two extensions under one id: what the peer sends could not be told apart.
            raise LocalProtocolError(f"extension ids must be distinct, not {ids}")
        self._our_ext_ids = ids
        self._our_ext_names = names
        self._our_handshake = handshake
        if handshake.upload_only is not None:
            self._upload_only = handshake.upload_only

    def _send_extension(self, name: str, message: ExtensionMessage) -> bytes:
        if Extensions.EXTENSION_PROTOCOL not in self._common:
            raise LocalProtocolError(f"{name} needs the extension protocol (BEP 10)")
        their_id = self._their_ext_ids.get(name)
        if their_id is None:
            raise LocalProtocolError(f"the peer does not support {name}")
        if isinstance(message, DontHave):
            self._local_index(message.index, "lt_donthave")
        data = Extended(their_id, message.encode_payload()).encode()
        if isinstance(message, DontHave):
            self._our_pieces.discard(message.index)
        elif isinstance(message, UploadOnly):
            self._upload_only = message.upload_only
        return data


def _hash_key(message: HashRequest | Hashes | HashReject) -> HashKey:
    return (
        message.pieces_root,
        message.base_layer,
        message.index,
        message.length,
        message.proof_layers,
    )


def _merged_handshake(
    old: ExtendedHandshake | None, new: ExtendedHandshake, ids: Mapping[str, int]
) -> ExtendedHandshake:
    """``new`` on top of ``old``: fields ``new`` lacks keep their old values, ``m`` is the
    merged ``ids`` (a later handshake may carry only changes, BEP 10), ``extra`` stays
    bounded as one received handshake's is."""
    if old is None:
        return replace(new, m=ids)
    extra = dict(old.extra)
    for key, value in new.extra.items():
        if key in extra or len(extra) < MAX_HANDSHAKE_EXTRA_KEYS:
            extra[key] = value
    # Every optional field the same way, so that one added to ExtendedHandshake is merged too.
    kept = {
        name: getattr(old, name) if getattr(new, name) is None else getattr(new, name)
        for name in _OPTIONAL_HANDSHAKE_FIELDS
    }
    return ExtendedHandshake(m=ids, extra=extra, **kept)


_OPTIONAL_HANDSHAKE_FIELDS = tuple(
    field.name for field in fields(ExtendedHandshake) if field.name not in ("m", "extra")
)


def _merge_ids(ids: dict[str, int], m: Mapping[str, int]) -> None:
    """Apply a handshake's ``m`` to an id map: later handshakes update it, 0 removes."""
    for name, number in m.items():
        if number:
            ids[name] = number
        else:
            ids.pop(name, None)


def _merge_their_ids(ids: dict[str, int], m: Mapping[str, int], ours: Mapping[str, int]) -> None:
    """:func:`_merge_ids` for the peer's ``m``, bounded: a name we speak is always taken, any
    other only while fewer than :data:`MAX_PEER_EXTENSION_NAMES` others are kept, and only if
    it is at most :data:`MAX_EXTENSION_NAME_LENGTH` long (the peer's other names change
    nothing we do, so ignoring them costs nothing)."""
    others = sum(1 for name in ids if name not in ours)
    for name, number in m.items():
        if not number:
            ids.pop(name, None)
        elif name in ids or name in ours:
            ids[name] = number
        elif others < MAX_PEER_EXTENSION_NAMES and len(name) <= MAX_EXTENSION_NAME_LENGTH:
            ids[name] = number
            others += 1


_Receive = Callable[[PeerConnection, Message], Event | None]
_Send = Callable[[PeerConnection, Message], list[bytes] | None]

# The state machine, as tables of (message type) -> handler per direction. The
# handlers check the state, raise before changing anything, then update it.
_RECEIVE: Final[dict[type, _Receive]] = {
    Choke: PeerConnection._on_choke,
    Unchoke: PeerConnection._on_unchoke,
    Interested: PeerConnection._on_interested,
    NotInterested: PeerConnection._on_not_interested,
    Have: PeerConnection._on_have,
    Bitfield: PeerConnection._on_bitfield,
    # Request and Piece: dispatched by next_event itself (the hot path).
    Cancel: PeerConnection._on_cancel,
    Port: PeerConnection._on_port,
    Suggest: PeerConnection._on_suggest,
    HaveAll: PeerConnection._on_have_all,
    HaveNone: PeerConnection._on_have_none,
    RejectRequest: PeerConnection._on_reject,
    AllowedFast: PeerConnection._on_allowed_fast,
    Extended: PeerConnection._on_extended,
    HashRequest: PeerConnection._on_hash_request,
    Hashes: PeerConnection._on_hash_answer,
    HashReject: PeerConnection._on_hash_answer,
}
_SEND: Final[dict[type, _Send]] = {
    Choke: PeerConnection._send_choke,
    Unchoke: PeerConnection._send_unchoke,
    Interested: PeerConnection._send_interested,
    NotInterested: PeerConnection._send_not_interested,
    Have: PeerConnection._send_have,
    Bitfield: PeerConnection._send_bitfield,
    # Request and Piece: dispatched by send_parts itself (the hot path).
    Cancel: PeerConnection._send_cancel,
    Port: PeerConnection._send_port,
    Suggest: PeerConnection._send_suggest,
    HaveAll: PeerConnection._send_have_all,
    HaveNone: PeerConnection._send_have_none,
    RejectRequest: PeerConnection._send_reject,
    AllowedFast: PeerConnection._send_allowed_fast,
    Extended: PeerConnection._send_raw_extended,
    HashRequest: PeerConnection._send_hash_request,
    Hashes: PeerConnection._send_hash_answer,
    HashReject: PeerConnection._send_hash_answer,
}
