"""The published record schema is the one the worker decodes with, and says yes and no
where the worker does."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import jsonschema_rs
import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from base.events import MAX_RECORD_EVENTS, Undecodable, UsageEvent, decode_record, encode_batch
from base.wire_schema import record_schema, rendered

KEPT_COPY = Path(__file__).parents[2] / "schemas" / "usage-record.schema.json"
VALIDATOR = jsonschema_rs.Draft202012Validator(record_schema(), validate_formats=True)


def test_the_kept_copy_is_the_schema_the_model_gives() -> None:
    assert json.loads(KEPT_COPY.read_text()) == json.loads(rendered()), (
        "regenerate it: python -m base.wire_schema > schemas/usage-record.schema.json"
    )


def usage(number: int, **changes: object) -> dict[str, object]:
    moment = datetime(2026, 12, 1, 12, tzinfo=UTC)
    event = UsageEvent(f"e{number}", "acme", "sub-1", "api_calls", 3, moment,
                       properties={"region": "eu"})  # fmt: skip
    return {**msgspec.to_builtins(event), **changes}


def test_records_meterline_writes_are_valid_one_event_or_a_batch() -> None:
    events = [UsageEvent(f"e{n}", "acme", "sub-1", "api_calls", n,
                         datetime(2026, 12, 1, tzinfo=UTC)) for n in range(3)]  # fmt: skip
    assert VALIDATOR.is_valid(json.loads(encode_batch(events)))
    assert VALIDATOR.is_valid(json.loads(encode_batch(events[:1]))[0])


def test_what_the_worker_refuses_the_schema_refuses() -> None:
    for refused in (
        [],  # an empty record
        usage(1, unknown_field=1),
        usage(1, quantity=1.5),
        usage(1, quantity=-1),  # the worker dead-letters it as negative_quantity
        usage(1, timestamp="yesterday"),
        {k: v for k, v in usage(1).items() if k != "meter"},
        usage(1, properties={"nested": {"a": 1}}),
    ):
        assert not VALIDATOR.is_valid(refused), refused
    assert not VALIDATOR.is_valid([usage(n) for n in range(MAX_RECORD_EVENTS + 1)])


# JSON Schema counts 1.0 as an integer and the decoder does not (the schema's description
# says to write integers without a fraction): integral floats are left out here.
values = st.one_of(st.integers(-5, 5), st.floats(allow_nan=False).filter(lambda f: f % 1 != 0),
                   st.text(max_size=3), st.booleans(), st.none(), st.just({"a": 1}))  # fmt: skip
fields = st.sampled_from(["id", "tenant", "subscription", "meter", "quantity", "timestamp",
                          "source", "properties", "extra"])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(changes=st.dictionaries(fields, values, max_size=3), dropped=st.sets(fields, max_size=2))
def test_the_schema_and_the_decoder_agree_on_random_events(
    changes: dict[str, object], dropped: set[str]
) -> None:
    """Valid by the schema exactly when the worker decodes it (a negative quantity decodes
    and is then refused by a rule, which the schema states as a minimum)."""
    candidate = {k: v for k, v in usage(7, **changes).items() if k not in dropped}
    decoded = decode_record(json.dumps(candidate).encode())
    decodes = not isinstance(decoded[0], Undecodable)
    negative = decodes and isinstance(decoded[0], UsageEvent) and decoded[0].quantity < 0
    assert VALIDATOR.is_valid(candidate) == (decodes and not negative), candidate
