"""The customer portal in a real browser: Debian's Chromium, headless, opens a customer's
signed link on a real gateway (uvicorn) over the real store; its screenshot, read back
by OCR, shows the invoice's total and the usage figure. Nothing of another customer is
reachable through the link, and an altered or expired link is refused."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from base.settings import Settings
from base.signed_links import Grant, sign
from ingest.gateway import Gateway
from ingest.store_access import DirectStore
from invoicing.closing import close_period
from invoicing.invoice import Invoice
from meterline.cli_support import handlers
from meterline.embedded_broker import EmbeddedBroker, free_port
from tests.integration.gateway_helpers import gateway_for, running
from tests.integration.test_invoices import AUG, BOOK, TENANT, invoices, seed_scenario
from tests.stores import Stores

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium")
TESSERACT = shutil.which("tesseract")
NOW = datetime.now(UTC)


@pytest.fixture
def portal(
    broker: EmbeddedBroker, settings_factory: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[str, Gateway, str, dict[str, Invoice]]]:
    """(base URL, gateway, admin key, August's invoices) of a served gateway over a store
    where August is invoiced and a has usage this month."""
    port = free_port()  # the gateway's own: portal links start with its address
    gateway, _ = gateway_for(broker, settings_factory, tmp_path, gateway_port=port)
    admin, _ = gateway.keys.create(TENANT, "billing", scope="admin")
    seeded = Stores.open(gateway.settings)
    try:
        feed = seed_scenario(seeded)
        midnight = NOW.replace(hour=0, minute=0, second=0, microsecond=0)
        feed.send([("a", "api_calls", 4321, midnight, {}),
                   ("a", "api_calls", 1000, midnight + (NOW - midnight) / 2, {})])  # fmt: skip
        close_period(seeded.sources, BOOK, AUG, finalize=True)
        august = invoices(seeded, AUG)
    finally:
        seeded.close()
    gateway.store = DirectStore(gateway.settings, BOOK, None, handlers())
    with running(gateway, port) as url:
        yield url, gateway, admin, august


def screenshot_text(url: str, folder: Path) -> str:
    """What Chromium shows at ``url``, read off its screenshot by OCR."""
    import pytesseract  # noqa: PLC0415 (a test-only tool, loaded where it is used)
    from PIL import Image  # noqa: PLC0415

    shot = folder / f"page-{time.monotonic_ns()}.png"
    subprocess.run(
        [CHROMIUM or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={folder / 'profile'}", "--hide-scrollbars",
         "--window-size=1280,2200", f"--screenshot={shot}", url],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return str(pytesseract.image_to_string(Image.open(shot)))


@pytest.mark.skipif(not CHROMIUM, reason="the browser test needs Chromium (apt-get install "
                    "chromium)")  # fmt: skip
@pytest.mark.skipif(not TESSERACT, reason="reading the screenshot needs tesseract (apt-get "
                    "install tesseract-ocr)")  # fmt: skip
def test_a_customer_sees_their_invoices_and_usage_through_their_link_and_nothing_else(
    portal: tuple[str, Gateway, str, dict[str, Invoice]], tmp_path: Path
) -> None:
    url, gateway, admin, august = portal
    made = httpx.post(f"{url}/v1/customers/cust-a/portal-link", json={"days": 3},
                      headers={"authorization": f"Bearer {admin}"})  # fmt: skip
    assert made.status_code == 201, made.text
    link = made.json()["url"]
    assert link.startswith(f"{url}/portal/")

    seen = screenshot_text(link, tmp_path)
    a = august["a"]
    assert "Alpha Ltd" in seen, seen
    assert f"{a.total:.2f} USD" in seen, seen
    assert "5321" in seen.replace(",", ""), seen  # api_calls this period, 4,321 + 1,000
    page = screenshot_text(f"{link}/invoices/{a.invoice_id}", tmp_path)
    assert f"No. {a.number_label}" in page and f"{a.total:.2f} USD" in page, page
    pdf = httpx.get(f"{link}/invoices/{a.invoice_id}.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")

    # Another customer's invoice does not exist for this link; an altered or expired
    # link, or another customer's made with another secret, is refused.
    assert httpx.get(f"{link}/invoices/{august['b'].invoice_id}").status_code == 404
    token = link.rsplit("/", 1)[1]
    payload, signature = token.split(".")
    forged = sign(Grant(TENANT, "cust-b", NOW + timedelta(days=3)), "another secret")
    for bad in (f"{payload}.{signature[:-2]}AA", forged, "garbage"):
        refused = httpx.get(f"{url}/portal/{bad}")
        assert refused.status_code == 403 and "cannot be opened" in refused.text
    expired = sign(Grant(TENANT, "cust-a", NOW - timedelta(seconds=1)),
                   gateway.settings.portal_key())  # fmt: skip
    assert "expired" in httpx.get(f"{url}/portal/{expired}").text
    nobody = httpx.post(f"{url}/v1/customers/nobody/portal-link", json={},
                        headers={"authorization": f"Bearer {admin}"})  # fmt: skip
    assert nobody.status_code == 422 and "no customer" in nobody.json()["detail"]
