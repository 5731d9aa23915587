# lb/policies.py -- balancing policies, registered by name.
#
# Strategy: a policy is a small object built over the full backend list; each
# request it is handed the backends usable right now and the client's key
# (its address) and returns one of them.  Policies do no I/O and keep only
# their own counters; the proxy looks one up by name and never knows which it
# has.  Backends are anything with ``name``, ``weight`` and ``in_flight``.
from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Sequence
from typing import Protocol


class Candidate(Protocol):
    """What a policy may read of a backend."""

    name: str
    weight: int
    in_flight: int


class Policy(Protocol):
    def pick(self, available: Sequence[Candidate], key: str) -> Candidate:
        """Choose one of ``available`` (never empty) for a client ``key``."""


POLICIES: dict[str, Callable[[Sequence[Candidate]], Policy]] = {}


def register(name: str) -> Callable[[type], type]:
    """Class decorator: make a policy available as ``--policy name``."""
    def add(cls: type) -> type:
        POLICIES[name] = cls
        return cls
    return add


def make(name: str, backends: Sequence[Candidate]) -> Policy:
    """A fresh policy ``name`` over ``backends``."""
    return POLICIES[name](backends)


@register("round_robin")
class RoundRobin:
    """Each usable backend in turn."""

    def __init__(self, backends: Sequence[Candidate]) -> None:
        self._next = 0

    def pick(self, available: Sequence[Candidate], key: str) -> Candidate:
        index = self._next % len(available)
        self._next = index + 1
        return available[index]


@register("weighted_round_robin")
class SmoothWeightedRoundRobin:
    """Weighted turns, interleaved (the smooth scheme nginx uses): with
    weights 5,1,1 the order is a a b a c a a, not a a a a a b c."""

    def __init__(self, backends: Sequence[Candidate]) -> None:
        self._current: dict[str, int] = {}

    def pick(self, available: Sequence[Candidate], key: str) -> Candidate:
        current = self._current
        total = 0
        best: Candidate | None = None
        best_value = 0
        for backend in available:
            value = current.get(backend.name, 0) + backend.weight
            current[backend.name] = value
            total += backend.weight
            if best is None or value > best_value:
                best, best_value = backend, value
        assert best is not None
        current[best.name] = best_value - total
        return best


@register("least_connections")
class LeastConnections:
    """The backend with the fewest requests in flight; ties taken in turn."""

    def __init__(self, backends: Sequence[Candidate]) -> None:
        self._offset = 0

    def pick(self, available: Sequence[Candidate], key: str) -> Candidate:
        n = len(available)
        start = self._offset % n
        self._offset = start + 1
        best = available[start]
        for i in range(1, n):
            backend = available[(start + i) % n]
            if backend.in_flight < best.in_flight:
                best = backend
        return best


@register("random_two")
class PowerOfTwoChoices:
    """Two backends at random; the one with fewer requests in flight."""

    def __init__(self, backends: Sequence[Candidate], rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def pick(self, available: Sequence[Candidate], key: str) -> Candidate:
        if len(available) == 1:
            return available[0]
        a, b = self._rng.sample(range(len(available)), 2)
        first, second = available[a], available[b]
        return second if second.in_flight < first.in_flight else first


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@register("consistent_hash")
class ConsistentHash:
    """The same client goes to the same backend.  The ring is built over all
    configured backends (``VNODES`` points each, times its weight); a client
    whose backend is unusable walks on to the next usable point, so when a
    backend leaves only its own clients move."""

    VNODES = 160

    def __init__(self, backends: Sequence[Candidate]) -> None:
        points = sorted((_hash(f"{b.name}#{i}"), b.name)
                        for b in backends for i in range(self.VNODES * b.weight))
        self._hashes = [h for h, _ in points]
        self._names = [name for _, name in points]

    def pick(self, available: Sequence[Candidate], key: str) -> Candidate:
        by_name = {b.name: b for b in available}
        n = len(self._hashes)
        start = bisect.bisect(self._hashes, _hash(key))
        for i in range(n):
            backend = by_name.get(self._names[(start + i) % n])
            if backend is not None:
                return backend
        return available[_hash(key) % len(available)]  # a backend unknown to the ring
