"""Sans-io POP3: bytes in, events out, bytes out. No asyncio, no sockets, no ssl.

The proxy shell (``popproxy.proxy``) owns all I/O; everything here is pure and is tested by
feeding input whole and one byte at a time.
"""
