"""The last word to a session still open when the shutdown grace ends (issue 19 item 7).

``-ERR [SYS/TEMP] server shutting down`` (Dovecot says the same at its shutdown): SYS/TEMP
(RFC 3206 section 4) tells the client to come back later, not to ask for the password again.
It is written only where it cannot land inside a reply: to a session waiting for its client's
next line.  One in the middle of a reply (a RETR being relayed) or of a TLS handshake is just
closed; its client sees the reply cut short, which it treats as an error anyway.  Either way
the upstream gets no QUIT, so nothing the client did is committed (RFC 1939 section 6).
"""

from __future__ import annotations

from popproxy.pop3 import replies
from popproxy.pop3.replies import Code
from popproxy.proxy.client_channel import ClientChannel

SHUTDOWN_NOTICE = replies.err("server shutting down", Code.SYS_TEMP)


def tell_shutdown(channel: ClientChannel | None) -> bool:
    """Write the notice to ``channel`` if it waits for a command; whether it was written."""
    if channel is None or not channel.awaiting_read or channel.handshaking:
        return False
    channel.write(SHUTDOWN_NOTICE)
    return True
