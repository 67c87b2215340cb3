"""Error type and file helpers shared by the Kafka jar download and broker control."""

import contextlib
import fcntl
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from cartstream.errors import CartstreamError

_LOG_TAIL_LINES = 40


class KafkaStartError(CartstreamError, RuntimeError):
    """Failure to download, format or start the local Kafka broker."""


def _write_text_atomic(path: Path, text: str) -> None:
    # Readers see either the old or the new file, never a partly written one.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` across processes."""
    with path.open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _read_resource(name: str) -> bytes:
    return resources.files("cartstream.stack").joinpath(name).read_bytes()


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])
