"""Which statuses on a pull inbox mean the consumer is gone, not just that a request ended."""

from __future__ import annotations

import pytest

from common.pull import _consumer_is_gone


@pytest.mark.parametrize(
    ("status", "description", "gone"),
    [
        ("409", "Consumer Deleted", True),
        ("503", "\nNats-Subject: $JS.API.CONSUMER.MSG.NEXT.RTC_STATE.x", True),
        ("404", "No Consumers", True),
        ("404", "No Messages", False),
        ("408", "Request Timeout", False),
        ("409", "Leadership Change", False),
        ("409", "Exceeded MaxWaiting", False),
    ],
)
def test_consumer_is_gone(status: str, description: str, gone: bool) -> None:
    assert _consumer_is_gone(status, description) is gone
