"""Control-flow signals of the I/O shell."""


class SessionEnd(Exception):
    """Stop the session after flushing what was already written (not an error)."""
