# tests/integration/test_lb_admin.py -- the runtime API of the admin listener, live.
#
# Strategy: recording origins behind a real ``python -m lb --workers 2`` (so
# a change made through whichever worker answers the POST must reach the
# other one); where requests went is read off the origins, never off the
# balancer's counters.  Every request goes on a fresh connection, so the
# kernel spreads them over both workers.  Changes are given a second to
# reach every worker, as promised, and no more.
from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.recording_backend import RecordingBackend, counts, running
from tests.support import Balancer, get_status, run_cli, start_lb, stop_clean, wait_until

SETTLE = 1.0  #: the promise: a change holds in every worker within a second
TOKEN = "s3cret-admin-token"


@pytest.fixture
def origins() -> Iterator[list[RecordingBackend]]:
    with running(2) as made:
        yield made


def balancer(origins: list[RecordingBackend], *args: str, weights: tuple[int, ...] = ()
             ) -> Balancer:
    backends = [f"127.0.0.1:{o.port}" + (f"={w}" if w else "")
                for o, w in zip(origins, weights or (0,) * len(origins), strict=True)]
    flags = [arg for b in backends for arg in ("--backend", b)]
    lb = start_lb("--workers", "2", *flags, *args)
    for origin in origins:
        origin.wait_health_check()
    return lb


def name(origin: RecordingBackend) -> str:
    return f"127.0.0.1:{origin.port}"


def test_backends_lists_state_weight_health_and_figures(origins: list[RecordingBackend]) -> None:
    lb = balancer(origins, weights=(3, 1))
    try:
        for _ in range(8):
            assert get_status(lb.port) == 200
        status, listing = lb.admin("GET", "/backends")
        assert status == 200
        got = {b["name"]: b for b in listing["backends"]}
        assert list(got) == [name(o) for o in origins]
        first = got[name(origins[0])]
        assert (first["state"], first["admin_state"], first["health"]) == ("up", "ready", "up")
        assert (first["weight"], first["configured_weight"]) == (3, 3)
        assert sum(b["requests"] for b in got.values()) == 8 == sum(counts(origins))
        status, one = lb.admin("GET", f"/backends/{name(origins[1])}")
        assert status == 200 and one["requests"] == got[name(origins[1])]["requests"]
        assert set(one) == set(first)
    finally:
        stop_clean(lb)


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (b"{}", "JSON object"),
    ({"state": "off"}, "state must be one of ready, drain, maint"),
    ({"weight": 1001}, "weight must be a whole number 0 to 1000"),
    ({"weight": -1}, "weight must be"),
    ({"weight": "3"}, "weight must be"),
    ({"colour": "red"}, "unknown field 'colour'"),
])
def test_a_bad_change_is_a_400_with_the_reason_and_changes_nothing(
        origins: list[RecordingBackend], body: object, reason: str) -> None:
    lb = balancer(origins)
    try:
        status, answer = lb.admin("POST", f"/backends/{name(origins[0])}", body)
        assert status == 400 and reason in answer["error"], answer
        assert lb.admin("POST", "/backends/127.0.0.9:1", {"state": "drain"}) == (
            404, {"error": "no backend 127.0.0.9:1"})
        status, answer = lb.admin("PUT", f"/backends/{name(origins[0])}", {"state": "drain"})
        assert status == 405
        assert {b["admin_state"] for b in lb.stats()["backends"]} == {"ready"}
    finally:
        stop_clean(lb)


def test_drain_then_ready_moves_new_requests_in_every_worker(
        origins: list[RecordingBackend]) -> None:
    lb = balancer(origins)
    try:
        entry = lb.set_backend(name(origins[0]), state="drain")
        assert (entry["state"], entry["admin_state"], entry["health"]) == ("drain", "drain", "up")
        # Whichever worker answers /stats shows the change at once.
        assert [lb.stats()["backends"][0]["state"] for _ in range(20)] == ["drain"] * 20
        time.sleep(SETTLE)
        before = counts(origins)
        for _ in range(40):
            assert get_status(lb.port) == 200
        after = counts(origins)
        assert after[0] == before[0] and after[1] == before[1] + 40
        assert lb.stats()["backends"][0]["state"] == "drain"
        assert 'state="drain"} 1.0' in lb.metrics()
        lb.set_backend(name(origins[0]), state="ready")
        assert f'admin: 127.0.0.1 set backend {name(origins[0])} to {{"state": "drain"}}' \
            in lb.server.log  # who changed what, in the log
        time.sleep(SETTLE)
        for _ in range(40):
            assert get_status(lb.port) == 200
        moved = [a - b for a, b in zip(counts(origins), after, strict=True)]
        assert sum(moved) == 40 and abs(moved[0] - 20) <= 2, moved  # each worker alternates
    finally:
        stop_clean(lb)


def test_weight_changed_at_runtime_shows_in_the_split(origins: list[RecordingBackend]) -> None:
    lb = balancer(origins, "--policy", "weighted_round_robin", weights=(3, 1))
    try:
        for _ in range(80):
            assert get_status(lb.port) == 200
        first = counts(origins)
        assert abs(first[0] - 60) <= 4, first  # 3:1, within each worker's turn
        entry = lb.set_backend(name(origins[0]), weight=1)
        assert (entry["weight"], entry["configured_weight"]) == (1, 3)
        time.sleep(SETTLE)
        for _ in range(80):
            assert get_status(lb.port) == 200
        second = [a - b for a, b in zip(counts(origins), first, strict=True)]
        assert abs(second[0] - 40) <= 4, second  # 1:1
        lb.set_backend(name(origins[1]), weight=0)  # no new requests, like drain
        time.sleep(SETTLE)
        third = counts(origins)
        for _ in range(20):
            assert get_status(lb.port) == 200
        assert [a - b for a, b in zip(counts(origins), third, strict=True)] == [20, 0]
    finally:
        stop_clean(lb)


