"""The supervisor's restart policy, without processes: backoff doubles to its cap and
starts afresh after a stable run; a child restarted ``max_restarts`` times within the
window that exits again is a crash loop, the same count spread wider is not."""

from __future__ import annotations

import signal

import pytest

from orders_app.embedded.supervisor import (
    BACKOFF_INITIAL,
    BACKOFF_MAX,
    CRASH_LOOP_RESTARTS,
    CRASH_LOOP_WINDOW,
    RestartHistory,
    RestartPolicy,
    describe_exit,
)


def run_exits(
    policy: RestartPolicy, exits: list[tuple[float, float]]
) -> tuple[list[float], RestartHistory, str]:
    """Feed (exit time, uptime) pairs; the delays until the first give-up, and its reason."""
    history = RestartHistory()
    delays: list[float] = []
    for now, uptime in exits:
        decision = policy.decide(history, uptime=uptime, now=now)
        history = decision.history
        if not decision.restart:
            return delays, history, decision.reason
        delays.append(decision.delay)
    return delays, history, ""


def test_defaults_are_the_documented_ones() -> None:
    policy = RestartPolicy()
    assert (
        (policy.backoff_initial, policy.backoff_max)
        == (BACKOFF_INITIAL, BACKOFF_MAX)
        == (
            0.5,
            10.0,
        )
    )
    assert (
        (policy.max_restarts, policy.window)
        == (CRASH_LOOP_RESTARTS, CRASH_LOOP_WINDOW)
        == (
            5,
            60.0,
        )
    )


def test_backoff_doubles_from_initial_up_to_the_cap() -> None:
    # far apart in time, so the crash-loop budget never interferes
    policy = RestartPolicy()
    delays, _history, reason = run_exits(policy, [(i * 100.0, 1.0) for i in range(9)])
    assert reason == ""
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]


def test_backoff_never_overflows_for_a_long_flapping_child() -> None:
    assert RestartPolicy().backoff(10_000) == BACKOFF_MAX


def test_a_stable_run_resets_the_backoff() -> None:
    policy = RestartPolicy(stable_after=30.0)
    exits = [(0.0, 1.0), (100.0, 1.0), (200.0, 1.0), (300.0, 45.0), (400.0, 1.0)]
    delays, history, reason = run_exits(policy, exits)
    assert reason == ""
    assert delays == [0.5, 1.0, 2.0, 0.5, 1.0]
    assert history.failures == 2


def test_a_run_just_short_of_stable_does_not_reset() -> None:
    policy = RestartPolicy(stable_after=30.0)
    delays, _history, _reason = run_exits(policy, [(0.0, 1.0), (100.0, 29.9)])
    assert delays == [0.5, 1.0]


def test_five_restarts_within_the_window_and_another_exit_is_a_crash_loop() -> None:
    policy = RestartPolicy()
    # a child that dies at once: exits at 0, 0.5, 1.5, 3.5, 7.5 are restarted (5 restarts
    # within 60 s); the exit at 15.5 finds the budget spent
    exits = [(0.0, 0.0), (0.5, 0.0), (1.5, 0.0), (3.5, 0.0), (7.5, 0.0), (15.5, 0.0)]
    delays, history, reason = run_exits(policy, exits)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert len(history.restarts) == 5
    assert reason == "crash loop: 5 restarts within 60s (limit 5)"


def test_four_restarts_within_the_window_keep_going() -> None:
    delays, _history, reason = run_exits(RestartPolicy(), [(t, 0.0) for t in (0, 1, 2, 3, 4)])
    assert reason == "" and len(delays) == 5


def test_five_restarts_spread_over_more_than_the_window_keep_going() -> None:
    # one exit every 13 s: at any moment at most 4 restarts lie within the last 60 s
    exits = [(i * 13.0, 5.0) for i in range(40)]
    delays, history, reason = run_exits(RestartPolicy(), exits)
    assert reason == ""
    assert len(delays) == 40
    assert len(history.restarts) <= 5  # old restarts are forgotten, memory stays bounded


def test_restarts_leaving_the_window_free_the_budget() -> None:
    policy = RestartPolicy()
    history = RestartHistory()
    for t in (0.0, 1.0, 2.0, 3.0, 4.0):
        history = policy.decide(history, uptime=0.0, now=t).history
    assert not policy.decide(history, uptime=0.0, now=59.0).restart
    assert policy.decide(history, uptime=0.0, now=60.5).restart


def test_configurable_limits() -> None:
    policy = RestartPolicy(max_restarts=2, window=10.0)
    _delays, _history, reason = run_exits(policy, [(0.0, 0.0), (1.0, 0.0), (2.0, 0.0)])
    assert reason == "crash loop: 2 restarts within 10s (limit 2)"
    delays, _history, reason = run_exits(policy, [(0.0, 0.0), (6.0, 0.0), (12.0, 0.0)])
    assert reason == "" and len(delays) == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backoff_initial": 0.0},
        {"backoff_initial": 5.0, "backoff_max": 1.0},
        {"max_restarts": 0},
        {"window": 0.0},
        {"stable_after": -1.0},
    ],
)
def test_nonsense_limits_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


def test_describe_exit_names_the_code_or_the_signal() -> None:
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV"
    assert describe_exit(-200) == "killed by signal 200"
