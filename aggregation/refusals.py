"""Every reason the worker refuses an event, in one table: what each means, and (for the
rules about an event) the order they are checked in, which is the order of ``EVENT_RULES``
and of the checks in ``BatchProcessor.refusal``. A refused event is dead-lettered with its
reason and a detail for people, and stored in ``rejected_events``; the reasons are the
``reason`` label of ``meterline_events_rejected_total``.

An event on another partition than its subscription's is not refused: it is forwarded to
that partition (``model.Forwarded``) and judged there. Only a forwarded copy that still
lands elsewhere is refused (``WRONG_PARTITION``): workers that disagree on the topic's
partition count would otherwise pass it back and forth for ever."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rule:
    reason: str  # machine-readable, stable: dashboards and replay tools key on it
    meaning: str


# Rules about a record as a whole, or an item that is no event at all.
EMPTY_RECORD = Rule("empty_record", "the record holds no event")
RECORD_TOO_LARGE = Rule("record_too_large", "the record holds more events than a record may")
MALFORMED = Rule("malformed", "the item does not decode as a usage event")

# Rules about one event, checked in this order; the first that applies is its reason.
WRONG_PARTITION = Rule("wrong_partition", "forwarded to its subscription's partition once "
                       "already, and still not on it: the workers disagree on the partition "
                       "count")  # fmt: skip
UNKNOWN_SUBSCRIPTION = Rule("unknown_subscription", "no such subscription for the tenant")
SUBSCRIPTION_ENDED = Rule("subscription_ended", "stamped at or after its subscription's end")
PLAN_NOT_IN_FORCE = Rule("plan_not_in_force", "its plan has no version in force on its day")
UNPRICED_METER = Rule("unpriced_meter", "its meter is not priced by the plan of its day")
NEGATIVE_QUANTITY = Rule("negative_quantity", "its quantity is below zero")
TOO_OLD = Rule("too_old", "stamped earlier than the accepted age of events")
IN_FUTURE = Rule("in_future", "stamped further ahead of meterline's clock than the skew allowed")
MISSING_PROPERTY = Rule("missing_property", "a unique count's event lacks the property counted")
# Checked last, by the state, as the event is counted: the amount must stay rateable, and
# a gauge weighed over time takes its reports in time order.
AMOUNT_OVERFLOW = Rule("amount_overflow", "its total would pass what 64-bit nano-units can bill")
OUT_OF_ORDER = Rule("out_of_order", "a weighted gauge's report older than one already counted")

RECORD_RULES = (EMPTY_RECORD, RECORD_TOO_LARGE, MALFORMED)
EVENT_RULES = (WRONG_PARTITION, UNKNOWN_SUBSCRIPTION, SUBSCRIPTION_ENDED, PLAN_NOT_IN_FORCE,
               UNPRICED_METER, NEGATIVE_QUANTITY, TOO_OLD, IN_FUTURE, MISSING_PROPERTY,
               AMOUNT_OVERFLOW, OUT_OF_ORDER)  # fmt: skip
RULES = RECORD_RULES + EVENT_RULES
REASONS = {rule.reason: rule for rule in RULES}
