# tests/unit/test_policies.py -- lb/policies.py as pure functions over fake backends.
#
# Strategy: a policy only reads ``name``, ``weight`` and ``in_flight``, so the
# candidates here are tiny dataclasses and every test is a deterministic loop
# of ``pick`` calls (random_two gets a seeded ``random.Random``; the hash of
# consistent_hash is a fixed function of the key), with exact expectations
# where the algorithm promises them (round robin's evenness, the smooth
# weighted order 5,1,1 -> a a b a c a a, least-connections' minimum and tie
# rotation, consistent hashing's "only the keys of a removed backend move")
# and generous statistical bounds where it promises a distribution.
# Hypothesis varies weights, availability subsets and in-flight counts for
# the invariants every policy must keep: pick only from ``available``.
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lb import policies
from lb.policies import POLICIES, make


@dataclass(eq=False)
class Fake:
    """A candidate backend: what a policy may read, nothing more."""

    name: str
    weight: int = 1
    in_flight: int = 0

    def __repr__(self) -> str:
        return self.name


def fakes(*weights: int, prefix: str = "10.0.0.") -> list[Fake]:
    return [Fake(f"{prefix}{i + 1}:80", w) for i, w in enumerate(weights)]


def picks(policy: policies.Policy, available: Sequence[Fake], n: int, key: str = "k") -> list[Fake]:
    return [policy.pick(available, key) for _ in range(n)]  # type: ignore[misc]


def chi_square(counts: Counter, expected: dict[Fake, float]) -> float:
    return sum((counts[b] - e) ** 2 / e for b, e in expected.items())


# -- round_robin ----------------------------------------------------------------

def test_round_robin_cycles_in_order() -> None:
    backends = fakes(1, 1, 1, 1)
    policy = make("round_robin", backends)
    assert picks(policy, backends, 12) == backends * 3


def test_round_robin_even_over_the_available_subset() -> None:
    backends = fakes(1, 1, 1, 1, 1)
    policy = make("round_robin", backends)
    available = [backends[0], backends[2], backends[4]]
    counts = Counter(picks(policy, available, 300))
    assert set(counts) == set(available)
    assert all(counts[b] == 100 for b in available)


def test_round_robin_survives_the_list_shrinking() -> None:
    backends = fakes(1, 1, 1, 1)
    policy = make("round_robin", backends)
    picks(policy, backends, 3)               # the next index is 3
    shorter = backends[:2]
    got = picks(policy, shorter, 4)
    assert all(b in shorter for b in got)
    assert Counter(got) == Counter({shorter[0]: 2, shorter[1]: 2})


# -- weighted_round_robin -------------------------------------------------------

def test_smooth_weighted_order_5_1_1() -> None:
    a, b, c = fakes(5, 1, 1)
    policy = make("weighted_round_robin", [a, b, c])
    cycle = [a, a, b, a, c, a, a]
    # The state returns to zero after each full cycle, so the order repeats.
    assert picks(policy, [a, b, c], 21) == cycle * 3


def test_smooth_weighted_no_long_runs_within_a_cycle() -> None:
    a, b, c = fakes(5, 1, 1)
    policy = make("weighted_round_robin", [a, b, c])
    seq = picks(policy, [a, b, c], 7)
    longest = run = 1
    for prev, cur in zip(seq, seq[1:], strict=False):
        run = run + 1 if cur is prev else 1
        longest = max(longest, run)
    assert longest <= 2, seq


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6),
       st.integers(min_value=1, max_value=3))
def test_weighted_exact_shares_and_smoothness(weights: list[int], cycles: int) -> None:
    backends = fakes(*weights)
    policy = make("weighted_round_robin", backends)
    total = sum(weights)
    counts: Counter = Counter()
    worst = 0.0
    for n in range(1, total * cycles + 1):
        counts[policy.pick(backends, "k")] += 1
        # Smooth: every prefix stays close to the ideal share (a plain
        # weighted round robin would be off by up to the largest weight).
        for backend in backends:
            worst = max(worst, abs(counts[backend] - n * backend.weight / total))
    assert {b.name: counts[b] for b in backends} == {b.name: b.weight * cycles for b in backends}
    assert worst <= len(backends) / 2 + 0.5, (weights, worst)


def test_weighted_only_from_available_and_adapts() -> None:
    a, b, c = fakes(3, 2, 1)
    policy = make("weighted_round_robin", [a, b, c])
    counts = Counter(picks(policy, [b, c], 30))
    assert counts == Counter({b: 20, c: 10})


# -- least_connections ---------------------------------------------------------

def test_least_connections_picks_the_minimum() -> None:
    backends = fakes(1, 1, 1, 1)
    for i, n in enumerate((5, 2, 7, 3)):
        backends[i].in_flight = n
    policy = make("least_connections", backends)
    assert picks(policy, backends, 8) == [backends[1]] * 8


