"""Entry points: the webhook request, the retry worker and the scheduled pulls. Nothing imports them but ``app.py``."""
