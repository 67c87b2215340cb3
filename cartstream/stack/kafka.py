"""Local single-node Apache Kafka broker in KRaft mode, built from Maven Central jars.

Formats, starts, finds and stops one broker per state directory, listening on
127.0.0.1 only. The broker jars come from ``ensure_kafka_jars`` in
``cartstream.stack.kafka_jars``, which this module re-exports.
"""

import asyncio
import base64
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar

import structlog
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from cartstream.errors import CartstreamError
from cartstream.stack.kafka_common import (
    KafkaStartError as KafkaStartError,
)
from cartstream.stack.kafka_common import (
    _file_lock,
    _read_resource,
    _tail,
    _write_text_atomic,
)
from cartstream.stack.kafka_jars import KAFKA_VERSION as KAFKA_VERSION
from cartstream.stack.kafka_jars import ensure_kafka_jars as ensure_kafka_jars
from cartstream.stack.ports import free_port

# The broker binds and advertises both listeners on loopback only.
HOST = "127.0.0.1"
NODE_ID = 1

_LOG4J2_RESOURCE = "kafka-log4j2.properties"
_PROBE_INTERVAL_S = 0.25
_PROBE_REQUEST_TIMEOUT_S = 5.0
_KILL_WAIT_S = 10.0

log = structlog.get_logger(__name__)

T = TypeVar("T")


class KafkaStopError(CartstreamError, RuntimeError):
    """Failure to end the local Kafka broker process, even with SIGKILL."""


@dataclass(frozen=True)
class KafkaNode:
    """A running local broker: its client address, process id and log file."""

    bootstrap_servers: str
    pid: int
    log_path: Path


class _NodeRecord(TypedDict, total=False):
    """Contents of node.json: the broker's identity, ports and (while running) pid."""

    cluster_id: str
    port: int
    controller_port: int
    bootstrap_servers: str
    pid: int


_INT_KEYS: tuple[Literal["port", "controller_port", "pid"], ...] = (
    "port",
    "controller_port",
    "pid",
)
_STR_KEYS: tuple[Literal["cluster_id", "bootstrap_servers"], ...] = (
    "cluster_id",
    "bootstrap_servers",
)


@dataclass(frozen=True)
class _KafkaPaths:
    """File layout of one broker under ``<state_dir>/kafka``."""

    root: Path

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def server_properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j2_properties(self) -> Path:
        return self.root / "log4j2.properties"

    @property
    def node_json(self) -> Path:
        return self.root / "node.json"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def console_log(self) -> Path:
        """JVM stdout and stderr: crashes and errors from before log4j is ready."""
        return self.logs_dir / "kafka.out"

    @property
    def meta_properties(self) -> Path:
        return self.data_dir / "meta.properties"


# --- start, find, stop -------------------------------------------------------


def start_kafka(
    state_dir: Path,
    lib_dir: Path,
    *,
    port: int | None = None,
    controller_port: int | None = None,
    timeout_s: float = 60.0,
) -> KafkaNode:
    """Start the broker of ``state_dir`` and wait until it serves metadata requests.

    Files live in ``state_dir/kafka``: data, logs, server.properties,
    log4j2.properties and node.json. Ports that are not given are chosen free at
    run time on the first start and read back from node.json on later starts,
    so a restarted broker keeps its address. If the broker recorded in node.json
    is still running, it is returned once it responds and no second one starts.
    The broker runs detached in its own session and outlives this process, until
    ``stop_kafka``.

    This function blocks the calling thread, so async code should call it
    through ``asyncio.to_thread``.

    Raises:
        ValueError: ``port`` equals ``controller_port``.
        KafkaStartError: java or the jars are missing, a stored port is in use,
            formatting failed, or the broker exited or did not respond within
            ``timeout_s``. The message includes the tail of the broker log.
    """
    if port is not None and port == controller_port:
        raise ValueError(f"port and controller_port must differ, both are {port}")

    deadline = time.monotonic() + timeout_s
    paths = _KafkaPaths(state_dir / "kafka")
    paths.root.mkdir(parents=True, exist_ok=True)

    with _file_lock(paths.lock):
        running = running_kafka(state_dir)
        if running is not None:
            log.info(
                "kafka_already_running",
                pid=running.pid,
                bootstrap_servers=running.bootstrap_servers,
            )
            _run_coroutine(
                _wait_until_serving(running, paths, None, deadline, log_offsets={})
            )
            return running

        java = _find_java()
        _check_lib_dir(lib_dir)
        record = _prepare_record(paths, port, controller_port)
        _write_config_files(paths, record)
        _format_storage(java, lib_dir, paths, record["cluster_id"], deadline)
        return _launch_broker(java, lib_dir, paths, record, deadline)


