"""QR codes drawn with HTML table cells (issue 15): found, decoded and judged like pictures,
within a cell budget whose exhaustion is a signal, never a cleaner message."""

from __future__ import annotations

import time

import pytest
import segno
from selectolax.lexbor import LexborHTMLParser

from popproxy.scan import html_qr
from popproxy.scan.html_qr import MAX_GRID_SIDE, MIN_GRID_SIDE, find_grids
from popproxy.scan.media import drawn_codes
from popproxy.scan.qr import MediaBudget
from tests.scan.helpers import build, names, scan

_URL = "http://198.51.100.7/login"  # an IP host: link-ip-host when judged
_FOUND = {"link-in-qr", "link-ip-host"}
_DARK, _LIGHT = 'bgcolor="#000000"', 'bgcolor="#ffffff"'


def _table(
    data: str = _URL, *, dark: str = _DARK, light: str = _LIGHT, border: int = 0,
    version: int | None = None, table_attrs: str = 'cellpadding="0" cellspacing="0"',
    row_attrs: str = "",
) -> str:
    """A QR code holding ``data`` drawn as a table, one 3-pixel cell per module."""
    code = segno.make(data, error="m", version=version, micro=False)
    rows = []
    for row in code.matrix_iter(border=border):
        cells = "".join(f'<td width="3" height="3" {dark if v else light}></td>' for v in row)
        rows.append(f"<tr {row_attrs}>{cells}</tr>")
    return f"<table {table_attrs}>{''.join(rows)}</table>"


def _body(html: str) -> set[str]:
    start = time.monotonic()
    got = names(scan(build(html=f"<p>Scan the code to keep your mailbox.</p>{html}")))
    assert time.monotonic() - start < 5.0
    return got


def test_table_drawn_code_is_a_judged_link() -> None:
    assert _body(_table()) >= _FOUND


@pytest.mark.parametrize(
    ("dark", "light"),
    [
        ('style="background-color:#000"', 'style="background-color:#fff"'),
        ('style="background: black"', 'style="background: white !important"'),
        ('style="background-color: rgb(17, 17, 17)"', 'style="background-color:rgb(238,238,238)"'),
        ('bgcolor="000000"', 'bgcolor="FFFFFF"'),  # legacy colours without "#"
    ],
)
def test_every_way_of_writing_the_colours_is_read(dark: str, light: str) -> None:
    assert _body(_table(dark=dark, light=light)) >= _FOUND


def test_light_cells_taking_the_row_colour_are_read() -> None:
    assert _body(_table(light="", row_attrs='bgcolor="white"')) >= _FOUND


def test_light_cells_taking_the_table_colour_are_read() -> None:
    assert _body(_table(light="", table_attrs='bgcolor="#fff"')) >= _FOUND


def test_runs_drawn_with_colspan_are_read() -> None:
    code = segno.make(_URL, error="m", micro=False)
    rows = []
    for row in code.matrix_iter(border=4):
        cells, run, last = [], 0, None
        for v in [*row, None]:
            if v != last and run:
                colour = "black" if last else "white"
                cells.append(f'<td colspan="{run}" bgcolor="{colour}"></td>')
                run = 0
            run, last = run + 1, v
        rows.append(f"<tr>{''.join(cells)}</tr>")
    assert _body(f"<table>{''.join(rows)}</table>") >= _FOUND


def test_largest_code_with_quiet_zone_is_read() -> None:
    assert _body(_table(version=40, border=4)) >= _FOUND


def test_code_in_a_layout_table_cell_is_read() -> None:
    layout = f"<table><tr><td>Dear customer</td><td>{_table()}</td></tr></table>"
    assert _body(layout) >= _FOUND


def test_code_in_an_html_attachment_is_read() -> None:
    page = f"<html><body>{_table()}</body></html>".encode()
    got = names(scan(build(text="see attached", attachments=(("scan.html", page, "text/html"),))))
    assert got >= _FOUND


def test_layout_tables_raise_nothing() -> None:
    zebra = "".join(
        f'<tr bgcolor="{"#f0f0f0" if r % 2 else "#ffffff"}">'
        + "".join(f"<td>row {r} col {c}</td>" for c in range(25)) + "</tr>"
        for r in range(30)
    )
    layout = "<table>" + "<tr><td>Hello</td><td>World</td></tr>" * 40 + "</table>"
    assert not _body(f"<table>{zebra}</table>{layout}")


def test_table_wider_than_any_code_is_no_grid() -> None:
    row = "<tr>" + f"<td {_DARK}></td><td {_LIGHT}></td>" * MAX_GRID_SIDE + "</tr>"
    tree = LexborHTMLParser(f"<table>{row * 30}</table>")
    assert find_grids(tree, MediaBudget()) == []


