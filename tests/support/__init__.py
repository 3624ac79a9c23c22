"""Helpers for tests that need local AWS services (moto)."""
