"""Download of the Kafka broker jars from Maven Central, once per cache directory."""

import re
import shutil
import subprocess
import time
from pathlib import Path

import structlog

from cartstream.stack.kafka_common import (
    KafkaStartError,
    _file_lock,
    _read_resource,
    _tail,
    _write_text_atomic,
)

KAFKA_VERSION = "4.1.2"

_POM_RESOURCE = "kafka-pom.xml"
_JARS_MARKER = "jars.complete"
_VERSION_PATTERN = re.compile(r"[0-9A-Za-z][0-9A-Za-z.\-]*")

log = structlog.get_logger(__name__)


def ensure_kafka_jars(cache_dir: Path, version: str = KAFKA_VERSION) -> Path:
    """Download the jars of Kafka broker ``version`` into ``cache_dir`` once.

    Runs ``mvn dependency:copy-dependencies`` on a small POM (kafka_2.13 plus a
    log4j 2 backend) and writes a marker file last, so a later call returns at
    once and an interrupted download is deleted and redone. Concurrent callers
    on the same cache directory wait for each other through a file lock. Maven
    keeps its own copy of the artifacts in its local repository (~/.m2 unless
    configured otherwise).

    Returns:
        The directory ``cache_dir/kafka-<version>/lib`` that contains the jars.

    Raises:
        ValueError: ``version`` is not a plain version string.
        KafkaStartError: mvn is missing or failed, or the broker jar is missing
            from its output.
    """
    if _VERSION_PATTERN.fullmatch(version) is None:
        raise ValueError(f"invalid Kafka version {version!r}: expected e.g. 4.1.2")

    version_dir = cache_dir / f"kafka-{version}"
    lib_dir = version_dir / "lib"
    marker = version_dir / _JARS_MARKER
    if marker.is_file():
        return lib_dir

    version_dir.mkdir(parents=True, exist_ok=True)
    with _file_lock(version_dir / ".lock"):
        # Another process may have finished the download while this one waited.
        if marker.is_file():
            return lib_dir

        # A lib dir without the marker is left over from an interrupted download.
        shutil.rmtree(lib_dir, ignore_errors=True)
        pom_path = version_dir / "pom.xml"
        pom_path.write_bytes(_read_resource(_POM_RESOURCE))

        log.info("kafka_jars_download_started", version=version, lib_dir=str(lib_dir))
        started = time.monotonic()
        _run_mvn_copy_dependencies(pom_path, lib_dir, version)

        broker_jar = lib_dir / f"kafka_2.13-{version}.jar"
        if not broker_jar.is_file():
            raise KafkaStartError(
                f"mvn finished but {broker_jar} is missing. Check that "
                f"org.apache.kafka:kafka_2.13:{version} exists on Maven Central"
            )

        jars = sorted(lib_dir.glob("*.jar"))
        _write_text_atomic(marker, "".join(f"{jar.name}\n" for jar in jars))
        log.info(
            "kafka_jars_download_finished",
            version=version,
            jar_count=len(jars),
            size_bytes=sum(jar.stat().st_size for jar in jars),
            duration_s=round(time.monotonic() - started, 1),
        )

    return lib_dir


def _run_mvn_copy_dependencies(pom_path: Path, lib_dir: Path, version: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaStartError(
            "mvn not found on PATH: install Apache Maven 3.8 or newer to download "
            "the Kafka jars"
        )

    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom_path),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={lib_dir}",
        f"-Dkafka.version={version}",
    ]
    completed = subprocess.run(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=False,
    )
    if completed.returncode != 0:
        output = completed.stdout.decode("utf-8", errors="replace")
        raise KafkaStartError(
            f"mvn dependency:copy-dependencies failed with exit code "
            f"{completed.returncode} for Kafka {version} ({pom_path}). Last lines "
            f"of its output:\n{_tail(output)}"
        )
