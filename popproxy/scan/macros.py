"""Office macro detection through oletools (olevba), isolated so its quirks stay here."""

from __future__ import annotations

import logging
import warnings
from functools import cache
from typing import Any

from popproxy.scan.limits import MAX_OFFICE_BYTES


@cache
def _vba_parser() -> Any:
    # Imported on first use: olevba builds pyparsing grammars at import (slow, and noisy with
    # deprecation warnings on current pyparsing), and most mail carries no Office document.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from oletools.olevba import VBA_Parser  # type: ignore[import-untyped]
    # oletools logs parse trouble at WARNING; hostile documents would flood the proxy log.
    logging.getLogger("olevba").setLevel(logging.CRITICAL)
    return VBA_Parser


def has_vba_macros(filename: str, data: bytes) -> bool:
    """True when an OLE or OOXML document carries VBA macros.

    olevba raises a variety of exceptions on malformed files; a document it cannot parse is
    reported as macro-free here (other rules still see its name and magic bytes).
    """
    if len(data) > MAX_OFFICE_BYTES:
        return False
    parser = None
    try:
        parser = _vba_parser()(filename, data=data)
        return bool(parser.detect_vba_macros())
    except Exception:
        return False
    finally:
        if parser is not None:
            parser.close()
