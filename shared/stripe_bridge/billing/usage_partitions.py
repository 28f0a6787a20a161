"""Which customers a ``count-usage`` partition counts (``--partitions N --partition I``).

Each partition reads all of USAGE in order from its own checkpoint and counts only the
records of the customers whose token hashes to its index: a count key (``<customer>.…``)
has one partition as its only writer, so each entry's ``last_seq`` still means "every record
of this key up to here is applied". The hash is the first 8 bytes of sha256 of the
customer's key token, stable across processes and versions (unlike Python's ``hash``).
Partition 0 also owns what belongs to no customer: unreadable records (dead-lettered),
unmetered ones and another consumer's redrive; so each is handled once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from stripe_bridge_entitlements.keys import customer_token


@dataclass(frozen=True)
class Partition:
    """Partition ``index`` of ``count`` (the defaults, 0 of 1: every customer)."""

    index: int = 0
    count: int = 1

    def check(self) -> Partition:
        """Itself; ValueError unless 0 <= index < count."""
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition {self.index} is not one of 0..{self.count - 1}")
        return self

    @property
    def owner(self) -> bool:
        """Whether it handles what belongs to no customer (unreadable, unmetered records)."""
        return self.index == 0

    def counts(self, customer: str) -> bool:
        """Whether ``customer``'s records are this partition's to count."""
        if self.count == 1:
            return True
        digest = hashlib.sha256(customer_token(customer).encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index

    def checkpoint_key(self, name: str) -> str:
        """Where it keeps its checkpoint: the unpartitioned key when it is the only one
        (an upgrade changes nothing), else one per index and count."""
        common = common_checkpoint_key(name)
        return common if self.count == 1 else f"{common}.{self.index}-of-{self.count}"

    def siblings(self) -> list[Partition]:
        """Every partition of the same count, itself included."""
        return [Partition(i, self.count) for i in range(self.count)]


#: The unpartitioned counter: every customer.
WHOLE = Partition()


def common_checkpoint_key(name: str) -> str:
    """The checkpoint every customer has been counted up to (the unpartitioned counter's;
    partition 0 of a partitioned set advances it to the lowest of the set's)."""
    return f"_position.{name}"