def test_least_connections_follows_changing_load() -> None:
    backends = fakes(1, 1, 1)
    policy = make("least_connections", backends)
    chosen = []
    for _ in range(9):  # the caller counts each pick as a request in flight
        pick = policy.pick(backends, "k")
        pick.in_flight += 1
        chosen.append(pick)
    assert Counter(chosen) == Counter({b: 3 for b in backends})
    assert all(b.in_flight == 3 for b in backends)


def test_least_connections_rotates_ties() -> None:
    backends = fakes(1, 1, 1, 1)
    policy = make("least_connections", backends)
    # All idle: every one of them in turn.
    assert picks(policy, backends, 8) == backends * 2
    # Two tied at the minimum: both used, equally, never the busy ones.
    backends[1].in_flight = backends[3].in_flight = 4
    got = picks(policy, backends, 40)
    assert Counter(got) == Counter({backends[0]: 20, backends[2]: 20})
    for i in range(0, 40, 4):  # no tied backend is starved over a round
        assert {backends[0], backends[2]} <= set(got[i:i + 4])


# -- random_two -----------------------------------------------------------------

class SpyRandom(random.Random):
    """A seeded Random that remembers the samples it handed out."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.samples: list[list] = []

    def sample(self, population, k, **kw):  # type: ignore[override]
        out = super().sample(population, k, **kw)
        self.samples.append(list(out))
        return out


def random_two(backends: Sequence[Fake], seed: int) -> policies.Policy:
    return POLICIES["random_two"](backends, rng=random.Random(seed))  # type: ignore[call-arg]


def test_random_two_never_picks_the_busier_of_its_choices() -> None:
    backends = fakes(1, 1, 1, 1, 1)
    rng = random.Random(7)
    spy = SpyRandom(11)
    policy = POLICIES["random_two"](backends, rng=spy)  # type: ignore[call-arg]
    for _ in range(2000):
        for b in backends:
            b.in_flight = rng.randrange(4)
        pick = policy.pick(backends, "k")
        if spy.samples:  # the policy drew its two choices through sample()
            first, second = (backends[i] for i in spy.samples.pop())
            assert pick in (first, second)
            assert pick.in_flight == min(first.in_flight, second.in_flight)
        others = [b for b in backends if b is not pick]
        # Whatever the draw, it is never worse than all the others...
        assert pick.in_flight <= max(b.in_flight for b in others)


def test_random_two_shares_follow_the_load_order() -> None:
    # in_flight 0,1,2,3: the busiest loses every pair (never picked), the
    # idlest wins 3 of the 6 pairs, then 2/6 and 1/6.
    backends = fakes(1, 1, 1, 1)
    for i, b in enumerate(backends):
        b.in_flight = i
    policy = random_two(backends, seed=1)
    n = 6000
    counts = Counter(picks(policy, backends, n))
    assert counts[backends[3]] == 0
    expected = {backends[0]: n * 3 / 6, backends[1]: n * 2 / 6, backends[2]: n * 1 / 6}
    assert chi_square(counts, expected) < 13.8  # 2 degrees of freedom, p = 0.001


def test_random_two_avoids_one_busy_backend() -> None:
    backends = fakes(1, 1, 1, 1)
    backends[2].in_flight = 50
    policy = random_two(backends, seed=3)
    counts = Counter(picks(policy, backends, 4000))
    assert counts[backends[2]] <= 4000 * 0.05  # picked rarely (here: never)
    idle = [b for b in backends if b is not backends[2]]
    assert chi_square(counts, {b: 4000 / 3 for b in idle}) < 13.8


def test_random_two_even_over_idle_backends() -> None:
    backends = fakes(1, 1, 1, 1)
    policy = random_two(backends, seed=12345)
    n = 8000
    counts = Counter(picks(policy, backends, n))
    assert chi_square(counts, {b: n / 4 for b in backends}) < 16.3  # 3 dof, p = 0.001
    assert all(abs(counts[b] - n / 4) < n * 0.05 for b in backends)


def test_random_two_single_backend() -> None:
    backends = fakes(1, 1, 1)
    policy = random_two(backends, seed=0)
    assert picks(policy, [backends[1]], 5) == [backends[1]] * 5


def test_random_two_reproducible_with_a_seed() -> None:
    backends = fakes(1, 1, 1, 1, 1)
    first = picks(random_two(backends, 99), backends, 50)
    assert first == picks(random_two(backends, 99), backends, 50)


# -- consistent_hash ------------------------------------------------------------

KEYS = [f"10.{i // 250}.{i % 250}.{(i * 37) % 251}" for i in range(6000)]


def assignment(policy: policies.Policy, available: Sequence[Fake]) -> dict[str, Fake]:
    return {k: policy.pick(available, k) for k in KEYS}  # type: ignore[misc]


def test_consistent_hash_same_key_same_backend() -> None:
    backends = fakes(1, 1, 1, 1)
    policy = make("consistent_hash", backends)
    for key in KEYS[:200]:
        first = policy.pick(backends, key)
        assert all(policy.pick(backends, key) is first for _ in range(5))
    # A second policy over the same backends agrees (no hidden state).
    again = make("consistent_hash", backends)
    assert all(again.pick(backends, k) is policy.pick(backends, k) for k in KEYS[:500])


@pytest.mark.parametrize("weights", [(1, 1, 1, 1), (1, 2, 3), (4, 1)])
def test_consistent_hash_spreads_by_weight(weights: tuple[int, ...]) -> None:
    backends = fakes(*weights)
    policy = make("consistent_hash", backends)
    counts = Counter(assignment(policy, backends).values())
    total = sum(weights)
    for b in backends:
        ideal = len(KEYS) * b.weight / total
        assert abs(counts[b] - ideal) < 0.2 * ideal, (b, counts[b], ideal)


def test_consistent_hash_only_the_removed_backends_keys_move() -> None:
    backends = fakes(1, 1, 1, 1, 1)
    policy = make("consistent_hash", backends)
    before = assignment(policy, backends)
    gone = backends[2]
    remaining = [b for b in backends if b is not gone]
    during = assignment(policy, remaining)
    moved = [k for k in KEYS if during[k] is not before[k]]
    assert moved, "the removed backend had keys"
    assert all(before[k] is gone for k in moved)                # only its keys moved
    assert all(during[k] is not gone for k in KEYS)
    assert len(moved) == sum(1 for k in KEYS if before[k] is gone)
    # Its keys are spread over the others rather than dumped on one.
    assert len(Counter(during[k] for k in moved)) >= 3
    # And when it comes back every key returns to where it was.
    after = assignment(policy, backends)
    assert all(after[k] is before[k] for k in KEYS)


def test_consistent_hash_two_removed() -> None:
    backends = fakes(1, 1, 1, 1, 1)
    policy = make("consistent_hash", backends)
    before = assignment(policy, backends)
    remaining = [backends[0], backends[3], backends[4]]
    during = assignment(policy, remaining)
    for k in KEYS:
        if before[k] in remaining:
            assert during[k] is before[k]
        else:
            assert during[k] in remaining


# -- the registry ----------------------------------------------------------------

def test_registry_names() -> None:
    assert set(POLICIES) == {"round_robin", "weighted_round_robin", "least_connections",
                             "random_two", "consistent_hash"}


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_policy_builds_and_picks_only_available(name: str) -> None:
    backends = fakes(1, 3, 2, 1, 5)
    for i, b in enumerate(backends):
        b.in_flight = (i * 3) % 4
    policy = make(name, backends)
    rng = random.Random(5)
    for round_ in range(300):
        size = rng.randint(1, len(backends))
        available = rng.sample(backends, size)
        pick = policy.pick(available, f"client-{round_ % 37}")
        assert any(pick is b for b in available), (name, pick, available)


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(POLICIES)),
       weights=st.lists(st.integers(1, 10), min_size=1, max_size=6),
       loads=st.lists(st.integers(0, 5), min_size=6, max_size=6),
       mask=st.lists(st.booleans(), min_size=6, max_size=6),
       keys=st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=20))
def test_every_policy_property(name: str, weights: list[int], loads: list[int],
                               mask: list[bool], keys: list[str]) -> None:
    backends = fakes(*weights)
    for b, load in zip(backends, loads, strict=False):
        b.in_flight = load
    available = [b for b, keep in zip(backends, mask, strict=False) if keep] or backends[:1]
    policy = make(name, backends)
    for key in keys:
        pick = policy.pick(available, key)
        assert any(pick is b for b in available), (name, pick, available)


def test_unknown_policy_name() -> None:
    with pytest.raises(KeyError):
        make("nope", fakes(1))


def test_consistent_hash_a_new_backend_takes_about_a_fifth_of_the_keys() -> None:
    """Adding a fifth backend (a new ring, as after a SIGHUP) moves about 1/5 of
    the keys, all of them onto the new one."""
    four = fakes(1, 1, 1, 1)
    five = [*four, Fake("b4", 1)]
    before = assignment(make("consistent_hash", four), four)
    after = assignment(make("consistent_hash", five), five)
    moved = [k for k in KEYS if after[k].name != before[k].name]
    assert all(after[k] is five[4] for k in moved)
    assert 0.13 < len(moved) / len(KEYS) < 0.27, len(moved) / len(KEYS)
