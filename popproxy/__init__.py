"""popproxy: a POP3 security proxy."""

__version__ = "0.1.0"
