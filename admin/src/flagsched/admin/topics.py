"""Creating the topic layout idempotently (``flagsched topics create``)."""

from __future__ import annotations

import logging

from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from flagsched.runtime.clients import make_admin
from flagsched.runtime.settings import Settings
from flagsched.schemas.topics import TopicLayout

log = logging.getLogger(__name__)


def create_topics(settings: Settings, layout: TopicLayout) -> list[str]:
    """Create every topic of ``layout`` that is missing; return the names created."""
    admin = make_admin(settings)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=settings.replication_factor,
                topic_configs=spec.configs,
            )
            for spec in layout.specs()
            if spec.name not in existing
        ]
        if missing:
            try:
                admin.create_topics(missing, timeout_ms=30000)
            except TopicAlreadyExistsError:
                log.info("a concurrent creator made some topics first")
        for topic in missing:
            log.info("created topic %s (%d partitions)", topic.name, topic.num_partitions)
        return [t.name for t in missing]
    finally:
        admin.close()
