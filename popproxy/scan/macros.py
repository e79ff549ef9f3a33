"""Office macro detection through oletools (olevba), isolated so its quirks stay here."""

from __future__ import annotations

import logging

from oletools.olevba import VBA_Parser

from popproxy.scan.limits import MAX_OFFICE_BYTES

# oletools logs parse trouble at WARNING and above; hostile documents would flood the proxy log.
logging.getLogger("olevba").setLevel(logging.CRITICAL)


def has_vba_macros(filename: str, data: bytes) -> bool:
    """True when an OLE or OOXML document carries VBA macros.

    olevba raises a variety of exceptions on malformed files; a document it cannot parse is
    reported as macro-free here (other rules still see its name and magic bytes).
    """
    if len(data) > MAX_OFFICE_BYTES:
        return False
    parser = None
    try:
        parser = VBA_Parser(filename, data=data)
        return bool(parser.detect_vba_macros())
    except Exception:  # noqa: BLE001 - olevba raises anything from struct.error to its own types
        return False
    finally:
        if parser is not None:
            parser.close()
