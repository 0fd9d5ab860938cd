"""The gateway's OpenAPI 3.1 document, built from the same msgspec types that decode and
encode the requests, so the document cannot drift from the code. A copy is kept in the
repository (``ingest/openapi.json``); a test fails when it is stale."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import msgspec

from aggregation.entitlements import EntitlementsAnswer
from aggregation.handlers import AlertAsk, GrantAsk, PaymentReport, WebhookAsk
from aggregation.usage import CurrentUsage
from base.problems import ProblemDocument
from ingest.correction_wire import BackfillBody, RetractBody
from ingest.lago import LagoEvent
from ingest.wire import Accepted, CloudEvent, PartlyRefused, PlainEvent
from subscriptions.api import (
    AddOnChange,
    Cancellation,
    CouponChange,
    CustomerList,
    FeatureGrant,
    FeatureRevocation,
    Imported,
    PlanChange,
    PriceRevision,
    SubscriptionDetail,
    SubscriptionList,
)
from subscriptions.imports import NewCustomer, NewSubscription

KEPT_COPY = Path(__file__).with_name("openapi.json")

_REF = "#/components/schemas/{name}"
_PROBLEM = "ProblemDocument"


def _problem(description: str, *headers: str) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": _REF.format(name="ProblemDocument")}}
        },
    }
    if headers:
        response["headers"] = {name: {"schema": {"type": "string"}} for name in headers}
    return response


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": _REF.format(name=name)}}}


def _batch(name: str) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": _REF.format(name=name)}, "minItems": 1}


_ADMIN = "needs an admin key (meterline keys create --scope admin)"
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
}
_SUBSCRIPTION = {"name": "subscription", "in": "path", "required": True,
                 "schema": {"type": "string"}}  # fmt: skip


def _admin_problems(*extra: tuple[str, str]) -> dict[str, Any]:
    return {
        **{status: _problem(description) for status, description in extra},
        "401": _problem("No valid API key", "WWW-Authenticate"),
        "403": _problem("The key is not an admin key"),
        "503": _problem("The store did not answer", "Retry-After"),
    }


def _change(operation: str, summary: str, body: str | None) -> dict[str, Any]:
    """One of the POSTs that change a subscription."""
    request = {"requestBody": {"required": True, "content": _json(body)}} if body else {}
    return {
        "post": {
            "operationId": operation,
            "summary": f"{summary}; {_ADMIN}",
            "parameters": [_SUBSCRIPTION],
            **request,
            "responses": {
                "200": {
                    "description": "Done: the subscription now",
                    "content": _json("SubscriptionDetail"),
                },
                **_admin_problems(
                    ("400", "The body is not the shape described"),
                    ("404", "No such subscription for the key's tenant"),
                    ("422", "Refused, with the reason; nothing was changed"),
                ),
            },
        }
    }


def _list_and_import(noun: str, listed: str, item: str, imported: str) -> dict[str, Any]:
    """GET lists the tenant's ``noun`` (``listed``); POST imports one ``item`` or an array."""
    title = noun.capitalize()
    return {
        "get": {
            "operationId": f"list{title}",
            "summary": f"The key's tenant's {noun}; {_ADMIN}",
            "parameters": [_LIMIT],
            "responses": {
                "200": {"description": "In id order", "content": _json(listed)},
                **_admin_problems(("400", "The limit is not a number from 1 to 10000")),
            },
        },
        "post": {
            "operationId": f"import{title}",
            "summary": f"Import one or an array; {_ADMIN}",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"oneOf": [{"$ref": _REF.format(name=item)}, _batch(item)]}
                    }
                },
            },
            "responses": {
                "201": {"description": "Imported, every one", "content": _json(imported)},
                **_admin_problems(
                    ("400", "The body is not the shape described"),
                    ("413", f"More {noun} than one request may hold"),
                    ("422", "Nothing imported; every problem is named"),
                ),
            },
        },
    }


