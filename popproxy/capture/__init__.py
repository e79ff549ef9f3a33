"""Session captures (``popproxy run --capture DIR``) as mitmproxy TCP flows, secrets redacted.

Sans-io parts (no asyncio, no sockets): ``tnetstring`` (the file encoding), ``redact`` (client
lines), ``recorder`` (one session's messages, bodies omitted, memory bounded) and ``flow`` (the
mitmproxy TCPFlow state).  I/O: ``store`` (the directory and files) and ``hook`` (the session's
side).  mitmproxy itself is not needed to write captures, only to view them (docs/capture.md).
"""
