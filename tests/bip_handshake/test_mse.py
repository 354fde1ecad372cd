"""MSE/PE: crypto vectors, the derived known-answer handshake, and the two state machines."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bip_handshake import (
    CRYPTO_PLAINTEXT,
    CRYPTO_RC4,
    NEED_DATA,
    EncryptionPolicy,
    HandshakeError,
    LocalProtocolError,
    MSEEstablished,
    MSEInitiator,
    MSEReceiver,
    RemoteProtocolError,
    SkeyTable,
)
from bip_handshake._mse_crypto import (
    DH_G,
    DH_P,
    VC,
    RC4Stream,
    dh_public_key,
    dh_secret,
    hash_concat,
    is_valid_public_key,
    stream_keys,
)

VECTOR_FILE = (
    Path(__file__).resolve().parents[3] / "shared" / "vectors" / "mse" / "mse_vectors.json"
)
# A missing file fails at collection: the vectors are part of the proof, never skipped.
VECTORS: dict[str, Any] = json.loads(VECTOR_FILE.read_text())
KAT: dict[str, str] = VECTORS["derived_handshake_kat"]

Policy = EncryptionPolicy
PLAIN, PREFER, REQUIRE = Policy.PLAINTEXT_ONLY, Policy.PREFER_ENCRYPTED, Policy.REQUIRE_ENCRYPTED
SKEY = bytes(range(20))
OTHER_SKEY = bytes(range(1, 21))
# What a real initiator puts in IA: a BEP 3 handshake (here with dummy reserved bytes / peer id).
BT_HANDSHAKE = b"\x13BitTorrent protocol" + bytes(8) + SKEY + b"-BI0001-abcdefghijkl"

Conn = MSEInitiator | MSEReceiver


# --- helpers ---------------------------------------------------------------------------------


def feed(conn: Conn, data: bytes, chunk: int | None = None) -> list[MSEEstablished]:
    """Feed `data` whole or in `chunk`-byte pieces, pumping next_event after each piece.

    As a shell would, once the handshake is over the rest goes through decrypt() and is appended
    to the event's trailing data.
    """
    step = chunk or max(len(data), 1)
    for i in range(0, len(data), step):
        conn.receive_data(data[i : i + step])
        ev = conn.next_event()
        if isinstance(ev, MSEEstablished):
            rest = conn.decrypt(data[i + step :])
            return [
                MSEEstablished(
                    ev.method, ev.skey, ev.via_mse, ev.initial_payload, ev.trailing_data + rest
                )
            ]
        assert ev is NEED_DATA
    return []


def run_pair(
    a: MSEInitiator, b: MSEReceiver, chunk: int | None = None
) -> tuple[MSEEstablished, MSEEstablished]:
    """Shuttle bytes between the two cores until both report MSEEstablished."""
    ev_a: MSEEstablished | None = None
    ev_b: MSEEstablished | None = None
    first = a.next_event()  # a plaintext-only initiator is done at once
    if isinstance(first, MSEEstablished):
        ev_a = first
    for _ in range(10):
        out_a = a.data_to_send()
        if out_a and ev_b is None:
            got = feed(b, out_a, chunk)
            if got:
                ev_b = got[0]
        out_b = b.data_to_send()
        if out_b and ev_a is None:
            got = feed(a, out_b, chunk)
            if got:
                ev_a = got[0]
        if ev_a is not None and ev_b is not None:
            assert not a.data_to_send()
            assert not b.data_to_send()
            return ev_a, ev_b
    raise AssertionError("handshake did not finish")


def feed_bytewise(conn: Conn, data: bytes, consumed: list[int]) -> None:
    """One byte at a time, counting the bytes taken before an error."""
    for i in range(len(data)):
        conn.receive_data(data[i : i + 1])
        consumed[0] += 1
        assert conn.next_event() is NEED_DATA


def pair(
    policy_a: EncryptionPolicy = PREFER,
    policy_b: EncryptionPolicy = PREFER,
    seed: int = 0,
    ia: bytes = b"",
    skeys: Any = (SKEY,),
) -> tuple[MSEInitiator, MSEReceiver]:
    a = MSEInitiator(SKEY, policy_a, random.Random(seed), ia)
    b = MSEReceiver(skeys, policy_b, random.Random(seed + 1))
    return a, b


def receiver_after_ya(
    policy: EncryptionPolicy = PREFER, **kwargs: Any
) -> tuple[MSEReceiver, int, bytes]:
    """A receiver that has seen our Ya; returns it, our private key and the shared secret."""
    xa = 0x1234567890ABCDEF1234567890ABCDEF12345678
    b = MSEReceiver([SKEY], policy, random.Random(7), **kwargs)
    b.receive_data(dh_public_key(xa))
    assert b.next_event() is NEED_DATA
    yb = b.data_to_send()[:96]
    return b, xa, dh_secret(xa, yb)


def manual_step3(
    secret: bytes,
    *,
    skey: bytes = SKEY,
    provide: int = CRYPTO_RC4 | CRYPTO_PLAINTEXT,
    pad_c: bytes = b"",
    ia: bytes = b"",
    vc: bytes = VC,
    pad_c_len: int | None = None,
    ia_len: int | None = None,
    after: bytes = b"",
) -> bytes:
    """Step 3 as a hand-rolled (possibly misbehaving) initiator would send it."""
    key_a, _ = stream_keys(secret, skey)
    enc = RC4Stream(key_a)
    head = hash_concat(b"req1", secret) + bytes(
        x ^ y for x, y in zip(hash_concat(b"req2", skey), hash_concat(b"req3", secret), strict=True)
    )
    body = (
        vc
        + provide.to_bytes(4, "big")
        + (len(pad_c) if pad_c_len is None else pad_c_len).to_bytes(2, "big")
        + pad_c
        + (len(ia) if ia_len is None else ia_len).to_bytes(2, "big")
        + ia
        + after
    )
    return head + enc.process(body)


def initiator_after_yb(
    policy: EncryptionPolicy = PREFER,
) -> tuple[MSEInitiator, RC4Stream]:
    """An initiator that has seen our Yb; returns it and the B->A encryptor we must use."""
    xb = 0x0FEDCBA0987654321FEDCBA0987654321FEDCBA09
    a = MSEInitiator(SKEY, policy, random.Random(3))
    ya = a.data_to_send()[:96]
    a.receive_data(dh_public_key(xb))
    assert a.next_event() is NEED_DATA
    a.data_to_send()
    _, key_b = stream_keys(dh_secret(xb, ya), SKEY)
    return a, RC4Stream(key_b)


def step4(enc: RC4Stream, select: int, pad_d: bytes = b"", pad_len: int | None = None) -> bytes:
    n = len(pad_d) if pad_len is None else pad_len
    return enc.process(VC + select.to_bytes(4, "big") + n.to_bytes(2, "big") + pad_d)


# --- constants and crypto vectors ------------------------------------------------------------


def test_constants_match_vectors() -> None:
    constants = VECTORS["constants"]
    assert int(constants["dh_prime_P_hex"], 16) == DH_P
    assert DH_P.bit_length() == constants["dh_prime_bits"] == 768
    assert constants["generator_G"] == DH_G
    assert bytes.fromhex(constants["VC_hex"]) == VC
    assert int("0x01", 16) == CRYPTO_PLAINTEXT
    assert int("0x02", 16) == CRYPTO_RC4


@pytest.mark.parametrize("key_hex", VECTORS["dh_public_key_validation"]["reject_hex_96"])
def test_degenerate_public_keys_rejected(key_hex: str) -> None:
    key = bytes.fromhex(key_hex)
    assert not is_valid_public_key(key)
    b = MSEReceiver([SKEY], PREFER, random.Random(0))
    b.receive_data(key)
    with pytest.raises(RemoteProtocolError, match="degenerate"):
        b.next_event()
    a = MSEInitiator(SKEY, PREFER, random.Random(0))
    a.receive_data(key)
    with pytest.raises(RemoteProtocolError, match="degenerate"):
        a.next_event()


@pytest.mark.parametrize("key_hex", VECTORS["dh_public_key_validation"]["accept_hex_96"])
def test_boundary_public_keys_accepted(key_hex: str) -> None:
    key = bytes.fromhex(key_hex)
    assert is_valid_public_key(key)
    b = MSEReceiver([SKEY], PREFER, random.Random(0))
    b.receive_data(key)
    assert b.next_event() is NEED_DATA
    assert len(b.data_to_send()) >= 96


def test_public_key_of_wrong_length_is_invalid() -> None:
    assert not is_valid_public_key(b"\x05" * 95)
    assert not is_valid_public_key(b"\x05" * 97)


@pytest.mark.parametrize("vector", VECTORS["rc4_drop1024_vectors"])
def test_rc4_drop1024_vectors(vector: dict[str, str]) -> None:
    key = bytes.fromhex(vector["key_hex"])
    stream = RC4Stream(key)
    assert stream.process(bytes(16)).hex() == vector["keystream_at_1024_hex"]
    stream.process(bytes(4096 - 1024 - 16))
    assert stream.process(bytes(16)).hex() == vector["keystream_at_4096_hex"]
    # Byte-at-a-time processing gives the same keystream.
    single = RC4Stream(key)
    assert (
        b"".join(single.process(bytes(1)) for _ in range(16)).hex()
        == (vector["keystream_at_1024_hex"])
    )


# --- the derived known-answer handshake ------------------------------------------------------


def kat_keys() -> tuple[int, int, bytes]:
    xa = int.from_bytes(hashlib.sha1(b"MSE test vector: private key A").digest(), "big")
    xb = int.from_bytes(hashlib.sha1(b"MSE test vector: private key B").digest(), "big")
    assert xa == int(KAT["Xa"], 16)
    assert xb == int(KAT["Xb"], 16)
    return xa, xb, bytes.fromhex(KAT["SKEY"])


def test_kat_primitives() -> None:
    xa, xb, skey = kat_keys()
    ya, yb = dh_public_key(xa), dh_public_key(xb)
    assert ya.hex() == KAT["Ya"]
    assert yb.hex() == KAT["Yb"]
    secret = dh_secret(xa, yb)
    assert secret == dh_secret(xb, ya)
    assert secret.hex() == KAT["S"]
    assert hash_concat(b"req1", secret).hex() == KAT["req1_hash"]
    req2, req3 = hash_concat(b"req2", skey), hash_concat(b"req3", secret)
    assert bytes(x ^ y for x, y in zip(req2, req3, strict=True)).hex() == KAT["req2_xor_req3"]
    key_a, key_b = stream_keys(secret, skey)
    assert key_a.hex() == KAT["keyA"]
    assert key_b.hex() == KAT["keyB"]
    assert RC4Stream(key_a).process(bytes(32)).hex() == KAT["keystreamA_first32_after_discard"]
    assert RC4Stream(key_b).process(bytes(32)).hex() == KAT["keystreamB_first32_after_discard"]
    assert (
        RC4Stream(key_a).process(bytes.fromhex(KAT["step3_plain"])).hex()
        == (KAT["step3_encrypted"])
    )


@pytest.mark.parametrize("chunk", [None, 1])
def test_kat_full_handshake_byte_for_byte(chunk: int | None) -> None:
    xa, xb, skey = kat_keys()
    a = MSEInitiator(skey, PREFER, private_key=xa, pad_a=b"", pad_c=b"")
    b = MSEReceiver([skey], PREFER, private_key=xb, pad_b=b"", pad_d=b"")
    step1 = a.data_to_send()
    assert step1.hex() == KAT["Ya"]
    assert feed(b, step1, chunk) == []
    step2 = b.data_to_send()
    assert step2.hex() == KAT["Yb"]
    assert feed(a, step2, chunk) == []
    step3 = a.data_to_send()
    assert step3.hex() == KAT["req1_hash"] + KAT["req2_xor_req3"] + KAT["step3_encrypted"]
    [ev_b] = feed(b, step3, chunk)
    step4_bytes = b.data_to_send()
    assert step4_bytes.hex() == KAT["step4_encrypted"]
    [ev_a] = feed(a, step4_bytes, chunk)
    expected = MSEEstablished("rc4", skey, True, b"", b"")
    assert ev_a == ev_b == expected


# --- initiator and receiver against each other -----------------------------------------------


@pytest.mark.parametrize("chunk", [None, 1, 7, 100])
@pytest.mark.parametrize("seed", range(3))
def test_pair_rc4_with_initial_payload(chunk: int | None, seed: int) -> None:
    a, b = pair(PREFER, PREFER, seed=seed, ia=BT_HANDSHAKE)
    ev_a, ev_b = run_pair(a, b, chunk)
    assert ev_a == MSEEstablished("rc4", SKEY, True, b"", b"")
    assert ev_b == MSEEstablished("rc4", SKEY, True, BT_HANDSHAKE, b"")
    assert ev_b.data == BT_HANDSHAKE
    # The payload stream continues the RC4 streams in both directions.
    for message in (b"x" * 5, b"", b"y" * 20000):
        assert b.decrypt(a.encrypt(message)) == message
        assert a.decrypt(b.encrypt(message)) == message
    assert a.encrypt(b"secret") != b"secret"


@pytest.mark.parametrize("chunk", [None, 1])
def test_trailing_data_after_step4_is_decrypted_for_the_initiator(chunk: int | None) -> None:
    a, b = pair(REQUIRE, PREFER, ia=BT_HANDSHAKE)
    b.receive_data(a.data_to_send())
    assert b.next_event() is NEED_DATA
    a.receive_data(b.data_to_send())
    assert a.next_event() is NEED_DATA
    b.receive_data(a.data_to_send())
    ev_b = b.next_event()
    assert isinstance(ev_b, MSEEstablished)
    reply = b.data_to_send() + b.encrypt(b"their handshake") + b.encrypt(b" and a bitfield")
    [ev_a] = feed(a, reply, chunk)
    assert ev_a.method == "rc4"
    assert ev_a.data == b"their handshake and a bitfield"
    assert b.decrypt(a.encrypt(b"ok")) == b"ok"


def test_trailing_data_after_ia_is_decrypted_for_the_receiver() -> None:
    b, _, secret = receiver_after_ya(PREFER)
    b.receive_data(manual_step3(secret, ia=b"IA", after=b"more"))
    ev = b.next_event()
    assert ev == MSEEstablished("rc4", SKEY, True, b"IA", b"more")
    assert ev.data == b"IAmore"


# --- policies --------------------------------------------------------------------------------

OUTCOMES: dict[tuple[EncryptionPolicy, EncryptionPolicy], str] = {
    (PLAIN, PLAIN): "plaintext",
    (PLAIN, PREFER): "plaintext",
    (PLAIN, REQUIRE): "refused by receiver",
    (PREFER, PLAIN): "refused by receiver",
    (PREFER, PREFER): "rc4",
    (PREFER, REQUIRE): "rc4",
    (REQUIRE, PLAIN): "refused by receiver",
    (REQUIRE, PREFER): "rc4",
    (REQUIRE, REQUIRE): "rc4",
}


@pytest.mark.parametrize("chunk", [None, 1])
@pytest.mark.parametrize(("policy_a", "policy_b"), list(OUTCOMES))
def test_policy_matrix(
    policy_a: EncryptionPolicy, policy_b: EncryptionPolicy, chunk: int | None
) -> None:
    outcome = OUTCOMES[policy_a, policy_b]
    a, b = pair(policy_a, policy_b, ia=BT_HANDSHAKE)
    if outcome == "refused by receiver":
        with pytest.raises(RemoteProtocolError, match="refused"):
            run_pair(a, b, chunk)
        # The receiver's shell closes the connection: the initiator sees end of stream.
        if not a.established:
            a.receive_data(b"")
            with pytest.raises(RemoteProtocolError, match="closed"):
                a.next_event()
        return
    ev_a, ev_b = run_pair(a, b, chunk)
    assert ev_a.method == ev_b.method == outcome
    if outcome == "plaintext":
        # No MSE at all: the receiver saw the BEP 3 handshake and hands it on untouched.
        assert not ev_a.via_mse
        assert not ev_b.via_mse
        assert ev_b.skey is None
        assert ev_b.data == BT_HANDSHAKE
        assert a.encrypt(b"abc") == b"abc"
        assert b.decrypt(b"abc") == b"abc"
    else:
        assert ev_a.via_mse
        assert ev_b.via_mse
        assert ev_b.skey == SKEY
        assert ev_b.data == BT_HANDSHAKE


def test_plaintext_initiator_sends_its_payload_in_the_clear() -> None:
    a = MSEInitiator(SKEY, PLAIN, random.Random(0), BT_HANDSHAKE)
    assert a.data_to_send() == BT_HANDSHAKE
    ev = a.next_event()
    assert ev == MSEEstablished("plaintext", SKEY, False)
    assert a.encrypt(b"m") == b"m"


@pytest.mark.parametrize("policy", [PREFER, REQUIRE])
def test_receiver_selects_rc4_when_both_are_provided(policy: EncryptionPolicy) -> None:
    b, _, secret = receiver_after_ya(policy)
    b.receive_data(manual_step3(secret, provide=CRYPTO_RC4 | CRYPTO_PLAINTEXT))
    ev = b.next_event()
    assert isinstance(ev, MSEEstablished)
    assert ev.method == "rc4"


def test_prefer_receiver_selects_plaintext_for_a_plaintext_only_mse_peer() -> None:
    b, xa, secret = receiver_after_ya(PREFER)
    b.data_to_send()
    b.receive_data(manual_step3(secret, provide=CRYPTO_PLAINTEXT, ia=b"IA") + b"clear")
    ev = b.next_event()
    assert ev == MSEEstablished("plaintext", SKEY, True, b"IA", b"clear")
    _, key_b = stream_keys(secret, SKEY)
    dec = RC4Stream(key_b)
    reply = b.data_to_send()
    assert dec.process(reply)[:12] == VC + CRYPTO_PLAINTEXT.to_bytes(4, "big")
    assert b.encrypt(b"abc") == b"abc"
    assert b.decrypt(b"abc") == b"abc"
    assert xa


@pytest.mark.parametrize(
    ("policy", "provide"), [(REQUIRE, CRYPTO_PLAINTEXT), (PREFER, 0), (REQUIRE, 0), (PREFER, 4)]
)
def test_receiver_refuses_unacceptable_crypto_provide(
    policy: EncryptionPolicy, provide: int
) -> None:
    b, _, secret = receiver_after_ya(policy)
    b.receive_data(manual_step3(secret, provide=provide))
    with pytest.raises(RemoteProtocolError, match="crypto_provide"):
        b.next_event()


@pytest.mark.parametrize("chunk", [None, 1])
def test_prefer_initiator_accepts_plaintext_selection(chunk: int | None) -> None:
    a, enc = initiator_after_yb(PREFER)
    reply = step4(enc, CRYPTO_PLAINTEXT) + b"clear text"
    events = feed(a, reply, chunk)
    assert events == [MSEEstablished("plaintext", SKEY, True, b"", b"clear text")]
    assert a.encrypt(b"abc") == b"abc"


@pytest.mark.parametrize(
    ("policy", "select"),
    [
        (REQUIRE, CRYPTO_PLAINTEXT),
        (PREFER, CRYPTO_RC4 | CRYPTO_PLAINTEXT),
        (PREFER, 0),
        (PREFER, 4),
    ],
)
def test_initiator_refuses_a_selection_it_did_not_provide(
    policy: EncryptionPolicy, select: int
) -> None:
    a, enc = initiator_after_yb(policy)
    a.receive_data(step4(enc, select))
    with pytest.raises(RemoteProtocolError, match="crypto_select"):
        a.next_event()


def test_receiver_detects_plaintext_only_after_enough_bytes() -> None:
    b = MSEReceiver([SKEY], PREFER, random.Random(0))
    assert b.next_event() is NEED_DATA
    b.receive_data(b"\x13BitTorrent")
    assert b.next_event() is NEED_DATA
    assert b.data_to_send() == b""
    b.receive_data(b" protocol")
    ev = b.next_event()
    assert ev == MSEEstablished("plaintext", None, False, b"", b"\x13BitTorrent protocol")


def test_mse_key_sharing_a_prefix_with_the_protocol_string_is_still_mse() -> None:
    # A Ya starting with 0x13 'B' is MSE as soon as a byte differs from the protocol string.
    ya = b"\x13B" + bytes(range(94))
    b = MSEReceiver([SKEY], PREFER, random.Random(0))
    b.receive_data(ya[:2])
    assert b.next_event() is NEED_DATA
    b.receive_data(ya[2:])
    assert b.next_event() is NEED_DATA
    assert len(b.data_to_send()) >= 96


# --- many torrents on one listener -----------------------------------------------------------


def test_many_skeys_on_one_receiver() -> None:
    skeys = [hashlib.sha1(i.to_bytes(4, "big")).digest() for i in range(500)]
    table = SkeyTable(skeys)
    assert len(table) == 500
    for i in (0, 123, 499):
        a = MSEInitiator(skeys[i], REQUIRE, random.Random(i))
        b = MSEReceiver(table, PREFER, random.Random(i + 1000))
        ev_a, ev_b = run_pair(a, b)
        assert ev_a.skey == ev_b.skey == skeys[i]
        assert b.decrypt(a.encrypt(b"piece")) == b"piece"


def test_unknown_skey_is_refused() -> None:
    a = MSEInitiator(OTHER_SKEY, PREFER, random.Random(0))
    b = MSEReceiver([SKEY], PREFER, random.Random(1))
    with pytest.raises(RemoteProtocolError, match="unknown SKEY"):
        run_pair(a, b)
    with pytest.raises(LocalProtocolError):
        b.next_event()
    with pytest.raises(LocalProtocolError):
        b.receive_data(b"more")


def test_skey_table_is_shared_and_mutable() -> None:
    table = SkeyTable()
    b1 = MSEReceiver(table, PREFER, random.Random(1))
    table.add(OTHER_SKEY)
    assert OTHER_SKEY in table
    assert SKEY not in table
    assert b"x" not in table
    run_pair(MSEInitiator(OTHER_SKEY, PREFER, random.Random(0)), b1)
    table.discard(OTHER_SKEY)
    table.discard(OTHER_SKEY)
    assert len(table) == 0
    with pytest.raises(RemoteProtocolError, match="unknown SKEY"):
        run_pair(
            MSEInitiator(OTHER_SKEY, PREFER, random.Random(0)),
            MSEReceiver(table, PREFER, random.Random(1)),
        )
    with pytest.raises(ValueError, match="20 bytes"):
        table.add(b"short")


# --- bounds, floods, corruption --------------------------------------------------------------


def test_maximal_pads_are_accepted() -> None:
    a = MSEInitiator(SKEY, PREFER, random.Random(0), pad_a=b"\xff" * 512, pad_c=bytes(512))
    b = MSEReceiver([SKEY], PREFER, random.Random(1), pad_b=b"\xee" * 512, pad_d=bytes(512))
    ev_a, ev_b = run_pair(a, b, 13)
    assert ev_a.method == ev_b.method == "rc4"


def test_padding_flood_at_the_receiver_is_bounded() -> None:
    b, _, _ = receiver_after_ya(PREFER)
    flood = random.Random(5).randbytes(100_000)
    consumed = [0]
    with pytest.raises(RemoteProtocolError, match="req1"):
        feed_bytewise(b, flood, consumed)
    assert consumed == [512 + 20]
    b2, _, _ = receiver_after_ya(PREFER)
    b2.receive_data(flood)
    with pytest.raises(RemoteProtocolError, match="not found within 512"):
        b2.next_event()


def test_req1_after_maximal_pad_a_is_found_and_one_byte_more_is_not() -> None:
    b, _, secret = receiver_after_ya(PREFER)
    b.receive_data(bytes(512) + manual_step3(secret))
    assert isinstance(b.next_event(), MSEEstablished)
    b, _, secret = receiver_after_ya(PREFER)
    b.receive_data(bytes(513) + manual_step3(secret))
    with pytest.raises(RemoteProtocolError, match="not found"):
        b.next_event()


def test_padding_flood_at_the_initiator_is_bounded() -> None:
    a, _ = initiator_after_yb(PREFER)
    flood = random.Random(6).randbytes(10_000)
    consumed = [0]
    with pytest.raises(RemoteProtocolError, match="VC"):
        feed_bytewise(a, flood, consumed)
    assert consumed == [512 + 8]


def test_initiator_resynchronises_on_vc_after_pad_b() -> None:
    a, enc = initiator_after_yb(PREFER)
    a.receive_data(b"\x00" * 512 + step4(enc, CRYPTO_RC4, b"p" * 512) + enc.process(b"tail"))
    assert a.next_event() == MSEEstablished("rc4", SKEY, True, b"", b"tail")


def test_wrong_vc_is_refused() -> None:
    b, _, secret = receiver_after_ya(PREFER)
    b.receive_data(manual_step3(secret, vc=b"\x00" * 7 + b"\x01"))
    with pytest.raises(RemoteProtocolError, match="verification constant"):
        b.next_event()


def test_wrong_key_looks_like_garbage_to_the_initiator() -> None:
    a, _ = initiator_after_yb(PREFER)
    wrong = RC4Stream(b"not the key at all!!")
    a.receive_data(step4(wrong, CRYPTO_RC4) + bytes(600))
    with pytest.raises(RemoteProtocolError, match="VC"):
        a.next_event()


def test_pad_c_too_long_is_refused() -> None:
    b, _, secret = receiver_after_ya(PREFER)
    b.receive_data(manual_step3(secret, pad_c_len=513))
    with pytest.raises(RemoteProtocolError, match="PadC"):
        b.next_event()


def test_pad_d_too_long_is_refused() -> None:
    a, enc = initiator_after_yb(PREFER)
    a.receive_data(step4(enc, CRYPTO_RC4, pad_len=513))
    with pytest.raises(RemoteProtocolError, match="PadD"):
        a.next_event()


def test_initial_payload_cap() -> None:
    b, _, secret = receiver_after_ya(PREFER, max_initial_payload=68)
    b.receive_data(manual_step3(secret, ia_len=69))
    with pytest.raises(RemoteProtocolError, match="initial payload"):
        b.next_event()
    b, _, secret = receiver_after_ya(PREFER, max_initial_payload=68)
    b.receive_data(manual_step3(secret, ia=BT_HANDSHAKE))
    ev = b.next_event()
    assert isinstance(ev, MSEEstablished)
    assert ev.initial_payload == BT_HANDSHAKE


@pytest.mark.parametrize("cut", [0, 50, 96, 200])
def test_end_of_stream_mid_handshake(cut: int) -> None:
    a, b = pair()
    step1 = a.data_to_send()
    b.receive_data(step1[:cut])
    b.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="closed"):
        b.next_event()


# --- API misuse ------------------------------------------------------------------------------


def test_api_misuse() -> None:
    a, b = pair()
    with pytest.raises(LocalProtocolError):
        a.encrypt(b"early")
    with pytest.raises(LocalProtocolError):
        b.decrypt(b"early")
    run_pair(a, b)
    with pytest.raises(LocalProtocolError):
        a.next_event()
    with pytest.raises(LocalProtocolError):
        b.receive_data(b"late")
    c = MSEReceiver([SKEY], PREFER, random.Random(0))
    c.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        c.receive_data(b"x")
    with pytest.raises(ValueError, match="20 bytes"):
        MSEInitiator(b"short", PREFER)
    with pytest.raises(ValueError, match="PadA"):
        MSEInitiator(SKEY, PREFER, pad_a=bytes(513))
    with pytest.raises(ValueError, match="PadC"):
        MSEInitiator(SKEY, PREFER, pad_c=bytes(513))
    with pytest.raises(ValueError, match="PadB"):
        MSEReceiver([SKEY], PREFER, pad_b=bytes(513))
    with pytest.raises(ValueError, match="PadD"):
        MSEReceiver([SKEY], PREFER, pad_d=bytes(513))
    with pytest.raises(ValueError, match="65535"):
        MSEInitiator(SKEY, PREFER, initial_payload=bytes(65536))
    with pytest.raises(ValueError, match="private key"):
        MSEInitiator(SKEY, PREFER, private_key=1)
    with pytest.raises(TypeError):
        MSEInitiator(SKEY, "prefer")  # type: ignore[arg-type]


def test_default_rng_is_system_random() -> None:
    a = MSEInitiator(SKEY)
    b = MSEReceiver([SKEY])
    ev_a, ev_b = run_pair(a, b)
    assert ev_a.method == ev_b.method == "rc4"
    assert repr(NEED_DATA) == "NEED_DATA"


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=1500),
    chunk=st.integers(min_value=1, max_value=200),
    policy=st.sampled_from(list(EncryptionPolicy)),
)
def test_arbitrary_bytes_to_a_receiver_give_events_or_our_errors(
    data: bytes, chunk: int, policy: EncryptionPolicy
) -> None:
    b = MSEReceiver([SKEY], policy, random.Random(0))
    try:
        for i in range(0, len(data), chunk):
            b.receive_data(data[i : i + chunk])
            if b.next_event() is not NEED_DATA:
                return
        b.receive_data(b"")
        b.next_event()
    except HandshakeError:
        return
    raise AssertionError("end of stream mid-handshake must fail")


@settings(max_examples=40, deadline=None)
@given(
    data=st.binary(max_size=1000),
    chunk=st.integers(min_value=1, max_value=200),
)
def test_arbitrary_bytes_to_an_initiator_give_events_or_our_errors(data: bytes, chunk: int) -> None:
    a = MSEInitiator(SKEY, PREFER, random.Random(0))
    try:
        for i in range(0, len(data), chunk):
            a.receive_data(data[i : i + chunk])
            if a.next_event() is not NEED_DATA:
                return
    except HandshakeError:
        return


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    chunk=st.one_of(st.none(), st.integers(min_value=1, max_value=300)),
    ia=st.binary(max_size=300),
    message=st.binary(max_size=300),
)
def test_any_pair_agrees(seed: int, chunk: int | None, ia: bytes, message: bytes) -> None:
    a, b = pair(PREFER, REQUIRE, seed=seed, ia=ia)
    ev_a, ev_b = run_pair(a, b, chunk)
    assert ev_a.method == ev_b.method == "rc4"
    assert ev_b.initial_payload == ia
    assert b.decrypt(a.encrypt(message)) == message
    assert a.decrypt(b.encrypt(message)) == message