def _subscription_paths() -> dict[str, Any]:
    return {
        "/v1/subscriptions": _list_and_import(
            "subscriptions", "SubscriptionList", "NewSubscription", "Imported"
        ),
        "/v1/subscriptions/{subscription}": {
            "get": {
                "operationId": "showSubscription",
                "summary": f"A subscription, its plans and its history; {_ADMIN}",
                "parameters": [_SUBSCRIPTION],
                "responses": {
                    "200": {
                        "description": "The subscription",
                        "content": _json("SubscriptionDetail"),
                    },
                    **_admin_problems(("404", "No such subscription for the key's tenant")),
                },
            }
        },
        "/v1/subscriptions/{subscription}/change": _change(
            "changePlan", "Move to another plan from a day on", "PlanChange"
        ),
        "/v1/subscriptions/{subscription}/add-charge": _change(
            "addCharge", "Add a price book add-on from a day on", "AddOnChange"
        ),
        "/v1/subscriptions/{subscription}/remove-charge": _change(
            "removeCharge", "Remove an add-on from a day on", "AddOnChange"
        ),
        "/v1/subscriptions/{subscription}/revise": _change(
            "revisePrices", "Revise every price by a percentage from a day on", "PriceRevision"
        ),
        "/v1/subscriptions/{subscription}/grant-feature": _change(
            "grantFeature",
            "Give one subscription a feature, or more of a metered one",
            "FeatureGrant",
        ),
        "/v1/subscriptions/{subscription}/revoke-feature": _change(
            "revokeFeature", "End what was given of a feature from a day on", "FeatureRevocation"
        ),
        "/v1/subscriptions/{subscription}/add-coupon": _change(
            "addCoupon", "Take on a price book coupon from a day on", "CouponChange"
        ),
        "/v1/subscriptions/{subscription}/remove-coupon": _change(
            "removeCoupon", "End a coupon from a day on", "CouponChange"
        ),
        "/v1/subscriptions/{subscription}/cancel": _change(
            "cancelSubscription",
            "End it: now, at a time, or when the period ends",
            "Cancellation",
        ),
        "/v1/subscriptions/{subscription}/renew": _change(
            "renewSubscription", "Remove its end", None
        ),
    }