def running_kafka(state_dir: Path) -> KafkaNode | None:
    """Return the broker recorded in ``state_dir`` if its process is running.

    The process must still be the broker started with this state directory's
    server.properties, so a reused pid is not mistaken for it. A running process
    may still be starting up and not respond to requests yet.
    """
    paths = _KafkaPaths(state_dir / "kafka")
    record = _read_record(paths.node_json)
    pid = record.get("pid")
    bootstrap_servers = record.get("bootstrap_servers")
    if pid is None or bootstrap_servers is None:
        return None
    if not _is_broker_process(pid, paths.server_properties):
        return None

    return KafkaNode(
        bootstrap_servers=bootstrap_servers, pid=pid, log_path=paths.server_log
    )


def stop_kafka(state_dir: Path, timeout_s: float = 30.0) -> bool:
    """Stop the broker of ``state_dir`` with SIGTERM, or SIGKILL after ``timeout_s``.

    SIGTERM lets the broker shut down in a controlled way and close its logs
    cleanly. The pid is removed from node.json, while the ports and cluster id
    stay for the next start.

    Returns:
        True if a broker process was running, False otherwise.

    Raises:
        KafkaStopError: the process is still alive after SIGKILL.
    """
    paths = _KafkaPaths(state_dir / "kafka")
    if not paths.node_json.is_file():
        return False

    with _file_lock(paths.lock):
        record = _read_record(paths.node_json)
        pid = record.get("pid")
        if pid is None:
            return False

        is_running = _is_broker_process(pid, paths.server_properties)
        if is_running:
            _terminate(pid, paths.server_properties, timeout_s)

        del record["pid"]
        _write_record(paths.node_json, record)

    return is_running


def _terminate(pid: int, properties_path: Path, timeout_s: float) -> None:
    log.info("kafka_stop_started", pid=pid)
    started = time.monotonic()
    _signal_process(pid, signal.SIGTERM)
    if _wait_for_exit(pid, properties_path, timeout_s):
        log.info(
            "kafka_stopped", pid=pid, duration_s=round(time.monotonic() - started, 1)
        )
        return

    log.warning("kafka_stop_timed_out", pid=pid, timeout_s=timeout_s)
    _signal_process(pid, signal.SIGKILL)
    if not _wait_for_exit(pid, properties_path, _KILL_WAIT_S):
        raise KafkaStopError(
            f"Kafka broker pid {pid} is still running {_KILL_WAIT_S:.0f} s after "
            f"SIGKILL. Check it with `ps -p {pid}`"
        )
    log.info("kafka_killed", pid=pid)


