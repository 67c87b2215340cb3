"""Tests of the local single-node Kafka broker in cartstream.stack.

The integration tests start real brokers. The jars are cached under
$CARTSTREAM_STATE_DIR/cache, or .cartstream/cache in the repository, so only the
first run downloads them.
"""

import asyncio
import json
import os
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord, RecordMetadata

from cartstream.stack.kafka import (
    KAFKA_VERSION,
    KafkaStartError,
    ensure_kafka_jars,
    running_kafka,
    start_kafka,
    stop_kafka,
)
from cartstream.stack.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
CONSUME_TIMEOUT_S = 30.0


def _jar_cache_dir() -> Path:
    state_dir = os.environ.get("CARTSTREAM_STATE_DIR")
    base = Path(state_dir) if state_dir else REPO_ROOT / ".cartstream"
    return base / "cache"


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def kafka_lib_dir() -> Path:
    return ensure_kafka_jars(_jar_cache_dir())


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    # Stops a broker that a failed test left running.
    stop_kafka(tmp_path)


async def _create_topic(bootstrap_servers: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
        for topic_error in response.topic_errors:
            assert topic_error[1] == 0, f"create_topics failed: {topic_error}"
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()

    assert len(described[0]["partitions"]) == partitions


async def _produce(
    bootstrap_servers: str, topic: str, key: bytes, value: bytes
) -> RecordMetadata:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True
    )
    await producer.start()
    try:
        metadata: RecordMetadata = await producer.send_and_wait(
            topic, value=value, key=key
        )
    finally:
        await producer.stop()
    return metadata


async def _consume_one(
    bootstrap_servers: str, topic: str
) -> ConsumerRecord[bytes, bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        record: ConsumerRecord[bytes, bytes] = await asyncio.wait_for(
            consumer.getone(), CONSUME_TIMEOUT_S
        )
        # A commit goes through the group coordinator and the offsets topic,
        # which a single node can only create with replication factor 1.
        await consumer.commit()
    finally:
        await consumer.stop()
    return record


def test_free_port_returns_bindable_port() -> None:
    port = free_port()

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))
    assert 0 < port < 65536


def test_ensure_kafka_jars_raises_without_mvn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))

    with pytest.raises(KafkaStartError, match="mvn not found"):
        ensure_kafka_jars(tmp_path / "cache")

    assert not (tmp_path / "cache" / f"kafka-{KAFKA_VERSION}" / "lib").exists()


def _install_fake_mvn(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(f"#!/bin/sh\n{script}\n")
    mvn.chmod(0o755)


def test_ensure_kafka_jars_reports_mvn_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fake_mvn(
        tmp_path / "bin", "echo '[ERROR] Could not resolve dependencies'; exit 3"
    )
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    with pytest.raises(KafkaStartError) as raised:
        ensure_kafka_jars(tmp_path / "cache")

    message = str(raised.value)
    assert "exit code 3" in message
    assert "[ERROR] Could not resolve dependencies" in message
    assert not (
        tmp_path / "cache" / f"kafka-{KAFKA_VERSION}" / "jars.complete"
    ).exists()


def test_ensure_kafka_jars_reports_missing_broker_jar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install_fake_mvn(tmp_path / "bin", "exit 0")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))

    with pytest.raises(
        KafkaStartError, match=re.escape(f"kafka_2.13-{KAFKA_VERSION}.jar is missing")
    ):
        ensure_kafka_jars(tmp_path / "cache")


@pytest.mark.integration
def test_ensure_kafka_jars_redoes_partial_download(tmp_path: Path) -> None:
    """A lib dir without the completion marker is deleted and downloaded again."""
    lib_dir = tmp_path / f"kafka-{KAFKA_VERSION}" / "lib"
    lib_dir.mkdir(parents=True)
    (lib_dir / "partial.jar").write_bytes(b"")

    returned = ensure_kafka_jars(tmp_path)

    assert returned == lib_dir
    assert not (lib_dir / "partial.jar").exists()
    assert (lib_dir / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file()
    assert any(lib_dir.glob("log4j-core-*.jar"))
    assert any(lib_dir.glob("log4j-slf4j-impl-*.jar"))


@pytest.mark.integration
async def test_start_kafka_round_trips_record(
    state_dir: Path, kafka_lib_dir: Path
) -> None:
    node = await asyncio.to_thread(start_kafka, state_dir, kafka_lib_dir)

    assert node.bootstrap_servers.startswith("127.0.0.1:")
    assert running_kafka(state_dir) == node
    assert node.log_path == state_dir / "kafka" / "logs" / "server.log"
    assert node.log_path.stat().st_size > 0

    # A second start on a running broker returns it instead of starting another.
    # The direct call, inside this test's event loop, runs the readiness probe
    # on a worker thread's loop.
    second = start_kafka(state_dir, kafka_lib_dir)
    assert second == node

    topic = f"round-trip-{uuid.uuid4().hex[:8]}"
    await _create_topic(node.bootstrap_servers, topic, partitions=2)
    sent = await _produce(node.bootstrap_servers, topic, b"customer-1", b"hello")
    received = await _consume_one(node.bootstrap_servers, topic)

    assert received.key == b"customer-1"
    assert received.value == b"hello"
    assert received.partition == sent.partition
    assert received.offset == sent.offset

    was_running = await asyncio.to_thread(stop_kafka, state_dir)

    assert was_running is True
    assert not _pid_exists(node.pid)
    assert running_kafka(state_dir) is None
    node_json = json.loads((state_dir / "kafka" / "node.json").read_text())
    assert "pid" not in node_json
    assert stop_kafka(state_dir) is False


@pytest.mark.integration
async def test_restart_keeps_address_and_records(
    state_dir: Path, kafka_lib_dir: Path
) -> None:
    first = await asyncio.to_thread(start_kafka, state_dir, kafka_lib_dir)
    topic = f"restart-{uuid.uuid4().hex[:8]}"
    await _create_topic(first.bootstrap_servers, topic, partitions=2)
    sent = await _produce(first.bootstrap_servers, topic, b"customer-2", b"kept")
    await asyncio.to_thread(stop_kafka, state_dir)

    second = await asyncio.to_thread(start_kafka, state_dir, kafka_lib_dir)
    received = await _consume_one(second.bootstrap_servers, topic)

    assert second.bootstrap_servers == first.bootstrap_servers
    assert second.pid != first.pid
    assert received.value == b"kept"
    assert received.offset == sent.offset


@pytest.mark.integration
def test_start_kafka_reports_stored_port_in_use(
    state_dir: Path, kafka_lib_dir: Path
) -> None:
    node = start_kafka(state_dir, kafka_lib_dir)
    stop_kafka(state_dir)
    port = int(node.bootstrap_servers.rpartition(":")[2])

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        with pytest.raises(KafkaStartError, match=f"127.0.0.1:{port}.*in use"):
            start_kafka(state_dir, kafka_lib_dir)

    assert running_kafka(state_dir) is None


@pytest.mark.integration
def test_start_kafka_reports_broker_exit(state_dir: Path, kafka_lib_dir: Path) -> None:
    """A broker that cannot bind its listener exits, and the error shows its log."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]

        with pytest.raises(KafkaStartError) as raised:
            start_kafka(state_dir, kafka_lib_dir, port=port, timeout_s=60.0)

    message = str(raised.value)
    assert "exited with code" in message
    assert "server.log" in message
    assert "Address already in use" in message
    assert running_kafka(state_dir) is None
