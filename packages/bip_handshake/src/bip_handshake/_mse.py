"""Message Stream Encryption (MSE/PE): sans-IO initiator and receiver state machines.

The handshake (A is the initiator, B the receiver; HASH is SHA-1, ENCRYPT is RC4-drop1024)::

    1 A->B: Ya, PadA
    2 B->A: Yb, PadB
    3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
            ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
    4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload stream)
    5 A->B: ENCRYPT2(payload stream)

Both cores follow h11: feed bytes with ``receive_data`` (``b""`` means the peer closed), call
``next_event`` until it returns ``NEED_DATA``, and send whatever ``data_to_send`` returns after each
round. The handshake ends with one :class:`MSEEstablished` event; from then on the shell passes the
payload stream through ``encrypt`` / ``decrypt`` (the identity when plaintext was negotiated) and
hands ``event.data`` (the peer's initial payload and any decrypted trailing bytes) to the next
layer.

Fallback, as libtorrent does it: an initiator with :attr:`EncryptionPolicy.PREFER_ENCRYPTED` that
fails (a :class:`RemoteProtocolError`, or the peer closing the connection mid-handshake) may be
retried by the *shell* on a fresh connection with :attr:`EncryptionPolicy.PLAINTEXT_ONLY`. The core
never reconnects by itself.

Every buffer an untrusted peer can fill is bounded: pads are at most 512 bytes, the resynchronising
scans for ``HASH('req1', S)`` and the encrypted VC stop after 512 + 20 (resp. 512 + 8) bytes, the
initial payload is capped by ``max_initial_payload``; a flood of padding ends in a
:class:`RemoteProtocolError`.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal

from ._errors import LocalProtocolError, RemoteProtocolError
from ._handshake import NEED_DATA, Pending
from ._mse_crypto import (
    DH_KEY_LEN,
    VC,
    RC4Stream,
    dh_public_key,
    dh_secret,
    hash_concat,
    is_valid_public_key,
    stream_keys,
)

__all__ = [
    "CRYPTO_PLAINTEXT",
    "CRYPTO_RC4",
    "EncryptionPolicy",
    "MSEEstablished",
    "MSEEvent",
    "MSEInitiator",
    "MSEReceiver",
    "SkeyTable",
]

#: crypto_provide / crypto_select bit: no encryption after the handshake.
CRYPTO_PLAINTEXT: Final = 0x01
#: crypto_provide / crypto_select bit: RC4 for the payload stream.
CRYPTO_RC4: Final = 0x02

MAX_PAD_LEN: Final = 512
#: The BEP 3 handshake prefix: a receiver uses it to tell a plaintext peer from an MSE one.
_PSTR: Final = b"\x13BitTorrent protocol"
_PRIVATE_KEY_BITS: Final = 160
_SKEY_LEN: Final = 20


class EncryptionPolicy(enum.Enum):
    """What a side is willing to speak.

    - ``PLAINTEXT_ONLY``: no MSE. An initiator sends its initial payload in the clear at once; a
      receiver accepts a plain BEP 3 handshake and refuses an MSE one.
    - ``PREFER_ENCRYPTED``: an initiator provides RC4 and plaintext; a receiver accepts a plain
      BEP 3 handshake or MSE, selecting RC4 whenever the peer provides it.
    - ``REQUIRE_ENCRYPTED``: only MSE with RC4; a plaintext handshake is refused.
    """

    PLAINTEXT_ONLY = "plaintext_only"
    PREFER_ENCRYPTED = "prefer_encrypted"
    REQUIRE_ENCRYPTED = "require_encrypted"


class MSEEvent:
    """Base class of MSE events."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class MSEEstablished(MSEEvent):
    """The handshake is over; the payload stream starts.

    ``method`` is how the payload stream is protected. ``via_mse`` is False when no MSE handshake
    took place (a plaintext-only initiator, or a receiver that saw a plain BEP 3 handshake).
    ``skey`` is the torrent's info-hash when MSE identified it (always set for an initiator).
    ``initial_payload`` is the peer's IA (receiver side only); ``trailing_data`` the bytes that
    followed the handshake, already decrypted (for a plaintext detection, the bytes seen so far,
    starting with ``\\x13BitTorrent protocol``; for a plaintext-only initiator, every byte fed
    before the event was taken). The next layer reads :attr:`data` first.
    """

    method: Literal["rc4", "plaintext"]
    skey: bytes | None
    via_mse: bool
    initial_payload: bytes = b""
    trailing_data: bytes = b""

    @property
    def data(self) -> bytes:
        """``initial_payload + trailing_data``: what the next layer must be fed first."""
        return self.initial_payload + self.trailing_data


