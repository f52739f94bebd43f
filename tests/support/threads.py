"""One torch thread for the small models the tests build shops and measure settings with.

Their convolutions are tiny (a 64-px product mask, 32-px catalog images): a second intra-op thread
saves nothing on them, and on a loaded machine it costs much: each call waits until both threads are
scheduled (measured here at load 25 on 2 cores: 12 tiny-shop photos through the product mask 104 s
with two threads, 4.4 s with one). One thread also gives the same floats as the tests' child
processes, which run with OMP_NUM_THREADS=1.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run the block with torch on one intra-op thread, then give back the number it had."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
