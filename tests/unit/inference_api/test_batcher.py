"""The micro-batcher groups concurrent items, keeps each caller's result, and fails cleanly."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from services.inference_api.batcher import BatcherStopped, MicroBatcher


class Recorder:
    """A batch function that doubles numbers and records the batches it was given."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.threads: set[str] = set()

    def __call__(self, items: list[int]) -> list[int]:
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(items))
        time.sleep(self.delay)
        return [2 * x for x in items]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_items_share_batches_and_get_their_own_results():
    recorder = Recorder(delay=0.05)

    async def scenario():
        batcher = MicroBatcher(recorder, max_batch_size=4, window_seconds=0.05)
        await batcher.start()
        try:
            futures = [batcher.submit(i) for i in range(10)]
            return await asyncio.gather(*futures)
        finally:
            await batcher.stop()

    results = run(scenario())
    assert results == [2 * i for i in range(10)]
    assert [len(b) for b in recorder.batches] == [4, 4, 2]
    assert sorted(x for b in recorder.batches for x in b) == list(range(10))
    assert all(name.startswith("forward") for name in recorder.threads)


def test_window_is_waited_only_while_other_requests_are_preparing():
    recorder = Recorder()

    async def scenario():
        batcher = MicroBatcher(recorder, max_batch_size=8, window_seconds=0.5)
        await batcher.start()
        try:
            started = time.perf_counter()
            await batcher.submit(1)  # nobody else is coming: no waiting
            alone = time.perf_counter() - started

            async def late_joiner():
                with batcher.preparing():
                    await asyncio.sleep(0.05)  # decoding its image
                return await batcher.submit(2)

            joiner = asyncio.create_task(late_joiner())
            await asyncio.sleep(0.01)
            first = batcher.submit(3)
            await asyncio.gather(first, joiner)
            return alone
        finally:
            await batcher.stop()

    alone = run(scenario())
    assert alone < 0.25
    assert recorder.batches == [[1], [3, 2]]


def test_window_bounds_the_wait():
    recorder = Recorder()

    async def scenario():
        batcher = MicroBatcher(recorder, max_batch_size=8, window_seconds=0.05)
        await batcher.start()
        try:
            with batcher.preparing():  # announced, but never submits
                started = time.perf_counter()
                await batcher.submit(1)
                return time.perf_counter() - started
        finally:
            await batcher.stop()

    waited = run(scenario())
    assert 0.04 <= waited < 0.4
    assert recorder.batches == [[1]]


def test_an_exception_reaches_every_caller_of_the_batch_and_the_worker_goes_on():
    calls = []

    def flaky(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return items

    async def scenario():
        batcher = MicroBatcher(flaky, max_batch_size=4, window_seconds=0.01)
        await batcher.start()
        try:
            failed = await asyncio.gather(
                batcher.submit(1), batcher.submit(2), return_exceptions=True
            )
            after = await batcher.submit(3)
            return failed, after
        finally:
            await batcher.stop()

    failed, after = run(scenario())
    assert all(isinstance(f, RuntimeError) and "device lost" in str(f) for f in failed)
    assert after == 3


def test_cancelled_callers_are_skipped():
    recorder = Recorder()

    async def scenario():
        batcher = MicroBatcher(recorder, max_batch_size=4, window_seconds=0.05)
        await batcher.start()
        try:
            with batcher.preparing():
                gone = batcher.submit(1)
                stays = batcher.submit(2)
                gone.cancel()
            return await stays
        finally:
            await batcher.stop()

    assert run(scenario()) == 4
    assert recorder.batches == [[2]]


def test_stop_fails_waiting_callers_and_refuses_new_items():
    release = threading.Event()

    def blocked(items: list[int]) -> list[int]:
        release.wait(5)
        return items

    async def scenario():
        batcher = MicroBatcher(blocked, max_batch_size=1, window_seconds=0.0)
        await batcher.start()
        running = batcher.submit(1)
        queued = batcher.submit(2)
        await asyncio.sleep(0.05)
        await batcher.stop()
        release.set()
        outcomes = await asyncio.gather(running, queued, return_exceptions=True)
        with pytest.raises(BatcherStopped):
            batcher.submit(3)
        return outcomes

    outcomes = run(scenario())
    assert all(isinstance(o, BatcherStopped) for o in outcomes)


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(Recorder(), max_batch_size=0, window_seconds=0.0)
