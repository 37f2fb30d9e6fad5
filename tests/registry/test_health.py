"""The health board: node states from probes, the circuit breaker of forwarded calls, and
the subtree rule for what a child reports."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from yunnao.cascade.prober import beijing_day, health_answer
from yunnao.registry.health import HealthBoard, NodeState, beijing_clock
from yunnao.registry.health_view import capability_health, hop_for

CITY, SHINAN, LAOSHAN = "sd.qd", "sd.qd.shinan", "sd.qd.laoshan"


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def board(clock: Clock | None = None) -> HealthBoard:
    return HealthBoard(CITY, open_for=5.0, clock=clock or Clock())


def test_this_node_is_ok_and_nodes_never_heard_of_are_unknown() -> None:
    b = board()
    assert b.get(CITY).state == NodeState.OK
    assert b.get(SHINAN).state == NodeState.UNKNOWN
    assert b.reachable(SHINAN) and b.allow(SHINAN)


def test_a_failed_call_opens_the_breaker_then_one_trial_goes_through() -> None:
    clock = Clock()
    b = board(clock)
    b.failure(SHINAN, "cannot be reached: ClientConnectorError")
    assert not b.allow(SHINAN) and b.is_open(SHINAN)
    clock.now += 4.9
    assert not b.allow(SHINAN)
    clock.now += 0.2  # half-open: exactly one trial at a time
    assert b.allow(SHINAN)
    assert not b.allow(SHINAN)
    b.failure(SHINAN, "no answer in time")  # the trial failed: open again
    assert not b.allow(SHINAN)
    clock.now += 5.1
    assert b.allow(SHINAN)
    b.success(SHINAN)  # the trial got an answer: closed
    assert b.allow(SHINAN) and b.allow(SHINAN) and not b.is_open(SHINAN)


def test_a_trial_that_ends_without_an_answer_lets_another_try() -> None:
    clock = Clock()
    b = board(clock)
    b.failure(SHINAN, "timeout")
    clock.now += 6
    assert b.allow(SHINAN)
    b.release(SHINAN)
    assert b.allow(SHINAN)


def test_two_failed_probes_in_a_row_make_a_node_down() -> None:
    b = board()
    b.probed(SHINAN, True, 12.0, None, lag=0)
    assert b.get(SHINAN).state == NodeState.OK
    b.probed(SHINAN, False, None, "no answer within 2 s")
    assert b.get(SHINAN).state == NodeState.OK  # one miss is not enough
    assert not b.allow(SHINAN)  # but the breaker opens at once
    b.probed(SHINAN, False, None, "no answer within 2 s")
    down = b.get(SHINAN)
    assert down.state == NodeState.DOWN and down.since is not None
    assert not b.reachable(SHINAN)
    b.probed(SHINAN, True, 8.0, None, lag=0)  # it answers again
    assert b.get(SHINAN).state == NodeState.OK and b.allow(SHINAN)


def test_one_failed_probe_after_a_failed_call_is_enough() -> None:
    b = board()
    b.failure(SHINAN, "cannot be reached")
    b.probed(SHINAN, False, None, "no answer")
    assert b.get(SHINAN).state == NodeState.DOWN


def test_a_lagging_peer_is_late_but_reachable() -> None:
    b = board()
    b.probed(SHINAN, True, 5.0, None, lag=40, late=True)
    health = b.get(SHINAN)
    assert health.state == NodeState.LATE and health.lag == 40 and b.reachable(SHINAN)


def test_a_child_speaks_only_for_its_own_subtree() -> None:
    b = board()
    b.probed(SHINAN, True, 5.0, None)
    b.probed(LAOSHAN, True, 5.0, None)
    now = datetime.now(UTC).isoformat()
    claims = [
        {"node": f"{SHINAN}.jiedao", "state": "ok", "checked_at": now, "latency_ms": 3},
        {"node": LAOSHAN, "state": "down"},  # a sibling
        {"node": CITY, "state": "down"},  # its parent
        {"node": "sd", "state": "down"},  # above
        {"node": SHINAN, "state": "down"},  # itself
        {"node": "sd.qd.shinanx", "state": "down"},  # a sibling sharing a prefix
        "garbage",
        {"node": f"{SHINAN}.other", "state": "nonsense"},
    ]
    assert b.adopt(SHINAN, claims) == 2
    assert b.get(LAOSHAN).state == NodeState.OK
    assert b.get(CITY).state == NodeState.OK
    assert b.get(SHINAN).state == NodeState.OK
    assert b.get("sd.qd.shinanx").state == NodeState.UNKNOWN
    below = b.get(f"{SHINAN}.jiedao")
    assert below.state == NodeState.OK and below.via == SHINAN and below.latency_ms == 3.0
    assert b.get(f"{SHINAN}.other").state == NodeState.UNKNOWN
    # The child down: what is reached through it is down too.
    b.probed(SHINAN, False, None, "x")
    b.probed(SHINAN, False, None, "x")
    assert not b.reachable(f"{SHINAN}.jiedao")
    # A later answer replaces what it said before.
    b.probed(SHINAN, True, 5.0, None)
    b.adopt(SHINAN, [])
    assert b.get(f"{SHINAN}.jiedao").state == NodeState.UNKNOWN


def test_a_child_cannot_override_a_node_this_one_probes() -> None:
    b = HealthBoard("sd", open_for=5.0)
    b.probed(CITY, True, 5.0, None)
    b.probed(SHINAN, True, 5.0, None)  # say "sd" probes shinan itself
    b.adopt(CITY, [{"node": SHINAN, "state": "down"}])
    assert b.get(SHINAN).state == NodeState.OK


def test_the_parent_gets_the_subtree_a_child_nothing() -> None:
    b = board()
    b.probed(SHINAN, False, None, "x")
    b.probed(SHINAN, False, None, "x")
    b.probed("sd", True, 5.0, None)
    to_parent = health_answer(b, to_parent=True)
    assert [n["node"] for n in to_parent["nodes"]] == [SHINAN]
    assert to_parent["nodes"][0]["state"] == "down"
    assert health_answer(b, to_parent=False)["nodes"] == []


def test_why_down_names_the_node_its_title_and_beijing_time() -> None:
    b = HealthBoard(CITY, title={SHINAN: "市南区"}.get)
    b.probed(SHINAN, False, None, "x")
    b.probed(SHINAN, False, None, "x")
    since = b.get(SHINAN).since
    assert since is not None
    text = b.why_down(SHINAN)
    assert (
        text == f"node {SHINAN} (市南区) is unreachable since {beijing_clock(since)} (Beijing time)"
    )
    assert beijing_clock(datetime(2026, 1, 1, 16, 30, 5, tzinfo=UTC)) == "00:30:05"
    assert beijing_day(datetime(2026, 1, 1, 16, 30, tzinfo=UTC)) == "2026-01-02"


def test_a_capabilitys_health_follows_its_origin_and_the_hop() -> None:
    b = board()
    assert hop_for(b, f"{SHINAN}.jiedao", "sd") == SHINAN
    assert hop_for(b, "sd.yt", "sd") == "sd"
    assert hop_for(b, CITY, "sd") is None
    local = capability_health(b, CITY, "sd")
    assert local.reachable and local.state == "ok"
    b.probed(SHINAN, True, 5.0, None)
    assert capability_health(b, SHINAN, "sd").state == "ok"
    # Nothing known of a node below shinan: shinan's own state stands for it.
    assert capability_health(b, f"{SHINAN}.jiedao", "sd").state == "ok"
    b.probed(SHINAN, False, None, "x")
    b.probed(SHINAN, False, None, "x")
    cold = capability_health(b, f"{SHINAN}.jiedao", "sd")
    assert not cold.reachable and cold.state == "down"
    assert capability_health(b, "sd.yt", "sd").state == "unknown"
    stats = type("Stats", (), {"calls": 10, "success_rate": 0.9, "p50_ms": 12.5})()
    shown = capability_health(b, CITY, "sd", stats)
    assert (shown.calls, shown.success_rate, shown.p50_ms) == (10, 0.9, 12.5)


def test_the_breaker_gives_one_trial_to_many_threads() -> None:
    clock = Clock()
    b = board(clock)
    b.failure(SHINAN, "x")
    clock.now += 6
    allowed: list[bool] = []
    gate = threading.Barrier(16)

    def ask() -> None:
        gate.wait()
        allowed.append(b.allow(SHINAN))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 1


def test_a_peer_is_late_when_its_cascade_lags_too_long() -> None:
    from datetime import timedelta

    from yunnao.cascade.prober import lagging
    from yunnao.registry.tables import Peer

    now = datetime.now(UTC)
    long_ago, just_now = now - timedelta(seconds=120), now - timedelta(seconds=5)

    def peer(**kw: object) -> Peer:
        base = {"id": SHINAN, "relation": "child", "public_key": "00", "pull": True}
        return Peer(**{**base, "created_at": long_ago, **kw})

    caught_up = peer(head=10, checkpoint=10, caught_up_at=just_now, last_sync_at=just_now)
    assert lagging(caught_up, now, 60) == (0, False)
    behind = peer(head=30, checkpoint=10, caught_up_at=long_ago, last_sync_at=just_now)
    assert lagging(behind, now, 60) == (20, True)
    briefly = peer(head=30, checkpoint=10, caught_up_at=just_now, last_sync_at=just_now)
    assert lagging(briefly, now, 60) == (20, False)
    silent = peer(head=10, checkpoint=10, caught_up_at=long_ago, last_sync_at=long_ago)
    assert lagging(silent, now, 60) == (0, True)
    parent = peer(id=CITY, relation="parent", pull=False)
    assert lagging(parent, now, 60) == (None, False)
