"""The HTTP error document every meterline endpoint answers with (RFC 9457), so that the
gateway, the subscriptions API and the worker's internal pages refuse alike."""

from __future__ import annotations

import msgspec


class ProblemDocument(msgspec.Struct):
    """RFC 9457: why a request as a whole was refused."""

    title: str
    status: int
    detail: str
    type: str = "about:blank"
