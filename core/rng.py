"""Random streams seeded by a stable digest of names, for data that must be the same in
every process and every run (Python's `hash()` is salted per process). Torch-free."""

from __future__ import annotations

import random
import zlib


def stable_seed(*parts: object) -> int:
    """A 32-bit seed from `parts` ('/'-joined), equal in every process and run."""
    return zlib.crc32("/".join(str(part) for part in parts).encode("utf-8"))


def stable_rng(*parts: object) -> random.Random:
    """A `random.Random` seeded by `stable_seed(*parts)`."""
    return random.Random(stable_seed(*parts))
