"""The demo: a price book, subscriptions and a month of usage, all deterministic from a seed."""

from pathlib import Path

PRICE_BOOK = Path(__file__).resolve().parent / "plans.yaml"
