"""Every size limit of the POP3 core, with the RFC text or reason behind it."""

# RFC 2449 section 4: "The maximum length of a command is increased from 47 characters ...
# to 255 octets, including the terminating CRLF."  Longer lines are refused with -ERR.
MAX_COMMAND_LINE = 255

# RFC 5034 section 4 lifts the 255-octet limit for SASL client responses (base64 data can be
# long).  8 KiB is what Dovecot accepts and is far above PLAIN/LOGIN needs, while bounding memory.
MAX_SASL_LINE = 8192

# RFC 1939 section 3: "Responses may be up to 512 characters long, including the terminating
# CRLF."  A longer status line from the upstream is a protocol violation.
MAX_STATUS_LINE = 512

# RFC 2449 section 6.1: multi-line CAPA lines share the 512-octet response limit.
MAX_CAPA_LINE = MAX_STATUS_LINE

# RFC 2449 section 6 does not bound the number of capabilities; 64 is far above any real
# server (Dovecot advertises 9) and keeps a hostile upstream from growing our state.
MAX_CAPA_LINES = 64

# After this many consecutive malformed command lines the client is disconnected (an attacker
# probing the parser gains nothing from an open socket).  Same idea as aiosmtpd's BOGUS_LIMIT.
MAX_BAD_COMMANDS = 10
