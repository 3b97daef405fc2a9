"""Record real dead-letter and lifecycle records for the schemas-alone test.

Run against real services (``flagsched dev up``, then ``eval "$(flagsched dev env)"``):

    python -m tests.support.record_contract_samples

It runs a dispatcher and a worker on a fresh database and topics: one schedule applies,
one names a missing flag (dead-lettered as permanent), one of a locked flag retries.
The records as Kafka delivered them (topic, key, value, headers; bytes base64) go to
``tests/data/contract/*.json``; ``tests/integration/test_schemas_alone.py`` decodes them
with nothing but the ``flagsched-schemas`` distribution installed.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from flagsched.devstack.endpoints import DATABASE_ENV, KAFKA_ENV
from tests.support.pipeline import (
    add_flag,
    add_schedule,
    connect,
    fresh_database,
    hold_flag_lock,
    make_template,
    read_topic,
    running_dispatcher,
    running_worker,
    setup_topics,
    test_settings,
)

OUT = Path(__file__).resolve().parents[1] / "data" / "contract"


def _record(rec: Any) -> dict[str, Any]:
    def b64(data: bytes | None) -> str | None:
        return None if data is None else base64.b64encode(data).decode()

    return {
        "topic": rec.topic,
        "key": b64(rec.key),
        "value": b64(rec.value),
        "headers": [[k, b64(v)] for k, v in rec.headers],
    }


def main() -> None:
    """Produce the samples from a real run and write them."""
    bootstrap, dsn = os.environ[KAFKA_ENV], os.environ[DATABASE_ENV]
    make_template(dsn)
    settings = test_settings(bootstrap, fresh_database(dsn), max_retries=1)
    layout = setup_topics(settings)
    with connect(settings.require_database_url()) as db:
        add_flag(db, "promo.holiday")
        add_flag(db, "promo.locked")
        add_schedule(db, "promo.holiday", {"enabled": True})
        add_schedule(db, "missing.flag", {"enabled": True})
        _, release = hold_flag_lock(settings.require_database_url(), "promo.locked")
        add_schedule(db, "promo.locked", {"enabled": True}, priority="critical")
        try:
            with running_worker(settings), running_dispatcher(settings):
                dead = read_topic(settings, layout.dead_letter, expect=2, timeout_s=60)
                lifecycle = read_topic(settings, layout.lifecycle, expect=4, timeout_s=60)
        finally:
            release()
    OUT.mkdir(parents=True, exist_ok=True)
    for name, records in (("dead-letter", dead), ("lifecycle", lifecycle)):
        path = OUT / f"{name}.json"
        path.write_text(json.dumps([_record(r) for r in records], indent=2) + "\n")
        print(f"{path}: {len(records)} records")


if __name__ == "__main__":
    main()
