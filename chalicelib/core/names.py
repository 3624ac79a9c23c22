"""Names fixed at deploy time: Chalice wires the retry worker to its queue by name, and
deploy/resources.yaml creates both queues under these names."""

RETRY_QUEUE_NAME = "fullwhere-bridge-retry"
DEAD_LETTER_QUEUE_NAME = "fullwhere-bridge-dead-letter"