class SkeyTable:
    """The info-hashes one listener serves, indexed by ``HASH('req2', SKEY)`` for O(1) lookup.

    Share one table among all the receivers of a listener; it may change while they run.

    >>> table = SkeyTable([b"\\x01" * 20])
    >>> table.lookup(hash_concat(b"req2", b"\\x01" * 20)) == b"\\x01" * 20
    True
    >>> table.discard(b"\\x01" * 20); len(table)
    0
    """

    __slots__ = ("_by_req2",)

    def __init__(self, skeys: Iterable[bytes] = ()) -> None:
        self._by_req2: dict[bytes, bytes] = {}
        for skey in skeys:
            self.add(skey)

    def add(self, skey: bytes) -> None:
        """Serve ``skey`` (a 20-byte info-hash)."""
        self._by_req2[hash_concat(b"req2", _check_skey(skey))] = bytes(skey)

    def discard(self, skey: bytes) -> None:
        """Stop serving ``skey``; no error if it was not served."""
        self._by_req2.pop(hash_concat(b"req2", bytes(skey)), None)

    def lookup(self, req2_hash: bytes) -> bytes | None:
        """The SKEY whose ``HASH('req2', SKEY)`` is ``req2_hash``, or None."""
        return self._by_req2.get(bytes(req2_hash))

    def __contains__(self, skey: object) -> bool:
        return isinstance(skey, bytes) and hash_concat(b"req2", skey) in self._by_req2

    def __len__(self) -> int:
        return len(self._by_req2)


def _check_skey(skey: bytes) -> bytes:
    if not isinstance(skey, bytes | bytearray) or len(skey) != _SKEY_LEN:
        raise ValueError(f"SKEY must be {_SKEY_LEN} bytes (an info-hash)")
    return bytes(skey)


def _check_pad(pad: bytes | None, name: str, rng: random.Random, *, zeros: bool) -> bytes:
    if pad is None:
        length = rng.randint(0, MAX_PAD_LEN)
        return bytes(length) if zeros else rng.randbytes(length)
    if len(pad) > MAX_PAD_LEN:
        raise ValueError(f"{name} is longer than {MAX_PAD_LEN} bytes")
    return bytes(pad)


def _private_key(private_key: int | None, rng: random.Random) -> int:
    if private_key is None:
        return rng.getrandbits(_PRIVATE_KEY_BITS) | (1 << (_PRIVATE_KEY_BITS - 1))
    if private_key < 2:
        raise ValueError("private key must be at least 2")
    return private_key


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


class _State(enum.Enum):
    # initiator
    AWAIT_YB = enum.auto()
    AWAIT_VC = enum.auto()
    AWAIT_SELECT = enum.auto()
    AWAIT_PAD_D = enum.auto()
    PLAINTEXT = enum.auto()  # plaintext only: established at the first next_event
    # receiver
    DETECT = enum.auto()
    AWAIT_YA = enum.auto()
    AWAIT_REQ1 = enum.auto()
    AWAIT_SKEY = enum.auto()
    AWAIT_PROVIDE = enum.auto()
    AWAIT_PAD_C = enum.auto()
    AWAIT_IA = enum.auto()
    # both
    ESTABLISHED = enum.auto()  # the event is ready but not yet returned
    DONE = enum.auto()  # the event was returned: encrypt / decrypt from now on
    ERROR = enum.auto()


