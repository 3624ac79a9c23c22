"""Local HTTP emulators of the third-party APIs the bridge talks to (tests only)."""
