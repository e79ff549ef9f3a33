"""Every limit of the scanner, with the reason behind it.

The scanner runs inside the proxy's RETR/TOP path, so each limit bounds the CPU time or memory a
single hostile message can cost.  All of them are defaults of :class:`ScanConfig` and can be
changed there.
"""

# Most providers refuse to deliver more than 25 MB (Gmail, Outlook.com: 20-25 MB after base64).
# Bigger messages are handed on unscanned rather than parsed: parsing cost grows with size and the
# proxy already holds the whole message in memory.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024

# Decoded payload bytes summed over all parts.  base64 shrinks by 3/4, so a message under the size
# cap decodes to less than this; the cap stops decompression-like tricks (nested message/rfc822
# re-encodings) from growing memory past ~1.5x the message.
MAX_DECODED_BYTES = 48 * 1024 * 1024

# MIME nesting depth.  Real mail nests 3-5 levels (mixed > related > alternative, plus a
# forwarded message/rfc822); 16 leaves room while stopping recursion bombs.
MAX_MIME_DEPTH = 16

# Parts walked per message.  A newsletter with inline images has a few dozen; 500 stops
# "one million empty parts" messages from costing seconds.
MAX_MIME_PARTS = 500

# Characters of one text part searched for links.  Phishing links sit near the top; a 2 MiB text
# part is already far beyond any legible mail and regex cost grows linearly with it.
MAX_TEXT_CHARS = 2 * 1024 * 1024

# Distinct links analysed per message; each costs host parsing and a few set look-ups.
MAX_LINKS = 1000

# Wall-clock budget for one scan (seconds).  A POP3 client waits for RETR; typical clients time
# out after 60 s, and the median message scans in about 1 ms, so 5 s only ever trips on hostile
# input or an overloaded host.
TIME_BUDGET_SECONDS = 5.0

# Attachment bytes handed to oletools.  Macro documents are small (tens to hundreds of KB);
# olevba's cost grows with document size.
MAX_OFFICE_BYTES = 16 * 1024 * 1024

# Zip members listed when looking for executables or encryption inside an archive.
MAX_ARCHIVE_MEMBERS = 2000

# Reasons written into X-Popproxy-Reasons.  RFC 5322 section 2.1.1 limits a line to 998 octets;
# folding keeps each line short, and a handful of reasons is what a person reads.
MAX_HEADER_REASONS = 8

# Characters of any detail (host, file name) carried in a reason, so a hostile 2000-character
# host name cannot blow up headers or logs.
MAX_DETAIL_CHARS = 80
