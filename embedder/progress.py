"""How long operations say how far they are: one callback, progress(stage, done, total).

Embedding, building and changing catalogs, and exporting all report through it. `total == 0`
carries a message without a count (e.g. which tuning step ran). Operations accept
`progress=True` (bars on the console), `False` (silent) or a callback of their own (the app's
Streamlit progress bar).
"""
from __future__ import annotations

from typing import Callable, Union

from tqdm import tqdm

ProgressCallback = Callable[[str, int, int], None]
ProgressOption = Union[bool, None, ProgressCallback]


def no_progress(stage: str, done: int, total: int) -> None:
    """Report nothing."""


class ConsoleProgress:
    """A tqdm bar per stage on stderr; messages printed above the bars."""

    def __init__(self):
        self._bar: tqdm | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if total <= 0:
            tqdm.write(stage)
            return
        if self._bar is None or self._bar.desc != stage or done < self._bar.n:
            self.close()
            self._bar = tqdm(total=total, desc=stage, leave=False, dynamic_ncols=True)
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def as_callback(progress: ProgressOption) -> ProgressCallback:
    """The callback an operation reports to, from what its caller passed."""
    if callable(progress):
        return progress
    return ConsoleProgress() if progress else no_progress


class Stage:
    """Counts one stage of an operation, reporting each step (and the start) to the callback."""

    def __init__(self, progress: ProgressCallback, name: str, total: int):
        self.progress, self.name, self.total, self.done = progress, name, int(total), 0
        if self.total:
            progress(name, 0, self.total)

    def advance(self, n: int = 1) -> None:
        self.reach(self.done + n)

    def reach(self, done: int) -> None:
        if done != self.done and self.total:
            self.done = int(done)
            self.progress(self.name, self.done, self.total)
