"""One sample guest per platform, as many distinct guests as wanted.

``sample.prepare(sandbox, n)`` puts guest number ``n`` where the platform's API would have it (in the
sandbox's emulator) and returns the signed webhook the platform would send for it (``None`` for OPERA
Cloud, whose events are pulled: preparing enqueues the business event instead). ``sample.guest_id(n)``
is the id Fullwhere should end up with in ``sample.id_field``. Guests are distinct across ``n`` and
deterministic, so a run can be checked afterwards.

Each platform's sample is its module's ``SAMPLE`` (``sandbox/platforms/<name>.py``); the payloads start
from the documented fixtures in ``tests/fixtures/`` and are signed by the module's ``sign``, which the
tests check against their own independent signers.
"""

from __future__ import annotations

from sandbox import platforms
from sandbox.platforms import Delivery, Sample, fixture, guest_uuid

__all__ = ["SAMPLES", "Delivery", "Sample", "fixture", "guest_uuid", "webhook_samples"]

SAMPLES: dict[str, Sample] = {name: platforms.module(name).SAMPLE for name in platforms.names()}


def webhook_samples() -> list[Sample]:
    """The samples delivered by webhook (every platform but the pulled ones)."""
    return [sample for sample in SAMPLES.values() if not sample.pulled]