# A handler returns True when it made progress, False when it needs more bytes. The table is
# typed loosely because each subclass's handlers take that subclass.
_Handler = Callable[[Any], bool]


class _MSEConnection:
    """What initiator and receiver share: buffers, the state loop, the payload ciphers."""

    #: The state table: what to do with buffered bytes in each state. A state missing from it
    #: (ESTABLISHED, DONE, ERROR) accepts no input.
    _HANDLERS: ClassVar[dict[_State, _Handler]] = {}

    def __init__(self, policy: EncryptionPolicy, rng: random.Random | None) -> None:
        if not isinstance(policy, EncryptionPolicy):
            raise TypeError("policy must be an EncryptionPolicy")
        self.policy = policy
        self._rng = rng if rng is not None else random.SystemRandom()
        self._in = bytearray()
        self._out = bytearray()
        self._eof = False
        self._state = _State.ERROR
        self._event: MSEEstablished | None = None
        self._encryptor: RC4Stream | None = None
        self._decryptor: RC4Stream | None = None
        self._rc4 = False

    @property
    def established(self) -> bool:
        """True once the :class:`MSEEstablished` event has been returned."""
        return self._state is _State.DONE

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes from the peer; ``b""`` means the peer closed the connection."""
        if self._state is _State.DONE:
            raise LocalProtocolError("handshake finished: pass the stream through decrypt()")
        if self._state is _State.ERROR:
            raise LocalProtocolError("the MSE handshake already failed")
        if self._eof and data:
            raise LocalProtocolError("receive_data after end of stream")
        if data:
            self._in += data
        else:
            self._eof = True

    def data_to_send(self) -> bytes:
        """The bytes to write to the peer now (possibly empty)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> MSEEstablished | Literal[Pending.NEED_DATA]:
        """Advance the handshake: an :class:`MSEEstablished` event, or ``NEED_DATA``."""
        if self._state is _State.DONE:
            raise LocalProtocolError("handshake finished: use encrypt() / decrypt()")
        if self._state is _State.ERROR:
            raise LocalProtocolError("the MSE handshake already failed")
        try:
            while self._state is not _State.ESTABLISHED:
                if not self._HANDLERS[self._state](self):
                    if self._eof:
                        raise RemoteProtocolError("peer closed the connection during MSE")
                    return NEED_DATA
        except RemoteProtocolError:
            self._state = _State.ERROR
            self._in.clear()
            raise
        assert self._event is not None
        self._state = _State.DONE
        return self._event

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """Protect outgoing payload-stream bytes (the identity for plaintext)."""
        self._require_done()
        return self._encryptor.process(data) if self._rc4 and self._encryptor else bytes(data)

    def decrypt(self, data: bytes | bytearray | memoryview) -> bytes:
        """Unprotect incoming payload-stream bytes (the identity for plaintext)."""
        self._require_done()
        return self._decryptor.process(data) if self._rc4 and self._decryptor else bytes(data)

    def _require_done(self) -> None:
        if self._state is not _State.DONE:
            raise LocalProtocolError("the MSE handshake is not finished")

    def _take(self, n: int) -> bytes | None:
        if len(self._in) < n:
            return None
        chunk = bytes(self._in[:n])
        del self._in[:n]
        return chunk

    def _scan(self, pattern: bytes, what: str) -> bool:
        """Drop everything up to and including `pattern`, which must start within 512 bytes."""
        index = self._in.find(pattern, 0, MAX_PAD_LEN + len(pattern))
        if index < 0:
            if len(self._in) >= MAX_PAD_LEN + len(pattern):
                raise RemoteProtocolError(f"{what} not found within {MAX_PAD_LEN} bytes of padding")
            return False
        del self._in[: index + len(pattern)]
        return True

    def _finish(self, method: Literal["rc4", "plaintext"], skey: bytes | None, ia: bytes) -> None:
        self._rc4 = method == "rc4"
        rest = bytes(self._in)
        self._in.clear()
        if self._rc4 and self._decryptor is not None:
            rest = self._decryptor.process(rest)
        self._event = MSEEstablished(method, skey, True, ia, rest)
        self._state = _State.ESTABLISHED