def _customer_paths() -> dict[str, Any]:
    link = {"type": "object", "properties": {"days": {"type": "integer", "minimum": 1,
                                                      "maximum": 90, "default": 7}}}  # fmt: skip
    made = {"type": "object", "required": ["url", "expires_at"],
            "properties": {"url": {"type": "string"},
                           "expires_at": {"type": "string", "format": "date-time"}}}  # fmt: skip
    return {
        "/v1/customers": _list_and_import(
            "customers", "CustomerList", "NewCustomer", "CustomerList"
        ),
        "/v1/customers/{customer}/portal-link": {
            "post": {
                "operationId": "makePortalLink",
                "summary": f"A signed, expiring link to the customer's own pages; {_ADMIN}",
                "parameters": [
                    {
                        "name": "customer",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": link}},
                },
                "responses": {
                    "201": {
                        "description": "The link",
                        "content": {"application/json": {"schema": made}},
                    },
                    **_admin_problems(
                        ("400", 'The body is not {"days": N}'),
                        ("422", "No such customer, or days outside 1 to 90"),
                    ),
                },
            }
        },
    }


def _correction_paths() -> dict[str, Any]:
    """Backfills and retractions of closed periods (invoicing.correcting)."""

    def correction(kind: str, body: str, summary: str) -> dict[str, Any]:
        return {
            "post": {
                "operationId": f"{kind}Events",
                "summary": f"{summary}; {_ADMIN}",
                "requestBody": {"required": True, "content": _json(body)},
                "responses": {
                    "200": {
                        "description": "The preview (or, committed, the outcome): per invoice, "
                        "each line's difference and whether a credit note or an adjustment "
                        "bills it; events left out are named with the reason",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_admin_problems(
                        ("400", "The body is not the shape described"),
                        ("404", "Not a backfill or a retract"),
                        (
                            "422",
                            "Refused, with the reason (an open period, no such event, "
                            "no reason given); nothing was changed",
                        ),
                    ),
                },
            }
        }

    return {
        "/v1/corrections/backfill": correction(
            "backfill", "BackfillBody", "Add events missed in closed periods"
        ),
        "/v1/corrections/retract": correction(
            "retract", "RetractBody", "Take back billed events of closed periods"
        ),
    }


def _payment_paths() -> dict[str, Any]:
    """What a payment provider reports back of an invoice (invoicing.payment_api)."""

    def report(operation: str, summary: str) -> dict[str, Any]:
        return {
            "post": {
                "operationId": operation,
                "summary": f"{summary}; {_ADMIN}",
                "requestBody": {"required": True, "content": _json("PaymentReport")},
                "responses": {
                    "200": {"description": "Where the invoice stands now: asked, paid, "
                                           "outstanding, state",
                            "content": {"application/json": {"schema": {"type": "object"}}}},
                    **_admin_problems(
                        ("400", "The body is not the shape described"),
                        ("422", "No such finalized invoice, an amount that is not a positive "
                         "decimal, or a failure without a reason; nothing was recorded"),
                    ),
                },
            }
        }  # fmt: skip

    return {
        "/v1/payments": report("recordPayment", "A payment received for an invoice"),
        "/v1/payments/failed": report("paymentFailed", "A payment attempt that failed"),
    }


def _credit_paths() -> dict[str, Any]:
    """Prepaid credits (invoicing.grant_api)."""
    listed = {"200": {"description": "The grants, with used, balance and history",
                      "content": {"application/json": {"schema": {"type": "object"}}}},
              **_admin_problems()}  # fmt: skip
    made = {"201": {"description": "The grant made",
                    "content": {"application/json": {"schema": {"type": "object"}}}},
            **_admin_problems(("400", "The body is not the shape described"),
                              ("422", "No such customer, an amount or price not in whole minor "
                               "units, an expiry before the start, or no reason"))}  # fmt: skip
    return {
        "/v1/credits": {
            "get": {"operationId": "listCredits",
                    "summary": f"The tenant's prepaid credits; {_ADMIN}",
                    "parameters": [{"name": "customer", "in": "query", "required": False,
                                    "schema": {"type": "string"}}],
                    "responses": listed},
            "post": {"operationId": "grantCredit",
                     "summary": f"Grant prepaid credit to a customer; {_ADMIN}",
                     "requestBody": {"required": True, "content": _json("GrantAsk")},
                     "responses": made},
        }
    }  # fmt: skip


def _balance_paths() -> dict[str, Any]:
    """Entitlements from the worker's live usage, alert rules and webhook endpoints
    (aggregation.entitlements, aggregation.alert_api, webhooks.api)."""
    subscription = {"name": "subscription", "in": "path", "required": True,
                    "schema": {"type": "string"}}  # fmt: skip
    entitled = {
        "200": {"description": "Each feature: has_access, and for a metered one its usage, "
                               "limit and balance (decimal strings in the meter's units)",
                "content": _json("EntitlementsAnswer")},
        "401": _problem("No valid API key", "WWW-Authenticate"),
        "404": _problem("The tenant has no such subscription"),
        "422": _problem("The subscription id is too long"),
        "503": _problem("The worker did not answer", "Retry-After"),
    }  # fmt: skip
    obj = {"application/json": {"schema": {"type": "object"}}}
    listed = {"200": {"description": "Listed", "content": obj}, **_admin_problems()}
    made = {"201": {"description": "Made", "content": obj},
            **_admin_problems(("400", "The body is not the shape described"),
                              ("422", "Why it cannot be made"))}  # fmt: skip
    removed = {"200": {"description": "Removed", "content": obj},
               **_admin_problems(("404", "The tenant has no such one"))}  # fmt: skip
    return {
        "/v1/entitlements/{subscription}": {
            "get": {"operationId": "entitlements",
                    "summary": "What a subscription may use now, from live usage",
                    "parameters": [subscription], "responses": entitled},
        },
        "/v1/entitlements/{subscription}/{feature}": {
            "get": {"operationId": "entitlement",
                    "summary": "One feature of a subscription, from live usage",
                    "parameters": [subscription, {"name": "feature", "in": "path",
                                                  "required": True, "schema": {"type": "string"}}],
                    "responses": entitled},
        },
        "/v1/alerts": {
            "get": {"operationId": "listAlerts", "summary": f"The tenant's alert rules; {_ADMIN}",
                    "responses": listed},
            "post": {"operationId": "addAlert",
                     "summary": f"Add a usage alert rule (or replace one by id); {_ADMIN}",
                     "requestBody": {"required": True, "content": _json("AlertAsk")},
                     "responses": made},
        },
        "/v1/alerts/{rule}": {
            "delete": {"operationId": "removeAlert", "summary": f"Remove a rule; {_ADMIN}",
                       "parameters": [{"name": "rule", "in": "path", "required": True,
                                       "schema": {"type": "string"}}],
                       "responses": removed},
        },
        "/v1/webhooks": {
            "get": {"operationId": "listWebhooks",
                    "summary": f"The tenant's webhook endpoints; {_ADMIN}", "responses": listed},
            "post": {"operationId": "addWebhook",
                     "summary": f"Add an endpoint; its signing secret is answered once; {_ADMIN}",
                     "requestBody": {"required": True, "content": _json("WebhookAsk")},
                     "responses": made},
        },
        "/v1/webhooks/deliveries": {
            "get": {"operationId": "webhookDeliveries",
                    "summary": f"Recent deliveries, their state and every attempt; {_ADMIN}",
                    "parameters": [{"name": "message", "in": "query", "required": False,
                                    "schema": {"type": "string"}}],
                    "responses": listed},
        },
        "/v1/webhooks/replay": {
            "post": {"operationId": "replayWebhook",
                     "summary": f"Deliver a message again, with the same id; {_ADMIN}",
                     "requestBody": {"required": True, "content": _json("WebhookAsk")},
                     "responses": {"200": {"description": "Replayed", "content": obj},
                                   **_admin_problems(("400", "The body is not the shape "
                                                      "described"),
                                                     ("404", "No such recent message"))}},
        },
        "/v1/webhooks/{endpoint}": {
            "delete": {"operationId": "removeWebhook", "summary": f"Remove an endpoint; {_ADMIN}",
                       "parameters": [{"name": "endpoint", "in": "path", "required": True,
                                       "schema": {"type": "string"}}],
                       "responses": removed},
        },
    }  # fmt: skip


def _peer_paths() -> dict[str, Any]:
    """The peers' ingest endpoints (ingest.lago, docs/migrate/), each a translation into
    the same admission as /v1/events."""
    cloud = {"$ref": _REF.format(name="CloudEvent")}
    lago_one = {"type": "object", "required": ["event"],
                "properties": {"event": {"$ref": _REF.format(name="LagoEvent")}}}  # fmt: skip
    lago_many = {"type": "object", "required": ["events"],
                 "properties": {"events": _batch("LagoEvent")}}  # fmt: skip
    refused = {"application/problem+json": {"schema": {"$ref": _REF.format(name="PartlyRefused")}}}
    lago_answer = {"application/json": {"schema": {"type": "object"}}}
    stripe_answer = lago_answer  # both peers answer JSON objects of their own shapes
    common = {
        "400": _problem("The body is not JSON, or not the shape its type promises"),
        "401": _problem("No valid API key", "WWW-Authenticate"),
        "403": _problem("An event names a tenant the key may not write"),
        "413": _problem("The body, or the batch, is over the limit"),
        "429": _problem("The tenant is over its rate", "Retry-After"),
        "503": _problem("Kafka did not acknowledge; resend", "Retry-After"),
    }
    return {
        "/api/v1/events": {
            "post": {
                "operationId": "peerEvents",
                "summary": "OpenMeter's ingest (CloudEvents) and Lago's event API ({\"event\"})",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/cloudevents+json": {"schema": cloud},
                        "application/cloudevents-batch+json": {"schema": _batch("CloudEvent")},
                        "application/json": {
                            "schema": {"oneOf": [lago_one, cloud, _batch("CloudEvent")]}
                        },
                    },
                },
                "responses": {
                    "200": {"description": "Lago: the event, echoed", "content": lago_answer},
                    "204": {"description": "OpenMeter: every event accepted"},
                    **common,
                    "400": {
                        "description": "The body is unreadable; or (OpenMeter) some events "
                        "were refused, each named, the others accepted",
                        "content": refused,
                    },
                    "415": _problem("The content type is not one of those listed"),
                    "422": {"description": "Lago: validation_errors", "content": lago_answer},
                },
            }
        },
        "/v1/billing/meter_events": {
            "post": {
                "operationId": "stripeMeterEvent",
                "summary": "Stripe's meter event (form-encoded), billed to the customer's "
                "subscription",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {
                                "type": "object",
                                "required": ["event_name", "payload[stripe_customer_id]"],
                                "properties": {
                                    "event_name": {"type": "string"},
                                    "identifier": {"type": "string"},
                                    "timestamp": {"type": "integer"},
                                    "payload[stripe_customer_id]": {"type": "string"},
                                    "payload[subscription]": {"type": "string"},
                                    "payload[value]": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The meter event, as Stripe returns it",
                        "content": stripe_answer,
                    },
                    "400": {
                        "description": "Stripe's error shape: the reason as its code",
                        "content": stripe_answer,
                    },
                    "401": {
                        "description": "No valid API key (Stripe's error shape)",
                        "content": stripe_answer,
                    },
                    "429": {
                        "description": "The tenant is over its rate (Stripe's error shape)",
                        "content": stripe_answer,
                    },
                    "503": {
                        "description": "Kafka or the store did not answer; resend",
                        "content": stripe_answer,
                    },
                },
            }
        },
        "/api/v1/events/batch": {
            "post": {
                "operationId": "lagoBatch",
                "summary": 'Lago\'s batch of events ({"events": [...]})',
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": lago_many}},
                },
                "responses": {
                    "200": {"description": "The events, echoed", "content": lago_answer},
                    **common,
                    "422": {"description": "validation_errors", "content": lago_answer},
                },
            }
        },
    }


