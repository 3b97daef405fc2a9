"""JSON Schema documents generated from the contract's models (pure; no I/O)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from flagsched.schemas import CONTRACT_VERSION
from flagsched.schemas.events import EVENT_MODELS
from flagsched.schemas.headers import RecordHeaders
from flagsched.schemas.updates import FlagUpdate

_MODELS: dict[str, type[BaseModel]] = {
    **EVENT_MODELS,
    "record-headers": RecordHeaders,
    "flag-update": FlagUpdate,
}


def documents() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema (draft 2020-12) of every public model."""
    docs = {}
    for name, model in _MODELS.items():
        schema = model.model_json_schema(mode="serialization")
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"urn:flagsched:v{CONTRACT_VERSION}:{name}",
            **schema,
        }
        docs[f"{name}.v{CONTRACT_VERSION}.json"] = schema
    return docs


def render(doc: dict[str, Any]) -> str:
    """Stable text form: sorted keys, two-space indent, trailing newline."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"