def test_maint_closes_the_pool_and_stops_health_checks(origins: list[RecordingBackend]) -> None:
    lb = balancer(origins, "--health-interval", "0.2")
    try:
        for _ in range(20):
            assert get_status(lb.port) == 200
        target = origins[0]
        assert any(not c.closed for c in target.proxied_connections())  # pooled, kept open
        entry = lb.set_backend(name(target), state="maint")
        assert entry["state"] == "maint"
        assert wait_until(lambda: all(c.closed for c in target.proxied_connections()),
                          timeout=SETTLE + 1)
        assert wait_until(lambda: lb.stats()["backends"][0]["pool"]["idle"] == 0, SETTLE)
        time.sleep(SETTLE)
        checks = len(target.health_checks)
        time.sleep(1.0)  # five intervals
        assert len(target.health_checks) == checks
        lb.set_backend(name(target), state="ready")
        assert wait_until(lambda: len(target.health_checks) > checks, timeout=5)
        time.sleep(SETTLE)
        before = counts(origins)[0]
        for _ in range(10):
            assert get_status(lb.port) == 200
        assert counts(origins)[0] > before
    finally:
        stop_clean(lb)


def test_a_reload_keeps_the_runtime_states(origins: list[RecordingBackend],
                                           tmp_path: Path) -> None:
    config = tmp_path / "lb.toml"
    backends = ", ".join(f'"{name(o)}"' for o in origins)
    config.write_text(f"backend = [{backends}]\nhealth_interval = 3600\n")
    lb = start_lb("--workers", "2", "--config", str(config))
    try:
        for origin in origins:
            origin.wait_health_check()
        lb.set_backend(name(origins[0]), state="drain", weight=7)
        config.write_text(f"backend = [{backends}]\nhealth_interval = 3600\n"
                          f"policy = \"least_connections\"\nadmin_token = \"{TOKEN}\"\n")
        lb.server.signal(signal.SIGHUP)
        assert wait_until(lambda: lb.server.log.count("SIGHUP: reloaded") == 2, timeout=10)
        assert lb.stats()["policy"] == "least_connections"  # no token yet: that needs a restart
        assert "admin token, workers and HTTP/HTTPS changes need a restart" in lb.server.log
        first = lb.stats()["backends"][0]
        assert (first["state"], first["weight"]) == ("drain", 7)
        before = counts(origins)
        for _ in range(20):
            assert get_status(lb.port) == 200
        assert counts(origins)[0] == before[0]
    finally:
        stop_clean(lb)


def test_a_token_is_required_on_every_admin_request(origins: list[RecordingBackend]) -> None:
    lb = balancer(origins, "--admin-token", TOKEN)
    try:
        for method, path in (("GET", "/stats"), ("GET", "/metrics"), ("GET", "/backends"),
                             ("POST", f"/backends/{name(origins[0])}")):
            for token in (None, "wrong-token-xyz"):
                status, answer = lb.admin(method, path, {"state": "drain"}, token=token)
                assert status == 401 and "Bearer" in answer["error"], (method, path, token)
        status, page = lb.admin("GET", "/")
        assert status == 401 and "<html" in page.lower()  # the page that asks for it
        assert lb.admin("GET", "/stats", token=TOKEN)[0] == 200
        assert lb.admin("GET", "/backends", token=TOKEN)[1]["backends"][0]["state"] == "up"
        lb.token = TOKEN
        assert lb.set_backend(name(origins[0]), state="drain")["state"] == "drain"
    finally:
        stop_clean(lb)


def test_the_token_may_come_from_the_environment(origins: list[RecordingBackend]) -> None:
    lb = start_lb("--backend", name(origins[0]), env={"GSERVERS_LB_ADMIN_TOKEN": TOKEN})
    try:
        assert lb.admin("GET", "/stats")[0] == 401
        assert lb.admin("GET", "/stats", token=TOKEN)[0] == 200
        assert TOKEN not in " ".join(lb.server.popen.args)  # not on the command line
    finally:
        stop_clean(lb)


@pytest.mark.parametrize("admin", ["0.0.0.0:0", "[::]:0", "example.org:44445"])
def test_an_admin_listener_beyond_loopback_needs_a_token(admin: str) -> None:
    result = run_cli("lb", "--admin", admin)
    assert result.returncode == 2
    assert "--admin" in result.stderr and "not a loopback address" in result.stderr
    assert "--admin-token" in result.stderr and "Traceback" not in result.stderr


def test_a_short_token_is_refused() -> None:
    result = run_cli("lb", "--admin-token", "abc")
    assert result.returncode == 2 and "--admin-token" in result.stderr


def test_help_explains_the_admin_flags() -> None:
    out = run_cli("lb", "--help").stdout
    assert "--admin-token" in out and "GSERVERS_LB_ADMIN_TOKEN" in out
