"""A worker thread that consumes items in submission order, for overlapping I/O and hashing.

hashlib, zlib and file writes release the GIL while they work on a chunk, so handing chunks to one
background thread lets them run beside the caller's own reading and hashing. The bounded queue
keeps memory at a few chunks; items handed over must not be mutated afterwards. A failure in the
worker is re-raised in the caller's thread (at the next :meth:`submit` or at :meth:`close`).
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Final, Generic, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")
QUEUE_DEPTH: Final = 4


class Background(Generic[T]):
    """Runs ``consume(item)`` for every submitted item, in order, on one daemon thread."""

    def __init__(self, consume: Callable[[T], object], *, name: str) -> None:
        self._consume = consume
        self._queue: queue.Queue[tuple[T] | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._consume(item[0])
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def submit(self, item: T) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((item,))

    def close(self, *, reraise: bool = True) -> None:
        """Wait until every submitted item is consumed; re-raise the first failure if asked.

        Idempotent; with ``reraise=False`` (cleaning up after another failure) it never raises.
        """
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if reraise and self._error is not None:
            raise self._error
