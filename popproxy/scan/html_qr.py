"""QR codes drawn with HTML tables: the cells' background colours are the modules.

A QR code need not be an image: a ``<table>`` of 21 x 21 (up to 177 x 177) cells, each a few
pixels wide with a black or white ``bgcolor`` or ``background`` style, shows one just as well,
and no image scanner ever sees it.  :func:`find_grids` looks at the tables of a parsed document
for that shape (many rows of the same width, nearly every cell dark or light) and returns the
module grids, which :mod:`.qr` renders and decodes like any picture.

Each table is examined through its own rows and their own cells only (a nested table is
examined as a table of its own), so every cell is visited once and the walk is linear; a
per-message budget of cells (``MediaBudget.grid_cells``) bounds it, and a budget used up is
reported (``limit-html``): a grid drawn past it is evidence, not a way to hide.  Cells spanning
columns or rows take their slots as the HTML table model places them (``colspan``, ``rowspan``:
a row's own cells take the slots left free by cells from the rows above), so merging modules
hides nothing; the slots a rowspan fills count against the budget as cells do.  Grids drawn with
``<div>`` elements are not looked for: where a div ends a row is a matter of CSS layout (widths,
floats, inline-block wrapping), which only a layout engine computes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from selectolax.lexbor import LexborHTMLParser, LexborNode

from popproxy.scan.qr import MediaBudget

# Modules per side of the smallest QR code (version 1, ISO/IEC 18004 section 5.3.1); Micro QR
# (11-17) is left out: nobody draws one in a mail.  Tables with fewer rows or columns are
# layout, not codes.
MIN_GRID_SIDE = 21

# Rows or columns of a table taken as a code: version 40 is 177 modules a side, and a drawn
# code may carry its quiet zone (4 modules each side, section 7.3.7) and a border: 200.
MAX_GRID_SIDE = 200

# Table cells (and rows) examined per message, over all its HTML: three version-40 codes with
# their quiet zones.  Each costs a few attribute lookups (~1 us), so this is ~0.1 s at most.
MAX_GRID_CELLS = 100_000

# Cells of a grid that may lack a background of their own (and of their row and table) and
# still count: one in fifty.  A drawn code sets every cell; a layout table sets few.
_UNSET_PER_CELLS = 50

# Luminance (ITU-R BT.601 weights, 0-255) at or below which a colour is dark, at or above
# which it is light; in between is neither (a grey a phone camera might read either way).
_DARK_MAX = 96
_LIGHT_MIN = 160
_DARK, _LIGHT, _UNKNOWN = 0, 255, -1

_NAMED = {"black": 0, "white": 255}
_STYLE_BACKGROUND = re.compile(r"(?i)background(?:-color)?[\t\n\f\r ]*+:[\t\n\f\r ]*+([^;]{1,64})")
_HEX = re.compile(r"#?+([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
_RGB = re.compile(r"(?i)rgba?\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})")
# Leading blanks, then digits.  The look-behind starts a match at the first blank of a run only,
# so a search over a long run of blanks stays linear (test_regex_budget).
_DIGITS = re.compile(r"(?<![\t\n\f\r ])[\t\n\f\r ]*+(\d{1,4})")
_SECTIONS = frozenset({"tbody", "thead", "tfoot"})
_CELLS = frozenset({"td", "th"})


@dataclass(frozen=True, slots=True)
class ModuleGrid:
    """A drawn code: ``width`` x ``height`` modules, row by row, 0 dark and 255 light."""

    width: int
    height: int
    modules: bytes


def find_grids(tree: LexborHTMLParser, budget: MediaBudget) -> list[ModuleGrid]:
    """The tables of ``tree`` drawn as a code, within the message's cell budget."""
    out: list[ModuleGrid] = []
    for table in tree.css("table"):
        if budget.grid_cells >= MAX_GRID_CELLS:
            budget.grids_cut = True
            break
        grid = _grid(table, budget)
        if grid is not None:
            out.append(grid)
    return out


def _rows(table: LexborNode) -> list[LexborNode]:
    """The table's own rows (a browser puts them in a tbody; a nested table's are its own)."""
    rows: list[LexborNode] = []
    for child in table.iter():
        for row in child.iter() if child.tag in _SECTIONS else (child,):
            if row.tag == "tr":
                rows.append(row)
                if len(rows) > MAX_GRID_SIDE:
                    return rows  # too many for a code: counting on would cost for nothing
    return rows


