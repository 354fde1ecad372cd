"""An MSE initial payload of up to 65,535 bytes is accepted, whatever follows it at once.

The spec lets the initiator buffer up to 65,535 bytes for IA (``len(IA)`` is 2 bytes).
The handshaker hands the IA and the bytes read with its end to the handshake layer in one
piece, whose bound on bytes past the 68-byte handshake (64 KiB) counted the IA's own bytes:
an IA near 65,535 bytes followed at once by more than 69 bytes was refused (protocol_error),
depending on how the reads fell.
"""

from __future__ import annotations

import pytest
import trio
from test_handshaker import (
    REQUIRE,
    TORRENT,
    TORRENT_ID,
    inbound,
    memory_handshaker,
    next_peer,
    remote_handshake,
)

from bip_handshake._mse import MSEEstablished, MSEInitiator


@pytest.mark.parametrize("extra", [0, 70, 16 * 1024])
async def test_largest_initial_payload_followed_at_once_is_accepted(extra: int) -> None:
    handshake = remote_handshake()
    stream = bytes(range(256)) * 512  # past the IA and the bytes sent with it
    ia = handshake + stream[: 0xFFFF - len(handshake)]
    following = stream[len(ia) - len(handshake) :][:extra]
    async with memory_handshaker(encryption=REQUIRE) as hs:
        hs.register(TORRENT)
        async with inbound(hs) as ours:
            initiator = MSEInitiator(TORRENT_ID, REQUIRE, initial_payload=ia)
            await ours.send_all(initiator.data_to_send())
            with trio.fail_after(5):
                while True:
                    initiator.receive_data(await ours.receive_some())
                    event = initiator.next_event()
                    if out := initiator.data_to_send():
                        # Step 3, the payload stream right behind it (RC4 is the only
                        # method provided, so it needs no answer first).
                        assert initiator._encryptor is not None
                        await ours.send_all(out + initiator._encryptor.process(following))
                    if isinstance(event, MSEEstablished):
                        break
                peer = await next_peer(hs)
            try:
                got = bytearray(peer.trailing)
                with trio.fail_after(5):
                    while len(got) < len(ia) - len(handshake) + extra:
                        got += await peer.stream.receive_some()
                assert bytes(got) == ia[len(handshake) :] + following
            finally:
                await peer.aclose()
    assert hs.statistics().failures == 0
