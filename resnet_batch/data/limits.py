"""What one input may cost, bounded before it is spent: the bytes read, the pixels decoded
(counted in 8-bit samples: a 16-bit image costs twice its pixels), and the memory a decode
task's images being decoded at once may hold."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

from PIL import ImageMode

DEFAULT_MAX_PIXELS = 100_000_000  # ~10k x 10k 8-bit pixels; larger inputs are refused before decoding
DEFAULT_MAX_BYTES = 512 * 2**20  # a file larger than this is refused before it is read whole
# What one decode task may hold in images being decoded at once (its fetch threads share it):
# a task decodes many small images side by side, and large ones one at a time.
DECODE_TASK_BYTES = 2**30


def sample_bytes(mode: str) -> int:
    """Bytes per sample of a Pillow mode: 1 for 8-bit modes, 2 for 16-bit, 4 for 32-bit."""
    try:
        return int(ImageMode.getmode(mode).typestr[-1])
    except (KeyError, ValueError):
        return 4


def decode_bytes(width: int, height: int, mode: str) -> int:
    """About what decoding an image holds at its peak: its samples as decoded, and the
    8-bit RGB copy (4 bytes a pixel in Pillow) made of them."""
    return width * height * (len(ImageMode.getmode(mode).bands) * sample_bytes(mode) + 4)


class DecodeMemory:
    """The bytes a decode task's threads may hold in images being decoded at once: a thread
    waits until its image fits beside the others (one image alone always does)."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0
        self._room = threading.Condition()

    @contextmanager
    def holding(self, size: int) -> Iterator[None]:
        with self._room:
            self._room.wait_for(lambda: self.held == 0 or self.held + size <= self.limit)
            self.held += size
        try:
            yield
        finally:
            with self._room:
                self.held -= size
                self._room.notify_all()


@dataclass(frozen=True)
class Limits:
    """What one input may cost: bytes read, 8-bit pixels decoded (decode_rgb), and the
    memory a task's images being decoded at once may hold (None: no bound)."""

    max_pixels: int = DEFAULT_MAX_PIXELS
    max_bytes: int | None = DEFAULT_MAX_BYTES
    memory: DecodeMemory | None = None

    def holding(self, size: int) -> AbstractContextManager[None]:
        """While an image of `size` bytes is decoded: within the task's memory, if bounded."""
        return self.memory.holding(size) if self.memory else nullcontext()
