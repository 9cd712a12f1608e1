"""app/manyfiles.py helpers: the connection budget bounds the data connections of a many-file run (a chunked file
takes what is free, at least one; a stop ends a wait), and the metrics hook is throttled."""

from __future__ import annotations

import threading

import pytest

from modfetch.app.manyfiles import ConnectionBudget, Throttled
from modfetch.cancel import STOP, Interrupted
from tests.conftest import wait_for


@pytest.mark.parametrize(("total", "takes", "expected"), [
    (8, [1, 1, 8], [1, 1, 6]),    # a chunked file after two small ones gets what is left
    (8, [8, 1], [8, None]),       # everything taken: the next waits
    (4, [2, 2, 1], [2, 2, None]),
    (1, [4], [1]),                # never more than the budget, at least one
])
def test_the_budget_never_hands_out_more_than_its_total(total: int, takes: list[int],
                                                        expected: list[int | None]) -> None:
    budget = ConnectionBudget(total)
    got: list[int | None] = []
    for want in takes:
        if budget.free < 1:
            got.append(None)
            continue
        got.append(budget.take(want))
    assert got == expected
    assert budget.peak <= total


def test_a_waiting_take_proceeds_when_connections_come_back() -> None:
    budget = ConnectionBudget(2)
    assert budget.take(2) == 2
    result: list[int] = []
    waiter = threading.Thread(target=lambda: result.append(budget.take(2)))
    waiter.start()
    wait_for(lambda: waiter.is_alive(), "the waiter to block")
    assert result == []
    budget.give(1)
    waiter.join(5)
    assert result == [1] and budget.free == 0


def test_a_stop_ends_a_wait_for_a_connection() -> None:
    budget = ConnectionBudget(1)
    budget.take(1)
    outcome: list[str] = []

    def wait() -> None:
        try:
            budget.take(1)
            outcome.append("took")
        except Interrupted:
            outcome.append("stopped")

    waiter = threading.Thread(target=wait)
    waiter.start()
    try:
        STOP.set()
        waiter.join(5)
    finally:
        STOP.clear()
    assert outcome == ["stopped"]


def test_the_hook_is_throttled_from_the_start() -> None:
    """Fifty files finishing within the interval write the metrics textfile not once (the end of the command
    writes it); once the interval has passed, the next call writes it."""
    calls: list[int] = []
    hook = Throttled(lambda: calls.append(1), seconds=0.2)
    for _ in range(50):
        hook()
    assert calls == []
    wait_for(lambda: (hook(), bool(calls))[1], "the interval to pass")
    assert calls == [1]
    hook()
    assert calls == [1]
