"""CloudEvents' HTTP binding in binary mode: the event's attributes travel in ``ce-*``
headers and its data is the body, typed by Content-Type (the binding's section 3.1).
Several SDKs send this by default. The gateway rebuilds the structured form from the
headers and body and admits it like any other CloudEvent, so both modes give the same
checks, reasons and dedupe.

Header values are percent-decoded as the binding asks (3.1.3.2). The data must be JSON
(``application/json`` or any ``+json`` type): meterline reads quantities out of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import msgspec

from ingest.wire import TOO_DEEP, BodyError, Item

PREFIX = "ce-"
SPECVERSION = PREFIX + "specversion"

_any_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


def is_binary(headers: Mapping[str, str]) -> bool:
    """A binary-mode event names its specversion in a header (structured mode never does)."""
    return SPECVERSION in headers


def json_media(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def structured(headers: Mapping[str, str], body: bytes) -> Item:
    """The structured form of a binary-mode event, as the one item of a request. What
    the attributes lack or hold wrongly is left to admission to refuse, with its reasons."""
    attributes: dict[str, Any] = {
        name.removeprefix(PREFIX): unquote(value)
        for name, value in headers.items()
        if name.startswith(PREFIX)
    }
    content_type = headers.get("content-type", "")
    if body.strip():
        if content_type and not json_media(content_type):
            raise BodyError(
                f"binary-mode data of type {content_type!r}: meterline reads JSON data "
                "(application/json or a +json type)"
            )
        try:
            _any_decoder.decode(body)  # JSON, which is kept as sent: numbers stay exact
        except msgspec.DecodeError as error:
            raise BodyError(f"the data is not valid JSON: {error}") from None
        except RecursionError:
            raise BodyError(TOO_DEEP) from None
        attributes["data"] = msgspec.Raw(body)
    if content_type:
        attributes["datacontenttype"] = content_type
    return Item(0, _encoder.encode(attributes))
