"""Soak tests (``-m slow``): the proxy as a real process under many concurrent TLS sessions."""