def document() -> dict[str, Any]:
    (_, components) = msgspec.json.schema_components(
        [CloudEvent, PlainEvent, Accepted, ProblemDocument, PartlyRefused, LagoEvent,
         CurrentUsage, NewSubscription,
         Imported, SubscriptionList, SubscriptionDetail, PlanChange, AddOnChange, PriceRevision,
         CouponChange, FeatureGrant, FeatureRevocation, Cancellation, NewCustomer,
         CustomerList, BackfillBody, RetractBody,
         PaymentReport, GrantAsk, EntitlementsAnswer, AlertAsk, WebhookAsk],
        ref_template=_REF,
    )  # fmt: skip
    _tidy_descriptions(components)
    one_cloud = {"$ref": _REF.format(name="CloudEvent")}
    one_plain = {"$ref": _REF.format(name="PlainEvent")}
    answer = _json("Accepted")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "meterline gateway",
            "version": "1",
            "description": (
                "Send usage events. Each event is checked on its own: the answer counts "
                "the accepted ones (acknowledged by Kafka) and names each refused one with "
                "a machine-readable reason. Resending an event with the same source and id "
                "is safe: it counts once. Read a subscription's usage so far; with an admin "
                "key, manage the tenant's subscriptions and correct closed periods."
            ),
        },
        "servers": [{"url": "http://127.0.0.1:8787"}],
        "security": [{"apiKey": []}],
        "paths": {
            "/v1/events": {
                "post": {
                    "operationId": "sendEvents",
                    "summary": "Send one usage event or a batch",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/cloudevents+json": {"schema": one_cloud},
                            "application/cloudevents-batch+json": {"schema": _batch("CloudEvent")},
                            "application/json": {
                                "schema": {"oneOf": [one_plain, _batch("PlainEvent")]}
                            },
                        },
                    },
                    "responses": {
                        "202": {
                            "description": "Accepted, except the events it names",
                            "content": answer,
                        },
                        "400": _problem("The body is not JSON, or not the shape its type promises"),
                        "401": _problem("No valid API key", "WWW-Authenticate"),
                        "403": _problem("An event names a tenant the key may not write"),
                        "413": _problem("The body, or the batch, is over the limit"),
                        "415": _problem("The content type is not one of those listed"),
                        "422": {
                            "description": "No event was accepted; each is named",
                            "content": answer,
                        },
                        "429": _problem("The tenant is over its rate", "Retry-After"),
                        "503": _problem("Kafka did not acknowledge; resend", "Retry-After"),
                    },
                }
            },
            "/v1/usage/{subscription}": {
                "get": {
                    "operationId": "currentUsage",
                    "summary": "A subscription's usage and amount so far in a period",
                    "parameters": [
                        {
                            "name": "subscription",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "period",
                            "in": "query",
                            "required": False,
                            "description": "YYYY-MM; the current month by default",
                            "schema": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The key's tenant's subscription, period to date",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": _REF.format(name="CurrentUsage")}
                                }
                            },
                        },
                        "400": _problem("The period is not a month like 2026-10"),
                        "401": _problem("No valid API key", "WWW-Authenticate"),
                        "503": _problem("The store did not answer", "Retry-After"),
                    },
                }
            },
            **_peer_paths(),
            **_subscription_paths(),
            **_customer_paths(),
            **_correction_paths(),
            **_payment_paths(),
            **_credit_paths(),
            **_balance_paths(),
            "/v1/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Whether Kafka and the store answer",
                    "security": [],
                    "responses": {
                        "200": {"description": "Kafka and the store answer"},
                        "503": {"description": "Degraded: the body says which part and why"},
                    },
                }
            },
        },
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "A meterline API key"}
            },
        },
    }


def _tidy_descriptions(node: Any) -> None:
    """Descriptions come from docstrings, whose indentation each msgspec release strips
    its own way: strip it here, so the document depends on the docstrings alone."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                node[key] = inspect.cleandoc(value)
            else:
                _tidy_descriptions(value)
    elif isinstance(node, list):
        for item in node:
            _tidy_descriptions(item)


def rendered() -> str:
    return json.dumps(document(), indent=2, ensure_ascii=False) + "\n"
