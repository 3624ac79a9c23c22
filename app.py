"""Routes and event handlers of the Fullwhere bridge. Each one hands its input to ``chalicelib/handlers/``."""

from chalice import Chalice, Rate

from chalicelib.core.names import RETRY_QUEUE_NAME
from chalicelib.handlers.invocation import around_every_invocation

app = Chalice(app_name="fullwhere-bridge")
# Every handler's lines share one log context, and its metrics are written once when it ends.
app.register_middleware(around_every_invocation, "all")

# Each handler imports its module when first called: the four functions (API, retry worker, OPERA pull, sweeps)
# all load this file, and each pays only for its own code (docs/performance.md, "Cold start").


# Any content type is accepted: Mews declares none, and every body is parsed from its raw bytes.
@app.route("/webhooks/{platform}", methods=["POST"], content_types=["*/*"])
def webhook(platform):
    from chalicelib.handlers import webhooks

    request = app.current_request
    return webhooks.handle_webhook(platform, request.raw_body, dict(request.headers), request.query_params,
                                   remaining_ms=getattr(app.lambda_context, "get_remaining_time_in_millis", None))


# Verification handshakes (Meta sends GET ?hub.mode=subscribe&hub.challenge=...).
@app.route("/webhooks/{platform}", methods=["GET"])
def webhook_handshake(platform):
    from chalicelib.handlers import webhooks

    request = app.current_request
    return webhooks.handle_handshake(platform, dict(request.headers), request.query_params)


# Status and version only: the details are logged (chalicelib/handlers/health.py).
@app.route("/health", methods=["GET"])
def health():
    from chalicelib.handlers import health as handler

    return handler.health()


@app.on_sqs_message(queue=RETRY_QUEUE_NAME, batch_size=10, name="retry_worker")
def retry(event):
    from chalicelib.handlers import retry_worker

    return retry_worker.handle_batch(event.to_dict(), event.context.get_remaining_time_in_millis)


# OPERA Cloud pushes no webhook: its business events are dequeued from OHIP on a schedule.
@app.schedule(Rate(5, unit=Rate.MINUTES), name="oracle_pull")
def oracle_pull(event):
    from chalicelib.handlers import scheduled_pulls

    return scheduled_pulls.handle(getattr(event.context, "get_remaining_time_in_millis", None))


# Reconciliation sweeps: what each platform lists as changed since its cursor, for the guests whose webhook was
# lost (docs/architecture.md, "Sweeps"). Each run sweeps the accounts whose SWEEP_MINUTES have passed.
@app.schedule(Rate(1, unit=Rate.MINUTES), name="sweeps")
def sweeps(event):
    from chalicelib.handlers import sweeps as handler

    return handler.handle(getattr(event.context, "get_remaining_time_in_millis", None))
