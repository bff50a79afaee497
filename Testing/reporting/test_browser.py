"""report.html and summary.html in a real browser (headless Chromium): every image loads, nothing is fetched.

Needs Debian's `chromium`, which `make test` installs when it is missing; without it these tests fail.
"""

from __future__ import annotations

import pytest

from chromium_page import check_page, find_chromium, screenshot

pytestmark = pytest.mark.xdist_group("reporting")

ONE_PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    assert path is not None, "chromium is not installed: `make browser` (apt-get install chromium) installs it"
    return path


def test_the_check_sees_a_broken_image_and_a_fetch(tmp_path, chromium):
    """The checker itself: an external image is reported both as broken and as a network request."""
    page = tmp_path / "bad.html"
    page.write_text(f'<html><body><img src="{ONE_PIXEL}"><img src="http://example.invalid/x.png"></body></html>')
    check = check_page(page, tmp_path, chromium)
    assert len(check.images) == 2
    assert [image["src"] for image in check.broken_images] == ["http://example.invalid/x.png"]
    assert check.network_requests == ["http://example.invalid/x.png"]


@pytest.mark.parametrize("page", ["pvl_000/report.html", "macs_000/report.html", "summary.html"])
def test_report_pages_load_offline(predicted_batch, tmp_path, chromium, page):
    check = check_page(predicted_batch / page, tmp_path, chromium)
    assert check.images, "the page shows images"
    assert check.broken_images == []
    assert check.network_requests == []
    shot = screenshot(predicted_batch / page, tmp_path / "page.png", tmp_path, chromium, height=900)
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