def _signal_process(pid: int, signum: signal.Signals) -> None:
    # The process may have exited between the liveness check and the signal.
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _wait_for_exit(pid: int, properties_path: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if _has_exited(pid, properties_path):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _has_exited(pid: int, properties_path: Path) -> bool:
    # A broker started by this Python process keeps its pid as a zombie until it
    # is reaped, and its /proc cmdline is already empty while it exits. So the
    # exit of a child is read from waitpid, which also reaps it.
    try:
        reaped_pid, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not _is_broker_process(pid, properties_path)
    return reaped_pid == pid


# --- preparing a start -------------------------------------------------------


def _find_java() -> Path:
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file():
            return candidate

    found = shutil.which("java")
    if found is None:
        raise KafkaStartError(
            "java not found on PATH or in JAVA_HOME: Kafka 4.x needs Java 17 or newer"
        )
    return Path(found)


def _check_lib_dir(lib_dir: Path) -> None:
    if not any(lib_dir.glob("kafka_2.13-*.jar")):
        raise KafkaStartError(
            f"no kafka_2.13 jar in {lib_dir}: call ensure_kafka_jars first"
        )


def _prepare_record(
    paths: _KafkaPaths, port: int | None, controller_port: int | None
) -> _NodeRecord:
    """Choose the ports and cluster id for this start and store them in node.json."""
    record = _read_record(paths.node_json)

    # Ports are reused only together with the data they were formatted for, so a
    # restarted broker keeps the address its clients already know.
    has_data = paths.data_dir.is_dir()
    stored_port = record.get("port") if has_data else None
    stored_controller_port = record.get("controller_port") if has_data else None
    if port is None and stored_port is not None:
        port = stored_port
        _check_port_free(port, "port", paths.node_json)
    if (
        controller_port is None
        and stored_controller_port is not None
        and stored_controller_port != port
    ):
        controller_port = stored_controller_port
        _check_port_free(controller_port, "controller_port", paths.node_json)
    if port is None:
        port = _pick_port({controller_port})
    if controller_port is None:
        controller_port = _pick_port({port})

    record["cluster_id"] = (
        _read_formatted_cluster_id(paths.meta_properties)
        or record.get("cluster_id")
        or _new_cluster_id()
    )
    record["port"] = port
    record["controller_port"] = controller_port
    record["bootstrap_servers"] = f"{HOST}:{port}"
    record.pop("pid", None)
    _write_record(paths.node_json, record)

    return record


def _pick_port(excluded: set[int | None]) -> int:
    while True:
        port = free_port(HOST)
        if port not in excluded:
            return port


def _check_port_free(port: int, name: str, node_json: Path) -> None:
    # Java binds its listeners with SO_REUSEADDR, so only a listening or bound
    # socket blocks the broker. Connections in TIME_WAIT from the last run do not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            raise KafkaStartError(
                f"{name} {HOST}:{port} stored in {node_json} is in use by another "
                f"process. Stop that process, or pass {name}= to start_kafka"
            ) from exc


