"""The bridge's command-line tool: ``python -m bridge_cli --help``.

``demo`` drives the local stack (``make run``) end to end; ``sign`` and ``replay`` exercise a webhook
registration by hand; ``dlq list`` / ``dlq redrive`` are the dead-letter runbook; ``backfill`` imports an
export of customers. A development and operations tool: it is not part of the deployed package.
"""
