"""One event's journey: the pipeline, and the one dispatch that turns its outcome into imported, queued or dead-lettered."""