def _new_cluster_id() -> str:
    """Return a Kafka cluster id: a random UUID in URL-safe base64, unpadded."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka's Uuid.randomUuid() rejects ids that start with "-", which
        # command-line parsers read as options, and newer releases reject any "-".
        if "-" not in cluster_id:
            return cluster_id


def _read_formatted_cluster_id(meta_properties: Path) -> str | None:
    """Return the cluster id that an earlier format wrote, if any."""
    try:
        text = meta_properties.read_text(encoding="latin-1")
    except FileNotFoundError:
        return None

    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "cluster.id":
            return value.strip()
    return None


def _write_config_files(paths: _KafkaPaths, record: _NodeRecord) -> None:
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    paths.logs_dir.mkdir(parents=True, exist_ok=True)
    properties = _server_properties(
        paths, port=record["port"], controller_port=record["controller_port"]
    )
    _write_text_atomic(paths.server_properties, _format_properties(properties))
    _write_text_atomic(
        paths.log4j2_properties, _read_resource(_LOG4J2_RESOURCE).decode("utf-8")
    )


def _server_properties(
    paths: _KafkaPaths, *, port: int, controller_port: int
) -> dict[str, str]:
    """Return the broker configuration of a single combined KRaft node."""
    return {
        "process.roles": "broker,controller",
        "node.id": str(NODE_ID),
        "controller.quorum.voters": f"{NODE_ID}@{HOST}:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(paths.data_dir),
        # Internal topics default to replication factor 3, which one node cannot
        # satisfy, and to 50 partitions, which slows the first coordinator lookup.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        # The share-group coordinator of Kafka 4.1 and newer keeps its state in an
        # internal topic with a default replication factor of 3.
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Topics are created by the project with explicit partition counts.
        "auto.create.topics.enable": "false",
        "num.network.threads": "2",
        "num.io.threads": "2",
        # Keep every record, so projections can be rebuilt by replaying a topic.
        "log.retention.hours": "-1",
        "log.retention.bytes": "-1",
    }


def _format_properties(properties: dict[str, str]) -> str:
    lines = [
        f"{key}={_escape_property_value(value)}" for key, value in properties.items()
    ]
    return "\n".join(lines) + "\n"


def _escape_property_value(value: str) -> str:
    # java.util.Properties.load(InputStream) reads ISO-8859-1 and treats a
    # backslash as an escape, so control and non-ASCII characters become \uXXXX.
    escaped = []
    for char in value.replace("\\", "\\\\"):
        if 0x20 <= ord(char) < 0x7F:
            escaped.append(char)
            continue
        utf16 = char.encode("utf-16-be")
        for index in range(0, len(utf16), 2):
            escaped.append(f"\\u{int.from_bytes(utf16[index : index + 2]):04x}")
    return "".join(escaped)


def _java_base_command(java: Path, lib_dir: Path, paths: _KafkaPaths) -> list[str]:
    return [
        str(java),
        "-Xms256m",
        "-Xmx1g",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={paths.log4j2_properties}",
        f"-Dkafka.logs.dir={paths.logs_dir}",
        # Java expands the "*" itself, so the class path stays one argument.
        "-cp",
        f"{lib_dir}/*",
    ]


def _format_storage(
    java: Path, lib_dir: Path, paths: _KafkaPaths, cluster_id: str, deadline: float
) -> None:
    """Format the data directory for ``cluster_id``, a no-op if already formatted."""
    command = [
        *_java_base_command(java, lib_dir, paths),
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(paths.server_properties),
        # -g ignores an already formatted directory, so restarts keep their data.
        "-g",
    ]
    try:
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=max(deadline - time.monotonic(), 1.0),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise KafkaStartError(
            f"formatting Kafka storage in {paths.data_dir} timed out. Last lines "
            f"of its output:\n{_tail(_decode(exc.output))}"
        ) from exc

    if completed.returncode != 0:
        raise KafkaStartError(
            f"formatting Kafka storage in {paths.data_dir} failed with exit code "
            f"{completed.returncode}. Last lines of its output:\n"
            f"{_tail(_decode(completed.stdout))}"
        )


def _launch_broker(
    java: Path,
    lib_dir: Path,
    paths: _KafkaPaths,
    record: _NodeRecord,
    deadline: float,
) -> KafkaNode:
    command = [
        *_java_base_command(java, lib_dir, paths),
        "kafka.Kafka",
        str(paths.server_properties),
    ]
    started = time.monotonic()
    log_offsets = _log_offsets(paths)
    with paths.console_log.open("ab") as console:
        # A new session keeps the broker alive when the caller's terminal or
        # process group gets a signal, such as Ctrl-C in a test run.
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            cwd=paths.root,
            start_new_session=True,
        )

    record["pid"] = process.pid
    _write_record(paths.node_json, record)
    node = KafkaNode(
        bootstrap_servers=record["bootstrap_servers"],
        pid=process.pid,
        log_path=paths.server_log,
    )
    log.info(
        "kafka_start_started", pid=node.pid, bootstrap_servers=node.bootstrap_servers
    )

    try:
        _run_coroutine(_wait_until_serving(node, paths, process, deadline, log_offsets))
    except KafkaStartError:
        # Leave no half-started broker behind that holds the ports and data lock.
        if process.poll() is None:
            _terminate(process.pid, paths.server_properties, _KILL_WAIT_S)
        process.wait()
        record.pop("pid", None)
        _write_record(paths.node_json, record)
        raise

    log.info(
        "kafka_started",
        pid=node.pid,
        bootstrap_servers=node.bootstrap_servers,
        duration_s=round(time.monotonic() - started, 1),
    )
    return node


# --- readiness ---------------------------------------------------------------


async def _wait_until_serving(
    node: KafkaNode,
    paths: _KafkaPaths,
    process: subprocess.Popen[bytes] | None,
    deadline: float,
    log_offsets: dict[Path, int],
) -> None:
    """Poll the broker with metadata requests until it lists itself.

    ``process`` is the broker when this process started it. Without it the
    liveness check goes through the pid. Error messages quote the log files from
    ``log_offsets`` on, so lines of earlier runs are left out.

    Raises:
        KafkaStartError: the process exited, or ``deadline`` passed.
    """
    while True:
        if process is not None:
            exit_code = process.poll()
            if exit_code is not None:
                raise KafkaStartError(
                    f"Kafka broker pid {node.pid} exited with code {exit_code} "
                    f"during start-up. {_describe_logs(paths, log_offsets)}"
                )
        elif not _is_broker_process(node.pid, paths.server_properties):
            raise KafkaStartError(
                f"Kafka broker pid {node.pid} exited during start-up. "
                f"{_describe_logs(paths, log_offsets)}"
            )

        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            raise KafkaStartError(
                f"timed out waiting for a metadata response from Kafka broker pid "
                f"{node.pid} on {node.bootstrap_servers}. "
                f"{_describe_logs(paths, log_offsets)}"
            )

        probe_timeout_s = min(remaining_s, _PROBE_REQUEST_TIMEOUT_S)
        if await _is_serving_metadata(node.bootstrap_servers, probe_timeout_s):
            return
        await asyncio.sleep(_PROBE_INTERVAL_S)


async def _is_serving_metadata(bootstrap_servers: str, timeout_s: float) -> bool:
    """Return whether the broker serves metadata that lists this node."""
    host, _, port = bootstrap_servers.rpartition(":")

    # aiokafka logs an error for every refused bootstrap, so a plain TCP connect
    # first keeps the log quiet while the JVM is still loading.
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port)), timeout_s
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()

    # An open port is not enough: the broker accepts connections before it has
    # caught up with the metadata log and been unfenced, and a fenced broker is
    # missing from the broker list of metadata responses.
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="cartstream-stack-probe",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        await admin.start()
        cluster: dict[str, Any] = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()

    return any(broker["node_id"] == NODE_ID for broker in cluster["brokers"])


def _run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion from sync code, even inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)

    # asyncio.run() refuses to nest, so a caller already inside an event loop gets
    # a fresh loop in a worker thread. The caller's loop is blocked meanwhile.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, coroutine).result()


# --- processes and files -----------------------------------------------------


def _is_broker_process(pid: int, properties_path: Path) -> bool:
    """Return whether ``pid`` is a live broker started with ``properties_path``."""
    proc = Path("/proc")
    if not proc.is_dir():
        # Without /proc (macOS) only existence can be checked.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    try:
        cmdline = (proc / str(pid) / "cmdline").read_bytes()
        stat = (proc / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return False

    # The state letter follows the command name, which is in parentheses and may
    # itself contain spaces or parentheses.
    state = stat.rpartition(")")[2].split()[0] if ")" in stat else ""
    if state in ("Z", "X"):
        return False

    arguments = cmdline.split(b"\0")
    return b"kafka.Kafka" in arguments and os.fsencode(properties_path) in arguments


def _read_record(node_json: Path) -> _NodeRecord:
    try:
        raw: Any = json.loads(node_json.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _NodeRecord()
    except (OSError, ValueError) as exc:
        raise KafkaStartError(
            f"failed to read {node_json} ({exc}). Stop any broker still running "
            "from this state directory, then delete the file"
        ) from exc

    if not isinstance(raw, dict):
        raise KafkaStartError(f"invalid {node_json}: expected a JSON object")

    record = _NodeRecord()
    for key in _INT_KEYS:
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise KafkaStartError(f"invalid {node_json}: {key} must be an integer")
        record[key] = value
    for str_key in _STR_KEYS:
        text = raw.get(str_key)
        if text is None:
            continue
        if not isinstance(text, str):
            raise KafkaStartError(f"invalid {node_json}: {str_key} must be a string")
        record[str_key] = text

    return record


def _write_record(node_json: Path, record: _NodeRecord) -> None:
    _write_text_atomic(node_json, json.dumps(record, indent=2, sort_keys=True) + "\n")


def _log_offsets(paths: _KafkaPaths) -> dict[Path, int]:
    """Return the current size of each broker log file that exists."""
    offsets = {}
    for log_file in (paths.server_log, paths.console_log):
        with contextlib.suppress(FileNotFoundError):
            offsets[log_file] = log_file.stat().st_size
    return offsets


def _describe_logs(paths: _KafkaPaths, log_offsets: dict[Path, int]) -> str:
    parts = []
    for log_file in (paths.server_log, paths.console_log):
        try:
            content = log_file.read_bytes()
        except FileNotFoundError:
            parts.append(f"{log_file} does not exist")
            continue

        # A file smaller than its offset was rolled over, so all of it is new.
        offset = log_offsets.get(log_file, 0)
        if offset <= len(content):
            content = content[offset:]
        text = content.decode("utf-8", errors="replace")
        if not text.strip():
            parts.append(f"{log_file} has no new lines")
            continue

        # The tail of a failed start is often one long stack trace, and the first
        # ERROR line names the cause.
        first_error = next(
            (line for line in text.splitlines() if "] ERROR " in line), None
        )
        if first_error is not None:
            parts.append(f"first error in {log_file}:\n{first_error}")
        parts.append(f"last lines of {log_file}:\n{_tail(text)}")
    return "\n".join(parts)


def _decode(output: bytes | str | None) -> str:
    if output is None:
        return ""
    if isinstance(output, bytes):
        return output.decode("utf-8", errors="replace")
    return output
