"""The Fullwhere bridge: platform webhooks in, Fullwhere customers out.

Flow: ``app.py`` routes a request to :mod:`chalicelib.webhooks`, which verifies and parses it with the
platform's connector (:mod:`chalicelib.connectors`), then hands each event to :mod:`chalicelib.pipeline`
(fetch → map → identity ledger → Fullwhere import). What cannot finish inline goes to the retry queue
(:mod:`chalicelib.retry_queue`), consumed by :mod:`chalicelib.retry_worker`.
"""

__version__ = "0.1.0"