def test_cell_budget_ran_out_is_a_limit_not_cleaner(monkeypatch: pytest.MonkeyPatch) -> None:
    # A grid-shaped decoy first uses up the budget; the code after it goes unexamined.
    monkeypatch.setattr(html_qr, "MAX_GRID_CELLS", 2_000)
    decoy = "<table>" + ("<tr>" + f"<td {_LIGHT}></td>" * 40 + "</tr>") * 60 + "</table>"
    got = _body(decoy + _table())
    assert "link-in-qr" not in got
    assert "limit-html" in got


def test_huge_grid_of_cells_is_bounded() -> None:
    # 400 x 400 cells: past MAX_GRID_SIDE, rejected after counting MAX_GRID_SIDE + 1 rows
    # (and the table itself).
    row = "<tr>" + f"<td {_DARK}></td>" * 400 + "</tr>"
    budget = MediaBudget()
    start = time.monotonic()
    assert find_grids(LexborHTMLParser(f"<table>{row * 400}</table>"), budget) == []
    assert time.monotonic() - start < 2.0
    assert budget.grid_cells <= MAX_GRID_SIDE + 2


def test_same_code_twice_is_decoded_once() -> None:
    budget = MediaBudget()
    tree = LexborHTMLParser(_table() + _table())
    grids = find_grids(tree, budget)
    assert len(grids) == 2
    found = drawn_codes(grids, "html table", budget, lambda: None)
    assert budget.decoded == 1
    assert len(found.links) == 1


def _matrix(border: int = 4) -> list[list[int]]:
    """The modules of the code for ``_URL``, row by row (1 dark), with a quiet zone."""
    code = segno.make(_URL, error="m", micro=False)
    return [list(row) for row in code.matrix_iter(border=border)]


def _vertical_runs() -> str:
    """The code drawn column by column: each vertical run of one colour is one cell with a
    rowspan, placed in the row where the run starts (the HTML table model puts each row's
    cells into the slots the runs from above leave free)."""
    matrix = _matrix()
    rows: list[list[str]] = [[] for _ in matrix]
    for x in range(len(matrix[0])):
        y = 0
        while y < len(matrix):
            run = 1
            while y + run < len(matrix) and matrix[y + run][x] == matrix[y][x]:
                run += 1
            colour = "black" if matrix[y][x] else "white"
            rows[y].append(f'<td rowspan="{run}" bgcolor="{colour}"></td>')
            y += run
    return "<table>" + "".join(f"<tr>{''.join(cells)}</tr>" for cells in rows) + "</table>"


def test_runs_drawn_with_rowspan_are_read() -> None:
    """Merging modules down a column hid the code: a table with any rowspan was no grid."""
    assert _body(_vertical_runs()) >= _FOUND


def test_one_merged_module_does_not_hide_the_code() -> None:
    matrix = _matrix()
    x = next(x for x in range(len(matrix[0])) if matrix[10][x] and matrix[11][x])
    rows = []
    for y, row in enumerate(matrix):
        cells = []
        for cx, v in enumerate(row):
            if (y, cx) == (10, x):
                cells.append('<td rowspan="2" bgcolor="#000000"></td>')
            elif (y, cx) != (11, x):
                cells.append(f"<td {_DARK if v else _LIGHT}></td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    assert _body(f"<table>{''.join(rows)}</table>") >= _FOUND


def test_rowspan_zero_spans_to_the_end_of_the_table() -> None:
    grid = "".join(
        "<tr>" + ('<td rowspan="0" bgcolor="black"></td>' if y == 0 else "")
        + "<td bgcolor='white'></td>" * (MIN_GRID_SIDE - 1) + "</tr>"
        for y in range(MIN_GRID_SIDE)
    )
    grids = find_grids(LexborHTMLParser(f"<table>{grid}</table>"), MediaBudget())
    assert len(grids) == 1
    assert grids[0].modules[:: grids[0].width] == bytes(MIN_GRID_SIDE)  # the first column: all dark


def test_slots_filled_by_rowspans_count_against_the_budget() -> None:
    """One cell spanning every row and column below would otherwise fill 200 x 200 slots for
    one unit of budget, in every one of many tables."""
    table = ('<table><tr><td rowspan="0" colspan="200" bgcolor="black"></td></tr>'
             + "<tr></tr>" * (MAX_GRID_SIDE - 1) + "</table>")
    budget = MediaBudget()
    start = time.monotonic()
    find_grids(LexborHTMLParser(table * 200), budget)
    assert budget.grids_cut  # the budget ran out: a limit, reported
    assert time.monotonic() - start < 5.0
