"""Every limit of the scanner, with the reason behind it.

The scanner runs inside the proxy's RETR/TOP path, so each limit bounds the CPU time or memory a
single hostile message can cost.  All of them are defaults of :class:`ScanSettings` and can be
changed there; the policy's ``scan`` section takes its defaults from here too
(``popproxy/policy/schema_scan.py``), so each value is declared once.
"""

# Most providers refuse to deliver more than 25 MB (Gmail, Outlook.com: 20-25 MB after base64).
# Parsing cost grows with size and the proxy holds the message in memory, so a bigger message is
# judged on its first MAX_MESSAGE_BYTES only (``Scanner.scan(..., truncated=True)``), and the
# cut itself is evidence (signal ``limit-size``): a message must not get cleaner by growing.
# 16 MiB: the policy's ``scan.max_message_bytes`` default, what the proxy has always used (the
# worker memory budget in docs/scaling.md assumes it); the same for ``popproxy scan``.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# Decoded payload bytes summed over all parts.  base64 shrinks by 3/4, so a message under the size
# cap decodes to less than that; this cap (3x MAX_MESSAGE_BYTES) stops decompression-like tricks
# (nested message/rfc822 re-encodings, each decoded again) from growing a worker's memory further.
MAX_DECODED_BYTES = 48 * 1024 * 1024

# MIME nesting depth.  Real mail nests 3-5 levels (mixed > related > alternative, plus a
# forwarded message/rfc822); 16 leaves room while stopping recursion bombs.  Parts deeper than
# this are not skipped: they go to the overflow walk (MAX_OVERFLOW_BYTES) and the message gets
# ``limit-depth``.
MAX_MIME_DEPTH = 16

# Characters of one header value decoded from RFC 2047 encoded-words.  The stdlib decoder
# (email.header.decode_header) is quadratic in the number of words when charsets alternate:
# a 260 KB Subject took 2.7 s.  RFC 5322 section 2.1.1 caps a line at 998 characters, and a
# mail client shows a Subject's first line or two; 16 KiB of it is far past what anyone reads.
MAX_HEADER_DECODE_CHARS = 16 * 1024

# Parts walked per message in full.  A newsletter with inline images has a few dozen; 500 stops
# "one million empty parts" messages from costing seconds.  Parts after the 500th go to the
# overflow walk and the message gets ``limit-parts``.
MAX_MIME_PARTS = 500

# Lines that can be MIME delimiters ("--" at a line start) in a message the stdlib parser is
# given.  It costs ~25 us per part (350,000 tiny parts in 16 MiB: 8 s), so past this the header
# alone is parsed and the body read as one text and one HTML document (linear), with
# ``limit-parts``.  20,000 parses in ~0.5 s; honest mail has dozens of such lines.
MAX_PARSE_DELIMITERS = 20_000

# The overflow walk: parts past the depth, part-count or decoded-bytes limit are still decoded and
# judged (body text first, then attachments: what a reader clicks first), within this many bytes.
# A byte budget, not a count, so neither many tiny parts nor one huge one can buy a free pass;
# each part is charged at least OVERFLOW_PART_COST, so 8 MiB visits at most 8,192 more parts
# (~0.2 s), enough for a link hidden in part #2000.  What does not fit is left unjudged, but the
# limit signal (weighted to tag) has fired already.
MAX_OVERFLOW_BYTES = 8 * 1024 * 1024
# Bytes a part is charged in the overflow walk at minimum: about the size of a part's own header
# block, and what visiting it costs in time (header parsing) however empty the part is.
OVERFLOW_PART_COST = 1024

# Characters of visible text (all parts together) that the wording rules (lures, obfuscation)
# read.  A 2 MiB text is already far beyond any legible mail, and those rules run dozens of
# patterns over it.  Links are not bound by this: they are taken from the whole of every part
# (MAX_LINK_SCAN_CHARS), so padding in front of a link cannot push it out of sight.
MAX_TEXT_CHARS = 2 * 1024 * 1024

# Characters of decoded text and HTML (all body parts together) searched for links.  The HTML
# parser and the URL pattern are linear, ~10-50 MB/s, so this bounds the cost to about a second;
# it is larger than the size cap, so only text counted twice (parts re-read from a multipart
# without a usable boundary) can run it out.  An over-long part is read as its head and tail
# (half the remaining budget each) and the message gets ``limit-text``.
MAX_LINK_SCAN_CHARS = 48 * 1024 * 1024

# Distinct link hosts judged per message; each costs host parsing, feed look-ups and look-alike
# checks against every protected brand (~0.3 ms).  Links are de-duplicated first (a link adds
# nothing when an already judged one has the same host and the same features) and ordered by what
# a reader clicks (anchors, forms, refreshes of the body before URLs in text, before attachments),
# so padding with repeats of harmless links cannot push the real one out; more distinct hosts
# than this gives ``limit-links``.
MAX_LINKS = 1000

# Distinct links collected per message, once for the body and once for attachments (a URL costs a
# parse, ~5-20 us, when the links to judge are chosen); 20,000 is ~0.3 s and far beyond any
# newsletter (a few hundred).  More gives ``limit-links``.
MAX_LINK_CANDIDATES = 20_000

# Links judged per message in total (a host's first link costs the host checks above, every
# further one ~20 us of anchor and path checks): room for five links with different features per
# judged host on average.
MAX_JUDGED_LINKS = 5 * MAX_LINKS

# Characters handed to the URL pattern at once when searching plain text, cut where no URL can
# run across (whitespace, quotes, angle brackets): lets the scanner stop collecting once
# MAX_LINK_CANDIDATES is reached instead of building millions of links first.
TEXT_LINK_CHUNK = 256 * 1024

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
