"""File plumbing every layer uses: atomic writes (beside the target, flushed, renamed over it, so a
crash leaves the old file or the new one, never a half-written one), JSON descriptions read back
with a check that this product wrote them, a file's content fingerprint, and byte sizes for people.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from stat import S_ISREG
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
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename or a new entry in `folder` durable (where the file system allows it)."""
    with contextlib.suppress(OSError):  # not every file system lets a directory be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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


def file_facts(path: str | os.PathLike) -> tuple[str, int, int]:
    """(content hash of the bytes, size, mtime_ns): enough to tell whether a file changed."""
    stat = os.stat(path)
    if not S_ISREG(stat.st_mode):  # a device or FIFO (a link to /dev/zero) would be read for ever
        raise OSError(errno.EINVAL, "not a regular file (a device, pipe or socket)", str(path))
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256")
    return digest.hexdigest()[:32], int(stat.st_size), int(stat.st_mtime_ns)


def parse_size(text: str | int | float) -> int:
    """'2GB', '512 MiB', '1.5G', 1000000 -> bytes (K/M/G/T are powers of 1024)."""
    if isinstance(text, (int, float)):
        return int(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"not a memory size: {text!r} (write e.g. 2GB, 512MB, 1.5G)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * 1024 ** " kmgt".index(unit or " "))


def format_size(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n_bytes) < 1024 or unit == "GB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} GB"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def markdown_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A Markdown table; `align` has one letter per column, l or r (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    lines = ["| " + " | ".join(str(h) for h in header) + " |", rule]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
