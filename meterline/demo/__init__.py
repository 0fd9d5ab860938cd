"""The demo: a price book, subscriptions and a month of usage, all deterministic from a seed."""

from pathlib import Path

from base.settings import Settings

PRICE_BOOK = Path(__file__).resolve().parent / "plans.yaml"


def price_book_path(settings: Settings) -> Path:
    """The price book a command prices by: the configured one, else the demo's."""
    return settings.price_book or PRICE_BOOK