class MSEInitiator(_MSEConnection):
    """The connecting side (A) of an MSE handshake for one torrent (``skey``, its info-hash).

    ``initial_payload`` (IA, at most 65535 bytes, usually the BEP 3 handshake) travels encrypted
    in step 3. ``private_key``, ``pad_a`` and ``pad_c`` are for known-answer tests; by default
    they come from ``rng`` (a ``random.SystemRandom`` unless given).

    >>> skey = bytes(range(20))
    >>> a = MSEInitiator(skey, EncryptionPolicy.REQUIRE_ENCRYPTED, random.Random(1))
    >>> b = MSEReceiver([skey], EncryptionPolicy.PREFER_ENCRYPTED, random.Random(2))
    >>> b.receive_data(a.data_to_send()); b.next_event()
    NEED_DATA
    >>> a.receive_data(b.data_to_send()); a.next_event()
    NEED_DATA
    >>> b.receive_data(a.data_to_send()); b.next_event().method
    'rc4'
    >>> a.receive_data(b.data_to_send() + b.encrypt(b"hi")); a.next_event().trailing_data
    b'hi'
    >>> b.decrypt(a.encrypt(b"hello"))
    b'hello'
    """

    def __init__(
        self,
        skey: bytes,
        policy: EncryptionPolicy = EncryptionPolicy.PREFER_ENCRYPTED,
        rng: random.Random | None = None,
        initial_payload: bytes = b"",
        *,
        private_key: int | None = None,
        pad_a: bytes | None = None,
        pad_c: bytes | None = None,
    ) -> None:
        super().__init__(policy, rng)
        self.skey = _check_skey(skey)
        if len(initial_payload) > 0xFFFF:
            raise ValueError("initial payload is longer than 65535 bytes")
        self._ia = bytes(initial_payload)
        if policy is EncryptionPolicy.PLAINTEXT_ONLY:
            # The event is built by next_event, not now: bytes fed before it (the peer's
            # handshake) must come back in it as trailing data.
            self._out += self._ia
            self._state = _State.PLAINTEXT
            return
        self._provide = CRYPTO_RC4
        if policy is EncryptionPolicy.PREFER_ENCRYPTED:
            self._provide |= CRYPTO_PLAINTEXT
        self._x = _private_key(private_key, self._rng)
        pad_a = _check_pad(pad_a, "PadA", self._rng, zeros=False)
        self._pad_c = _check_pad(pad_c, "PadC", self._rng, zeros=True)
        self._out += dh_public_key(self._x) + pad_a
        self._encrypted_vc = b""
        self._select = 0
        self._pad_d_len = 0
        self._state = _State.AWAIT_YB

    def _on_plaintext(self) -> bool:
        # No MSE: whatever arrived is the start of the peer's payload stream.
        self._event = MSEEstablished("plaintext", self.skey, False, b"", bytes(self._in))
        self._in.clear()
        self._state = _State.ESTABLISHED
        return True

    def _on_yb(self) -> bool:
        yb = self._take(DH_KEY_LEN)
        if yb is None:
            return False
        if not is_valid_public_key(yb):
            raise RemoteProtocolError("degenerate DH public key from the receiver")
        secret = dh_secret(self._x, yb)
        key_a, key_b = stream_keys(secret, self.skey)
        self._encryptor, self._decryptor = RC4Stream(key_a), RC4Stream(key_b)
        req2 = hash_concat(b"req2", self.skey)
        self._out += hash_concat(b"req1", secret) + _xor(req2, hash_concat(b"req3", secret))
        self._out += self._encryptor.process(
            VC
            + self._provide.to_bytes(4, "big")
            + len(self._pad_c).to_bytes(2, "big")
            + self._pad_c
            + len(self._ia).to_bytes(2, "big")
            + self._ia
        )
        self._encrypted_vc = self._decryptor.process(VC)
        self._state = _State.AWAIT_VC
        return True

    def _on_vc(self) -> bool:
        if not self._scan(self._encrypted_vc, "encrypted VC"):
            return False
        self._state = _State.AWAIT_SELECT
        return True

    def _on_select(self) -> bool:
        raw = self._take(6)
        if raw is None:
            return False
        assert self._decryptor is not None
        plain = self._decryptor.process(raw)
        select = int.from_bytes(plain[:4], "big")
        if select not in (CRYPTO_PLAINTEXT, CRYPTO_RC4) or not select & self._provide:
            raise RemoteProtocolError(f"crypto_select {select:#x} was not provided")
        self._pad_d_len = int.from_bytes(plain[4:], "big")
        if self._pad_d_len > MAX_PAD_LEN:
            raise RemoteProtocolError(f"PadD is longer than {MAX_PAD_LEN} bytes")
        self._select = select
        self._state = _State.AWAIT_PAD_D
        return True

    def _on_pad_d(self) -> bool:
        pad_d = self._take(self._pad_d_len)
        if pad_d is None:
            return False
        assert self._decryptor is not None
        self._decryptor.process(pad_d)
        self._finish("rc4" if self._select == CRYPTO_RC4 else "plaintext", self.skey, b"")
        return True

    _HANDLERS: ClassVar[dict[_State, _Handler]] = {
        _State.PLAINTEXT: _on_plaintext,
        _State.AWAIT_YB: _on_yb,
        _State.AWAIT_VC: _on_vc,
        _State.AWAIT_SELECT: _on_select,
        _State.AWAIT_PAD_D: _on_pad_d,
    }


