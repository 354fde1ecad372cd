"""Our outstanding queries: transaction ids out, answers matched back, timeouts, sans-IO.

Every query the node sends gets a :class:`Transaction` in a :class:`TransactionTable`, as
libtorrent's rpc_manager keeps its observers. An answer is ours only when:

- its ``t`` names an outstanding transaction (random 2-byte ids, unique among outstanding
  ones, so an off-path attacker must guess one in 65,536 and the address too);
- it comes from the very address we queried (an IPv4-mapped source counts as IPv4);
- when we knew the node's id, the response carries that id (checked by the node, which
  treats a wrong id as that node's failure).

Everything else is *unmatched*: dropped and counted by the node, never raising. Timeouts are
per query (``timeout`` seconds after sending); since every query gets the same timeout and time
does not go back, the table's insertion order is deadline order and expiry pops from the front.
The table is bounded (``capacity``): the node asks :attr:`TransactionTable.free` before sending.

>>> import random
>>> from bip_handshake import PeerAddress
>>> from bip_dht._krpc import Ping
>>> table = TransactionTable(random.Random(1), capacity=4, timeout=8.0)
>>> address = PeerAddress.parse("10.0.0.1:6881")
>>> tx = table.open(lambda tid: Ping(transaction_id=tid, node_id=bytes(20)), address, None, 0, 0.0)
>>> table.match(tx.tid, PeerAddress.parse("10.0.0.2:6881")) is None
True
>>> table.match(tx.tid, address) is tx, len(table)
(True, 0)
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bip_handshake import PeerAddress

from ._errors import LocalProtocolError
from ._krpc import Query

__all__ = ["TID_BYTES", "Transaction", "TransactionTable"]

TID_BYTES = 2
"""Length of our transaction ids (libtorrent and most clients use 2)."""
_TID_SPACE = 1 << (8 * TID_BYTES)


@dataclass(slots=True)
class Transaction:
    """One query awaiting its answer.

    Attributes:
        tid: the transaction id (``t``).
        query: what we sent.
        address: where we sent it (normalized: IPv4-mapped is IPv4).
        node_id: the id we expect to answer, or None when we did not know it (a bootstrap
            address, a user's ping).
        operation: the operation it belongs to (0: none, such as a maintenance ping).
        sent_at: when it was sent.
        deadline: when it times out.
    """

    tid: bytes
    query: Query
    address: PeerAddress
    node_id: bytes | None
    operation: int
    sent_at: float
    deadline: float


class TransactionTable:
    """Outstanding transactions by id; see the module docstring."""

    __slots__ = ("_addresses", "_by_tid", "_rng", "capacity", "timeout")

    def __init__(self, rng: random.Random, *, capacity: int, timeout: float) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise LocalProtocolError(f"capacity is an int, got {capacity!r}")
        if not 1 <= capacity <= _TID_SPACE // 2:
            # Half the id space at most, so finding a free id by random draws stays quick.
            raise LocalProtocolError(f"capacity is in 1..{_TID_SPACE // 2}, got {capacity}")
        if not timeout > 0:
            raise LocalProtocolError(f"timeout must be positive, got {timeout}")
        self._rng = rng
        self.capacity = capacity
        self.timeout = float(timeout)
        self._by_tid: dict[bytes, Transaction] = {}
        self._addresses: Counter[PeerAddress] = Counter()

    def __len__(self) -> int:
        return len(self._by_tid)

    def __iter__(self) -> Iterator[Transaction]:
        """The outstanding transactions, oldest first (a snapshot)."""
        return iter(list(self._by_tid.values()))

    @property
    def free(self) -> int:
        """How many more transactions may be opened."""
        return self.capacity - len(self._by_tid)

    def _new_tid(self) -> bytes:
        # At most half the space is taken, so each draw succeeds with probability >= 1/2;
        # the loop is bounded anyway, then falls back to a scan that must find a free id.
        for _ in range(64):
            tid = self._rng.getrandbits(8 * TID_BYTES).to_bytes(TID_BYTES, "big")
            if tid not in self._by_tid:
                return tid
        for number in range(_TID_SPACE):  # pragma: no cover - astronomically unlikely
            tid = number.to_bytes(TID_BYTES, "big")
            if tid not in self._by_tid:
                return tid
        raise LocalProtocolError("no free transaction id")  # pragma: no cover

    def open(
        self,
        build: Callable[[bytes], Query],
        address: PeerAddress,
        node_id: bytes | None,
        operation: int,
        now: float,
    ) -> Transaction:
        """Open a transaction for the query ``build(tid)`` to *address*; return it.

        Raises:
            LocalProtocolError: the table is full (check :attr:`free` first).
        """
        if len(self._by_tid) >= self.capacity:
            raise LocalProtocolError("too many outstanding transactions")
        tid = self._new_tid()
        tx = Transaction(
            tid, build(tid), address.normalized(), node_id, operation, now, now + self.timeout
        )
        self._by_tid[tid] = tx
        self._addresses[tx.address] += 1
        return tx

    def _close(self, tx: Transaction) -> None:
        del self._by_tid[tx.tid]
        left = self._addresses[tx.address] - 1
        if left:
            self._addresses[tx.address] = left
        else:
            del self._addresses[tx.address]

    def match(self, tid: bytes, source: PeerAddress) -> Transaction | None:
        """Close and return the transaction *tid* if *source* is the address it went to.

        An answer from any other address leaves the transaction open (the real node may still
        answer) and gives None.
        """
        tx = self._by_tid.get(tid)
        if tx is None or tx.address != source.normalized():
            return None
        self._close(tx)
        return tx

    def close_oldest_to(self, address: PeerAddress) -> Transaction | None:
        """Close and return the oldest transaction to *address* (None: none is outstanding).

        For a report that a datagram to *address* found nobody (ICMP unreachable): which of
        several queries to it failed cannot be told, and the reports come back in the order
        the datagrams left, so the oldest.
        """
        address = address.normalized()
        if address not in self._addresses:
            return None
        for tx in self._by_tid.values():
            if tx.address == address:
                self._close(tx)  # the loop ends here: the dict is not iterated on
                return tx
        return None  # pragma: no cover - the address count says one is outstanding

    def expire(self, now: float) -> list[Transaction]:
        """Close and return the transactions whose deadline has come."""
        expired: list[Transaction] = []
        while self._by_tid:
            tid = next(iter(self._by_tid))
            tx = self._by_tid[tid]
            if tx.deadline > now:
                break
            self._close(tx)
            expired.append(tx)
        return expired

    def next_deadline(self) -> float | None:
        """The earliest deadline (None: nothing outstanding)."""
        for tx in self._by_tid.values():
            return tx.deadline
        return None

    def outstanding_to(self, address: PeerAddress) -> bool:
        """Whether a query to *address* is outstanding."""
        return address.normalized() in self._addresses
