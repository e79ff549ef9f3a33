"""Sans-io wire formats that are not POP3 (the PROXY protocol header). No asyncio, no sockets.

Like ``popproxy.pop3``: bytes in, events out; the I/O shell (``popproxy.proxy``) owns the
sockets and feeds these parsers.
"""