class MSEReceiver(_MSEConnection):
    """The accepting side (B): serves every torrent in ``skeys`` on one listener.

    It first tells a plain BEP 3 handshake (``\\x13BitTorrent protocol``) from MSE, then finds
    ``HASH('req1', S)`` after up to 512 bytes of PadA and the torrent by its
    ``HASH('req2', SKEY)``. ``skeys`` is a shared :class:`SkeyTable` or an iterable of info-hashes.

    >>> r = MSEReceiver([bytes(20)], EncryptionPolicy.PREFER_ENCRYPTED, random.Random(0))
    >>> r.receive_data(b"\\x13BitTorrent protocol" + bytes(8)); ev = r.next_event()
    >>> ev.via_mse, ev.method, ev.data[:4]
    (False, 'plaintext', b'\\x13Bit')
    """

    def __init__(
        self,
        skeys: SkeyTable | Iterable[bytes],
        policy: EncryptionPolicy = EncryptionPolicy.PREFER_ENCRYPTED,
        rng: random.Random | None = None,
        *,
        max_initial_payload: int = 0xFFFF,
        private_key: int | None = None,
        pad_b: bytes | None = None,
        pad_d: bytes | None = None,
    ) -> None:
        super().__init__(policy, rng)
        self._skeys = skeys if isinstance(skeys, SkeyTable) else SkeyTable(skeys)
        self._max_ia = max_initial_payload
        self._private_key = private_key
        self._pad_b = pad_b
        self._pad_d = pad_d
        if pad_b is not None:
            _check_pad(pad_b, "PadB", self._rng, zeros=False)
        if pad_d is not None:
            _check_pad(pad_d, "PadD", self._rng, zeros=True)
        self._x = 0
        self._secret = b""
        self._req1 = b""
        self._skey = b""
        self._provide = 0
        self._pad_c_len = 0
        self._ia_len = -1
        self._state = _State.DETECT

    def _on_detect(self) -> bool:
        n = min(len(self._in), len(_PSTR))
        if n == 0:
            return False
        if self._in[:n] == _PSTR[:n]:
            if n < len(_PSTR):
                return False
            if self.policy is EncryptionPolicy.REQUIRE_ENCRYPTED:
                raise RemoteProtocolError("plaintext handshake refused: encryption is required")
            self._event = MSEEstablished("plaintext", None, False, b"", bytes(self._in))
            self._in.clear()
            self._state = _State.ESTABLISHED
            return True
        if self.policy is EncryptionPolicy.PLAINTEXT_ONLY:
            raise RemoteProtocolError("encrypted (MSE) connection refused: plaintext only")
        self._state = _State.AWAIT_YA
        return True

    def _on_ya(self) -> bool:
        ya = self._take(DH_KEY_LEN)
        if ya is None:
            return False
        if not is_valid_public_key(ya):
            raise RemoteProtocolError("degenerate DH public key from the initiator")
        self._x = _private_key(self._private_key, self._rng)
        self._secret = dh_secret(self._x, ya)
        pad_b = _check_pad(self._pad_b, "PadB", self._rng, zeros=False)
        self._out += dh_public_key(self._x) + pad_b
        self._req1 = hash_concat(b"req1", self._secret)
        self._state = _State.AWAIT_REQ1
        return True

    def _on_req1(self) -> bool:
        if not self._scan(self._req1, "HASH('req1', S)"):
            return False
        self._state = _State.AWAIT_SKEY
        return True

    def _on_skey(self) -> bool:
        masked = self._take(20)
        if masked is None:
            return False
        skey = self._skeys.lookup(_xor(masked, hash_concat(b"req3", self._secret)))
        if skey is None:
            raise RemoteProtocolError("unknown SKEY: this listener does not serve that torrent")
        self._skey = skey
        key_a, key_b = stream_keys(self._secret, skey)
        self._decryptor, self._encryptor = RC4Stream(key_a), RC4Stream(key_b)
        self._state = _State.AWAIT_PROVIDE
        return True

    def _on_provide(self) -> bool:
        raw = self._take(14)
        if raw is None:
            return False
        assert self._decryptor is not None
        plain = self._decryptor.process(raw)
        if plain[:8] != VC:
            raise RemoteProtocolError("bad verification constant")
        self._provide = int.from_bytes(plain[8:12], "big")
        self._pad_c_len = int.from_bytes(plain[12:14], "big")
        if self._pad_c_len > MAX_PAD_LEN:
            raise RemoteProtocolError(f"PadC is longer than {MAX_PAD_LEN} bytes")
        self._state = _State.AWAIT_PAD_C
        return True

    def _on_pad_c(self) -> bool:
        raw = self._take(self._pad_c_len + 2)
        if raw is None:
            return False
        assert self._decryptor is not None
        self._ia_len = int.from_bytes(self._decryptor.process(raw)[-2:], "big")
        if self._ia_len > self._max_ia:
            raise RemoteProtocolError(f"initial payload longer than {self._max_ia} bytes")
        self._state = _State.AWAIT_IA
        return True

    def _on_ia(self) -> bool:
        raw = self._take(self._ia_len)
        if raw is None:
            return False
        assert self._decryptor is not None
        assert self._encryptor is not None
        ia = self._decryptor.process(raw)
        if self._provide & CRYPTO_RC4:
            select = CRYPTO_RC4
        elif self._provide & CRYPTO_PLAINTEXT and self.policy is EncryptionPolicy.PREFER_ENCRYPTED:
            select = CRYPTO_PLAINTEXT
        else:
            raise RemoteProtocolError(
                f"no acceptable crypto method in crypto_provide {self._provide:#x}"
            )
        pad_d = _check_pad(self._pad_d, "PadD", self._rng, zeros=True)
        self._out += self._encryptor.process(
            VC + select.to_bytes(4, "big") + len(pad_d).to_bytes(2, "big") + pad_d
        )
        self._finish("rc4" if select == CRYPTO_RC4 else "plaintext", self._skey, ia)
        return True

    _HANDLERS: ClassVar[dict[_State, _Handler]] = {
        _State.DETECT: _on_detect,
        _State.AWAIT_YA: _on_ya,
        _State.AWAIT_REQ1: _on_req1,
        _State.AWAIT_SKEY: _on_skey,
        _State.AWAIT_PROVIDE: _on_provide,
        _State.AWAIT_PAD_C: _on_pad_c,
        _State.AWAIT_IA: _on_ia,
    }
