"""The one way a rehearsal fails: a sentence saying what a real deployment would get wrong."""


class RehearsalFailed(Exception):
    """What went wrong, for the person running ``make rehearse`` (printed as is, then exit status 1)."""
