"""Dynamic micro-batching: concurrent requests share one forward pass.

A CPU or GPU encodes a batch of 8 or 16 images in much less time than 8 or 16 single
forwards, so under load the service groups images that arrive close together. One worker
task takes the first queued item, gathers more until ``max_batch_size`` or until the
window has passed, runs the whole batch in a dedicated thread (the event loop stays free
to accept and decode further requests) and resolves each caller's future.

The window is only waited for while other requests are still being prepared (decoded and
preprocessed) and will join soon; a lone request is run at once instead of paying the
window in latency for nothing. Items that arrive while a batch is running queue up and
form the next batch, so under steady load batches fill without any waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BatcherStopped(RuntimeError):
    """The service is shutting down; the item was not run."""


class MicroBatcher(Generic[T, R]):
    """Runs ``run(items) -> results`` (same length and order) on groups of queued items."""

    def __init__(
        self,
        run: Callable[[list[T]], list[R]],
        *,
        max_batch_size: int,
        window_seconds: float,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._run = run
        self.max_batch_size = max_batch_size
        self.window_seconds = window_seconds
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._preparing = 0

    async def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="forward")
        self._task = asyncio.create_task(self._work(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop the worker; callers still waiting get BatcherStopped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._queue is not None:
            while not self._queue.empty():
                _, future = self._queue.get_nowait()
                if not future.done():
                    future.set_exception(BatcherStopped("the service is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Mark a request whose items will be submitted soon (while it decodes them)."""
        self._preparing += 1
        try:
            yield
        finally:
            self._preparing -= 1

    def submit(self, item: T) -> asyncio.Future[R]:
        """Queue one item; the future resolves to its result (or its batch's exception)."""
        if self._queue is None or self._task is None or self._task.done():
            raise BatcherStopped("the micro-batcher is not running")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return future

    async def _collect(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        """Fill ``batch`` (in place, so that nothing is lost if cancelled meanwhile)."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        batch.append(await self._queue.get())
        deadline = loop.time() + self.window_seconds
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if self._preparing == 0 or remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        # A caller that went away (client disconnected) has a cancelled future.
        live = [(item, future) for item, future in batch if not future.done()]
        if not live:
            return
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self._executor, self._run, [item for item, _ in live]
            )
        except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
            log.exception("batched forward failed")
            for _, future in live:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(live, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _work(self) -> None:
        while True:
            batch: list[tuple[T, asyncio.Future[R]]] = []
            try:
                await self._collect(batch)
                await self._run_batch(batch)
            except asyncio.CancelledError:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(BatcherStopped("the service is shutting down"))
                raise