def _grid(table: LexborNode, budget: MediaBudget) -> ModuleGrid | None:
    rows = _rows(table)
    budget.grid_cells += len(rows) + 1  # the table itself: 100,000 empty tables cost too
    if not MIN_GRID_SIDE <= len(rows) <= MAX_GRID_SIDE:
        return None
    backdrop = _colour(table.attributes)
    width = 0
    modules = bytearray()
    unset = 0
    covered: dict[int, list[int]] = {}  # column -> [rows still covered, colour] from above
    for row in rows:
        line = _row(row, backdrop, budget, covered)
        if line is None or (width and len(line) != width):
            return None  # not a grid: a row too wide, or of another width
        width = width or len(line)
        if width < MIN_GRID_SIDE:
            return None
        unset += line.count(_UNKNOWN)
        if unset * _UNSET_PER_CELLS > width * len(rows):
            return None
        modules.extend(_LIGHT if v == _UNKNOWN else v for v in line)
    if _DARK not in modules:
        return None
    return ModuleGrid(width, len(rows), bytes(modules))


def _row(row: LexborNode, backdrop: int, budget: MediaBudget,
         covered: dict[int, list[int]]) -> list[int] | None:
    """The modules of one row (a cell spanning columns is that many modules); None when the
    row is no grid row or the cell budget runs out.  ``covered``: the slots that cells of
    earlier rows span down into (HTML "forming a table": a cell takes the next free slot);
    updated for the next row."""
    own = _colour(row.attributes)
    fallback = own if own != _UNKNOWN else backdrop
    line: list[int] = []
    spans_down: list[tuple[int, int, int, int]] = []  # first column, columns, rows, colour
    for cell in row.iter():
        if cell.tag not in _CELLS:
            continue
        budget.grid_cells += 1
        if not _take_covered(line, covered, budget):
            return None
        attrs = cell.attributes
        colour = _colour(attrs)
        colour = colour if colour != _UNKNOWN else fallback
        columns, rows = _span(attrs.get("colspan")), _row_span(attrs.get("rowspan"))
        if rows > 1:
            spans_down.append((len(line), columns, rows - 1, colour))
        line.extend([colour] * columns)
        if len(line) > MAX_GRID_SIDE:
            return None
    if not _take_covered(line, covered, budget):  # slots after this row's last cell
        return None
    budget.grid_cells += len(covered)  # moving them down is work too: bounded by the budget
    _move_down(covered, spans_down)
    return line


def _take_covered(line: list[int], covered: dict[int, list[int]], budget: MediaBudget) -> bool:
    """Extend ``line`` with the covered slots at its end, each counted as a cell; False when
    the row grows past any code or the budget runs out."""
    while (above := covered.get(len(line))) is not None:
        line.append(above[1])
        budget.grid_cells += 1
        if len(line) > MAX_GRID_SIDE:
            return False
    if budget.grid_cells > MAX_GRID_CELLS:
        budget.grids_cut = True
        return False
    return True


def _move_down(covered: dict[int, list[int]], spans_down: list[tuple[int, int, int, int]]) -> None:
    """One row on: spans from above cover one row less; this row's start covering."""
    for column in [c for c, above in covered.items() if above[0] <= 1]:
        del covered[column]
    for above in covered.values():
        above[0] -= 1
    for first, columns, rows, colour in spans_down:
        for column in range(first, min(first + columns, MAX_GRID_SIDE + 1)):
            covered[column] = [rows, colour]


def _span(value: str | None) -> int:
    """A colspan value as browsers read it (HTML "rules for parsing non-negative integers";
    0 or junk is 1), capped past the widest grid."""
    if value is None:
        return 1
    digits = _DIGITS.match(value)
    number = int(digits.group(1)) if digits else 1
    return min(max(number, 1), MAX_GRID_SIDE + 1)


def _row_span(value: str | None) -> int:
    """A rowspan value as browsers read it: as a colspan, but 0 spans every row below (HTML
    "forming a table", to the end of its row group: here, of the table)."""
    if value is not None and (digits := _DIGITS.match(value)) and int(digits.group(1)) == 0:
        return MAX_GRID_SIDE + 1
    return _span(value)


def _colour(attrs: dict[str, str | None]) -> int:
    """The class (dark, light or unknown) of an element's own background colour."""
    style = attrs.get("style") or ""
    m = _STYLE_BACKGROUND.search(style) if style else None
    value = m.group(1) if m else attrs.get("bgcolor")
    if not value:
        return _UNKNOWN
    return _classify(value.strip().lower())


@lru_cache(maxsize=256)  # a drawn code repeats two colour values; ~10x faster per cell
def _classify(value: str) -> int:
    rgb = _RGB.match(value)
    if rgb:
        r, g, b = (min(int(x), 255) for x in rgb.groups())
    else:
        token = value.split(maxsplit=1)[0] if value.split() else ""  # "#000 !important"
        if token in _NAMED:
            return _NAMED[token]
        hexm = _HEX.fullmatch(token)
        if not hexm:
            return _UNKNOWN
        digits = hexm.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        r, g, b = (int(digits[i : i + 2], 16) for i in (0, 2, 4))
    luma = (299 * r + 587 * g + 114 * b) // 1000
    if luma <= _DARK_MAX:
        return _DARK
    return _LIGHT if luma >= _LIGHT_MIN else _UNKNOWN
