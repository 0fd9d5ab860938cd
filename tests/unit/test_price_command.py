"""`meterline price`: a billing person checks a plan by hand."""

from __future__ import annotations

import json

from click.testing import CliRunner

from meterline.cli import main


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["price", *args])
    return result.exit_code, result.output


def test_a_graduated_quantity_is_priced_with_its_breakdown_per_tier() -> None:
    code, output = run("--plan", "growth", "--meter", "api_calls", "--quantity", "12000",
                       "--version", "1", "--json")  # fmt: skip
    assert code == 0
    quote = json.loads(output)
    assert quote["amount"] == "4.100000000"
    assert [part["units"] for part in quote["breakdown"]] == ["1000", "9000", "2000"]
    assert [part["amount"] for part in quote["breakdown"]] == [
        "0.500000000", "3.200000000", "0.400000000",
    ]  # fmt: skip


def test_the_newest_version_prices_by_default() -> None:
    code, output = run("--plan", "growth", "--meter", "api_calls", "--quantity", "12000", "--json")
    assert code == 0
    assert (json.loads(output)["version"], json.loads(output)["amount"]) == (2, "3.450000000")


def test_a_minimum_is_shown_when_it_applies() -> None:
    code, output = run("--plan", "growth", "--meter", "tokens", "--quantity", "10", "--json")
    assert code == 0
    assert (json.loads(output)["amount"], json.loads(output)["adjustment"]) == (
        "0.300000000",
        "minimum",
    )


def test_the_table_shows_the_total_in_the_plan_currency() -> None:
    code, output = run("--plan", "scale", "--meter", "api_calls", "--quantity", "5000")
    assert code == 0
    assert "1.350000000 EUR" in output


def test_the_demo_books_newer_models_are_quoted() -> None:
    """One card payment of 100 (2.9% + 0.30), a month's 20,000 of volume at a rate by
    tiers (1.5% to 10,000 plus a 5.00 flat fee, then 1%), an upstream bill of 2.50 with a
    15% markup, and 12,000.5 GB-hours with 10,000 included."""
    for args, amount in (
        (("--plan", "starter", "--meter", "payments", "--quantity", "100"), "3.200000000"),
        (("--plan", "scale", "--meter", "payments", "--quantity", "20000"), "255.000000000"),
        (("--plan", "growth", "--meter", "llm_cost", "--quantity", "2.5"), "2.875000000"),
        (("--plan", "scale", "--meter", "disk_gb", "--quantity", "12000.5"), "0.200050000"),
    ):
        code, output = run(*args, "--json")
        assert code == 0, output
        assert json.loads(output)["amount"] == amount, args


def test_bad_requests_are_explained_without_a_traceback() -> None:
    for args, message in [
        (("--plan", "nope", "--quantity", "1"), "no plan 'nope'"),
        (("--plan", "starter", "--quantity", "1"), "name one with --meter"),
        (("--plan", "starter", "--meter", "gpu", "--quantity", "1"), "no charge on meter 'gpu'"),
        (("--plan", "starter", "--meter", "tokens", "--quantity", "1.5"), "0 decimal places"),
        (("--plan", "starter", "--meter", "tokens", "--quantity", "-3"), "zero or more"),
        (("--plan", "starter", "--meter", "tokens", "--quantity", "lots"), "not a number"),
        (("--plan", "starter", "--meter", "tokens", "--quantity", "1e309"), "too large to bill"),
        (
            ("--plan", "growth", "--version", "7", "--meter", "tokens", "--quantity", "1"),
            "plan 'growth' has no version 7 (1, 2)",
        ),
    ]:
        code, output = run(*args)
        assert code == 1, args
        assert message in output, args
        assert "Traceback" not in output
