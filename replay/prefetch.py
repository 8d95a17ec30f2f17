"""Background threads that keep batches of the last requested shape ready.

Prefetching is keyed by (batch_size, length): the first `get` of a shape samples
it and restarts the threads for that shape; later calls of the same shape pop a
ready batch. A batch is a snapshot of the commit current when it was read, at
most `depth` batches old.
"""

import queue
import threading

import numpy as np


class Prefetcher:
    """`sample_fn(rng, batch_size, length) -> batch` runs in `threads` daemon threads."""

    def __init__(self, sample_fn, threads: int, seeds: np.random.SeedSequence, depth: int):
        self._sample_fn = sample_fn
        self._threads = threads
        self._seeds = seeds
        self._depth = depth
        self._shape = None
        self._queue = None
        self._stop = None
        self._workers = []
        self._error = None

    def get(self, batch_size: int, length: int) -> dict:
        if (batch_size, length) != self._shape:
            self._restart((batch_size, length))
        while True:
            if self._error is not None:
                raise self._error
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                continue

    def _restart(self, shape):
        self.stop()
        self._error = None
        self._shape = shape
        self._queue = queue.Queue(maxsize=self._depth)
        self._stop = threading.Event()
        self._workers = [
            threading.Thread(
                target=self._work,
                args=(shape, np.random.default_rng(seed), self._queue, self._stop),
                name=f"replay-prefetch-{index}",
                daemon=True,
            )
            for index, seed in enumerate(self._seeds.spawn(self._threads))
        ]
        for worker in self._workers:
            worker.start()

    def _work(self, shape, rng, batches: queue.Queue, stop: threading.Event):
        try:
            while not stop.is_set():
                batch = self._sample_fn(rng, *shape)
                while not stop.is_set():
                    try:
                        batches.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except Exception as error:  # handed to the caller of get(), which raises it
            self._error = error

    def stop(self):
        """Stop and join the threads; pending batches are dropped."""
        if self._stop is not None:
            self._stop.set()
        for worker in self._workers:
            worker.join()
        self._workers = []
        self._shape = None
