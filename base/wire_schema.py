"""The Kafka record format as JSON Schema, for producers that are not meterline's own.

The schema is made from ``UsageEvent`` itself, so it cannot drift from what the worker
decodes; the repository keeps a copy in ``schemas/usage-record.schema.json`` (a test
holds the two equal). Write it again with

    python -m base.wire_schema > schemas/usage-record.schema.json
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from base.events import MAX_RECORD_EVENTS, UsageEvent

_FIELDS = {
    "id": "Unique per (tenant, source, meter): an event sent again with the same id counts "
    "once within the dedupe window.",
    "tenant": "The tenant the subscription belongs to.",
    "subscription": "The subscription billed for this usage.",
    "meter": "A meter of the price book (api_calls, tokens, ...).",
    "quantity": "A non-negative integer in the meter's declared scale (a meter with scale 3 "
    "counts thousandths), so that no float touches a billable number. Written without a "
    "fraction or exponent: 1500, not 1500.0.",
    "timestamp": "When the usage happened, RFC 3339 with an offset (2026-12-01T12:00:00Z). "
    "Older than the accepted age, or further ahead than the allowed clock skew, and the "
    "event goes to the dead-letter topic with its reason.",
    "source": "Who sent it; part of the event's identity.",
    "properties": "Dimensions a meter may group by or count distinct values of (region, "
    "model, user). Strings, integers or booleans.",
}

DESCRIPTION = (
    "One Kafka record on meterline's events topic: one usage event (a JSON object) or a "
    "batch of them (a JSON array of up to 65,536 objects). Key each record by "
    "'<tenant>/<subscription>' (UTF-8). On the partition Kafka's Java client would choose for "
    "that key (murmur2 of the key, positive, modulo the partition count: the default "
    "partitioner of the Java client and of KafkaJS; librdkafka's 'murmur2_random'; "
    "kafka-go's Murmur2Balancer) an event is billed where it lands; on any other, the "
    "worker first forwards it there, which costs a second trip through Kafka. The value "
    "is UTF-8 JSON; unknown fields are refused."
)


def record_schema() -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(UsageEvent | list[UsageEvent])
    event = schema["$defs"]["UsageEvent"]
    for name, text in _FIELDS.items():
        event["properties"][name]["description"] = text
    event["properties"]["quantity"]["minimum"] = 0
    event["description"] = "One usage event."
    one, many = (
        next(s for s in schema["anyOf"] if "$ref" in s),
        next(s for s in schema["anyOf"] if s.get("type") == "array"),
    )
    many.update({"minItems": 1, "maxItems": MAX_RECORD_EVENTS})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://meterline.dev/schemas/usage-record.schema.json",
        "title": "meterline usage record",
        "description": DESCRIPTION,
        "anyOf": [one, many],
        "$defs": schema["$defs"],
    }


def rendered() -> str:
    return json.dumps(record_schema(), indent=2) + "\n"


if __name__ == "__main__":
    print(rendered(), end="")
