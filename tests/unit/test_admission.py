"""What the gateway accepts and how it translates it: every refusal reason, exact decimal
quantities, one CloudEvent feeding several meters, and the tenant rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from base.events import EventWindow
from ingest.admission import Admission, Limits, OtherTenantError
from ingest.wire import BodyError, Format, Item, split
from rating.loading import parse_price_book

NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)
BOOK = parse_price_book(
    {
        "meters": [
            {"id": "api_calls", "aggregation": "count", "event_type": "request"},
            {"id": "input_tokens", "event_type": "llm.call", "value": "input",
             "group_by": ["model"]},
            {"id": "output_tokens", "event_type": "llm.call", "value": "output",
             "group_by": ["model"]},
            {"id": "gb_hours", "scale": 3},
            {"id": "active_users", "aggregation": "unique_count", "unique": "user",
             "event_type": "login"},
        ],
        "plans": [
            {"id": "p", "currency": "USD", "charges": [
                {"meter": m, "model": "per_unit", "unit_price": "0.01"}
                for m in ("api_calls", "input_tokens", "output_tokens", "gb_hours", "active_users")
            ]},
        ],
    },
    "test book",
)  # fmt: skip
WINDOW = EventWindow(timedelta(days=35), timedelta(minutes=5), clock=lambda: NOW)
ADMISSION = Admission(BOOK, WINDOW, Limits(max_event_bytes=1024))


def cloud(**changes: object) -> dict[str, object]:
    event: dict[str, object] = {
        "specversion": "1.0", "id": "e1", "source": "svc", "type": "gb_hours",
        "subject": "sub-1", "time": "2026-11-20T11:00:00Z", "data": {"quantity": "1.5"},
    }  # fmt: skip
    event.update(changes)
    return event


def items(*events: object) -> list[Item]:
    return [Item(i, msgspec.json.encode(e)) for i, e in enumerate(events)]


def reasons(admitted: object) -> list[str]:
    return [r.reason for r in admitted.refused]  # type: ignore[attr-defined]


def test_a_cloud_event_becomes_a_usage_event_in_the_meters_scale() -> None:
    admitted = ADMISSION.cloud_events("acme", items(cloud()))
    [event] = admitted.events
    assert (event.tenant, event.subscription, event.meter, event.quantity, event.source) == (
        "acme", "sub-1", "gb_hours", 1500, "svc"
    )  # fmt: skip
    assert event.timestamp == datetime(2026, 11, 20, 11, tzinfo=UTC)
    assert admitted.refused == []


def test_one_cloud_event_feeds_every_meter_of_its_type_with_their_groups() -> None:
    call = cloud(type="llm.call", data={"input": 120, "output": 80, "model": "large", "x": 1.5})
    events = ADMISSION.cloud_events("acme", items(call)).events
    assert {(e.meter, e.quantity) for e in events} == {("input_tokens", 120), ("output_tokens", 80)}
    assert all(e.properties == {"model": "large"} for e in events)


def test_times_are_kept_in_utc_and_trailing_zeros_do_not_count_as_precision() -> None:
    event = cloud(time="2026-11-20T20:00:00+09:00", data={"quantity": "2." + "0" * 70})
    [usage] = ADMISSION.cloud_events("acme", items(event)).events
    assert usage.timestamp.utcoffset() == timedelta(0)
    assert usage.timestamp == datetime(2026, 11, 20, 11, tzinfo=UTC)
    assert usage.quantity == 2000


def test_count_meters_need_no_value_and_a_missing_time_is_now() -> None:
    [event] = ADMISSION.cloud_events(
        "acme", items(cloud(type="request", data=None, time=None))
    ).events
    assert (event.meter, event.quantity, event.timestamp) == ("api_calls", 1, NOW)


def test_a_unique_count_meter_keeps_the_property_it_counts() -> None:
    login = cloud(type="login", data={"user": "ann", "ip": "10.0.0.1"})
    [event] = ADMISSION.cloud_events("acme", items(login)).events
    assert (event.meter, event.quantity, event.properties) == ("active_users", 1, {"user": "ann"})
    missing = ADMISSION.cloud_events("acme", items(cloud(type="login", data={})))
    assert reasons(missing) == ["missing_property"]
    plain = {"id": "p", "subscription": "s", "meter": "active_users", "quantity": 1}
    assert reasons(ADMISSION.plain_events("acme", items(plain))) == ["missing_property"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"specversion": "0.3"}, "unsupported_specversion"),
        ({"subject": None}, "missing_subject"),
        ({"type": "gpu_hours"}, "unknown_event_type"),
        ({"data": {}}, "missing_value"),
        ({"data": {"quantity": True}}, "invalid_value"),
        ({"data": {"quantity": "lots"}}, "invalid_value"),
        ({"data": {"quantity": [1]}}, "invalid_value"),
        ({"data": {"quantity": "NaN"}}, "invalid_value"),
        ({"data": {"quantity": "-1"}}, "negative_quantity"),
        ({"data": {"quantity": "0.0001"}}, "too_precise"),
        ({"data": {"quantity": "1." + "0" * 70 + "1"}}, "too_precise"),
        ({"data": {"quantity": "1e30"}}, "quantity_too_large"),
        ({"data": {"quantity": "9223372036854775.808"}}, "quantity_too_large"),
        ({"time": "2026-09-01T00:00:00Z"}, "too_old"),
        ({"time": "2026-11-20T13:00:00Z"}, "in_future"),
        ({"time": "2026-11-20T11:00:00"}, "invalid_event"),
        ({"id": 7}, "invalid_event"),
        ({"id": ""}, "invalid_event"),
        ({"data": "text"}, "invalid_event"),
        ({"type": "llm.call", "data": {"input": 1, "output": 1, "model": {"a": 1}}},
         "invalid_property"),
        ({"source": "x" * 2000}, "event_too_large"),
    ],
)  # fmt: skip
def test_each_bad_cloud_event_is_refused_with_its_reason(
    changes: dict[str, object], reason: str
) -> None:
    admitted = ADMISSION.cloud_events("acme", items(cloud(id="good"), cloud(**changes)))
    assert [e.id for e in admitted.events] == ["good"]
    [refusal] = admitted.refused
    assert (refusal.index, refusal.reason) == (1, reason)
    assert refusal.detail


def test_a_refused_event_is_named_by_its_id_when_it_has_one() -> None:
    [refusal] = ADMISSION.cloud_events("acme", items(cloud(id="bad", type="nope"))).refused
    assert refusal.id == "bad"


def test_plain_events_name_the_meter_and_may_omit_the_tenant() -> None:
    plain = {"id": "p1", "subscription": "s", "meter": "gb_hours", "quantity": 2.25,
             "properties": {"region": "eu"}}  # fmt: skip
    [event] = ADMISSION.plain_events("acme", items(plain, {**plain, "tenant": "acme"})).events[:1]
    assert (event.tenant, event.quantity, event.properties) == ("acme", 2250, {"region": "eu"})
    bad = ADMISSION.plain_events("acme", items({**plain, "meter": "nope"}, {**plain, "x": 1}))
    assert reasons(bad) == ["unknown_meter", "invalid_event"]


@pytest.mark.parametrize("form", ["cloud", "plain"])
def test_an_event_of_another_tenant_refuses_the_whole_request(form: str) -> None:
    if form == "cloud":
        batch = items(cloud(), cloud(tenant="globex"))
        admit = ADMISSION.cloud_events
    else:
        batch = items({"id": "p", "subscription": "s", "meter": "gb_hours", "quantity": 1,
                       "tenant": "globex"})  # fmt: skip
        admit = ADMISSION.plain_events
    with pytest.raises(OtherTenantError, match="globex"):
        admit("acme", batch)


@given(
    st.decimals(min_value=0, max_value=10**12, places=3, allow_nan=False, allow_infinity=False),
    st.sampled_from(["string", "number"]),
)
def test_decimal_quantities_are_read_exactly(value: Decimal, spelling: str) -> None:
    literal = str(value) if spelling == "string" else msgspec.Raw(str(value).encode())
    body = msgspec.json.encode(cloud(data={"quantity": literal}))
    [event] = ADMISSION.cloud_events("acme", split(body, Format.CLOUD_EVENT)).events
    assert event.quantity == int(value * 1000)


def test_bodies_split_into_items_or_fail_as_a_whole() -> None:
    assert len(split(b'[{"a": 1}, 2, "x"]', Format.CLOUD_EVENTS_BATCH)) == 3
    assert len(split(b'{"a": 1}', Format.PLAIN)) == 1
    assert len(split(b'[{"a": 1}]', Format.PLAIN)) == 1
    for body, form in [
        (b"{", Format.PLAIN),
        (b'{"a": 1}', Format.CLOUD_EVENTS_BATCH),
        (b'[{"a": 1}]', Format.CLOUD_EVENT),
        (b"", Format.PLAIN),
        (b"[1, ", Format.CLOUD_EVENTS_BATCH),
    ]:
        with pytest.raises(BodyError):
            split(body, form)
    assert Format.of("application/cloudevents+json; charset=utf-8") is Format.CLOUD_EVENT
    assert Format.of("text/plain") is None
