"""Stage supervision and the drop-oldest frame queue."""
from __future__ import annotations

import threading

import pytest

from agent.runtime.queues import DropOldestQueue
from agent.runtime.stage import RestartPolicy, Stage


def test_frame_queue_drops_the_oldest_and_counts_it():
    frames: DropOldestQueue[int] = DropOldestQueue(maxsize=3)
    for i in range(10):
        frames.put(i)
    assert frames.dropped == 7
    assert [frames.get(timeout=0.1) for _ in range(3)] == [7, 8, 9]


class Flaky(Stage):
    """Fails on chosen items the first time it sees them; records what it processed."""

    name = "flaky"

    def __init__(self, stop, items, fail_on):
        super().__init__(stop)
        self.items = list(items)
        self.fail_on = set(fail_on)
        self.done: list[int] = []
        self.pending = None

    def should_finish(self):
        return not self.items and self.pending is None

    def step(self):
        if self.pending is None:
            self.pending = self.items.pop(0)
        if self.pending in self.fail_on:
            self.fail_on.discard(self.pending)
            raise RuntimeError(f"injected failure on {self.pending}")
        self.done.append(self.pending)
        self.pending = None


def test_a_crashed_stage_restarts_and_retries_the_item_it_held():
    stage = Flaky(threading.Event(), range(20), fail_on={3, 11})
    stage.restart_policy = RestartPolicy(max_restarts=5, window_s=60, backoff_initial_s=0.01, backoff_max_s=0.05)
    stage.start()
    assert stage.join(timeout=10)
    assert stage.done == list(range(20))
    assert stage.restarts == 2 and "injected failure on 11" in stage.last_error
    assert not stage.fatal.is_set()


def test_a_stage_crashing_too_often_is_fatal():
    stage = Flaky(threading.Event(), range(10), fail_on=set(range(10)))
    stage.restart_policy = RestartPolicy(max_restarts=2, window_s=60, backoff_initial_s=0.0, backoff_max_s=0.0)
    stage.start()
    assert stage.join(timeout=10)
    assert stage.fatal.is_set()
    assert stage.restarts == 2


@pytest.mark.parametrize("restarts_allowed", [0])
def test_zero_restarts_allowed_means_first_crash_is_fatal(restarts_allowed):
    stage = Flaky(threading.Event(), [1], fail_on={1})
    stage.restart_policy = RestartPolicy(max_restarts=restarts_allowed, backoff_initial_s=0.0, backoff_max_s=0.0)
    stage.start()
    stage.join(timeout=5)
    assert stage.fatal.is_set() and stage.done == []
