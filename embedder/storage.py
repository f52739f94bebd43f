"""The product's own files: written atomically (beside the target, flushed, renamed over it, so a
crash leaves the old file or the new one, never a half-written one), and JSON descriptions read
back with a check that this product wrote them.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on success it replaces `target` atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file should read like any other
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def read_format_json(path: Path, fmt: str, kind: str, error: type[Exception], absent: Callable[[], str]) -> dict:
    """The JSON object at `path` whose "format" is `fmt`; otherwise error(...): absent() when the
    file is missing, or why it is unreadable or not `kind` ("a catalog") of this product."""
    if not path.is_file():
        raise error(absent())
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{path} is not readable: {exc}") from None
    if info.get("format") != fmt:
        raise error(f"{path} is not {kind} of this product (format {fmt})")
    return info


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
