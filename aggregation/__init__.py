"""Streaming aggregation: dedupe and period-to-date totals, and the Faust worker around them."""
