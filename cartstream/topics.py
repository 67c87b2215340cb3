"""Creates the project's Kafka topics with explicit partition counts."""

from __future__ import annotations

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from cartstream.config import Settings
from cartstream.errors import CartstreamError

logger = structlog.get_logger(__name__)

# The event log is the source of truth that replay rebuilds from, so it is
# kept forever; the other topics keep the broker's default retention.
KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1"}


class TopicCreationError(CartstreamError):
    """Kafka refused to create one of the project's topics."""


def topic_plan(settings: Settings) -> list[NewTopic]:
    """Return every topic the project needs, with partitions and settings."""
    topics = settings.topics
    return [
        NewTopic(topics.events, settings.partitions, 1, topic_configs=KEEP_FOREVER),
        NewTopic(topics.segment_changes, settings.partitions, 1),
        NewTopic(topics.quarantine, 1, 1, topic_configs=KEEP_FOREVER),
        NewTopic(topics.dead_letter, 1, 1, topic_configs=KEEP_FOREVER),
    ]


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topic_plan(settings) if t.name not in existing]
        if missing:
            response = await admin.create_topics(missing)
            # The broker reports failures per topic in the response rather than
            # as an exception. A topic that another process created between the
            # listing and now is fine.
            for name, code, *rest in response.topic_errors:
                error = for_code(code)
                if code != 0 and error is not TopicAlreadyExistsError:
                    message = rest[0] if rest and rest[0] else error.__name__
                    raise TopicCreationError(f"creating topic {name} failed: {message}")
    finally:
        await admin.close()

    names = [topic.name for topic in missing]
    if names:
        logger.info("topics_created", topics=names)
    return names
