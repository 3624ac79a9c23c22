"""Infrastructure: settings loading, AWS clients, HTTP, token cache, logs, metrics. Imports only ``core``."""
