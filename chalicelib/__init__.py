"""The Fullwhere bridge: platform webhooks in, Fullwhere customers out.

Flow: ``app.py`` routes a request to :mod:`chalicelib.handlers.webhooks`, which verifies and parses it with the
platform's connector (:mod:`chalicelib.connectors`), then hands each event to :mod:`chalicelib.flow.pipeline`
(fetch → map → identity ledger → Fullwhere import). What cannot finish inline goes to the retry queue
(:mod:`chalicelib.domain.retry_queue`), consumed by :mod:`chalicelib.handlers.retry_worker`. The layers and
the design behind them: docs/architecture.md.
"""

__version__ = "0.1.0"
