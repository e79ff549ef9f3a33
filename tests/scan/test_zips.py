"""Zip archives opened within hard limits: members of link-carrying kinds handed on as parts,
images within their own budget, Office documents read for their relationships, each limit a
``limit-container`` signal.  The same archives through the scanner are in test_containers.py
and test_zip_images.py."""

from __future__ import annotations

import io
import zipfile

from popproxy.scan.mime import Part
from popproxy.scan.zips import (
    MAX_ARCHIVES_OPENED,
    MAX_MEMBER_BYTES,
    MAX_MEMBERS_READ,
    MAX_NESTING,
    ContainerBudget,
    Opened,
    judge_member,
    open_zip,
)


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _open(data: bytes, level: int = 1,
          budget: ContainerBudget | None = None) -> tuple[Opened, ContainerBudget]:
    budget = budget or ContainerBudget()
    out = Opened()
    part = Part(content_type="application/zip", filename="a.zip", attachment=True,
                payload=data, charset=None, depth=1)
    open_zip(part, "a.zip", budget, level, lambda: None, out)
    return out, budget


def _limits(out: Opened) -> list[str]:
    return [s.detail for s in out.signals if s.name == "limit-container"]


def test_members_that_carry_links_become_parts() -> None:
    out, budget = _open(_zip({"dir/page.HTML": b"<a href='x'>", "notes.txt": b"see x",
                              "tool.exe": b"MZ", "photo.png": b"\x89PNG..."}))
    assert [(p.filename, p.content_type) for p in out.parts] == [
        ("page.HTML", "text/html"), ("notes.txt", "text/plain"), ("photo.png", "image/png")]
    assert (budget.members, budget.images, budget.archives) == (2, 1, 1)
    assert out.signals == []


def test_a_zip_bomb_member_costs_at_most_the_member_cap() -> None:
    out, budget = _open(_zip({"bomb.txt": b"\0" * (MAX_MEMBER_BYTES + 10)}))
    assert len(out.parts[0].payload) == MAX_MEMBER_BYTES == budget.bytes
    assert _limits(out) == [f"a.zip: bomb.txt over {MAX_MEMBER_BYTES} bytes"]


def test_members_past_the_count_are_a_limit() -> None:
    out, _ = _open(_zip({f"m{i}.txt": b"x" for i in range(MAX_MEMBERS_READ + 1)}))
    assert len(out.parts) == MAX_MEMBERS_READ
    assert _limits(out) == [f"a.zip: over {MAX_MEMBERS_READ} members"]


def test_nesting_and_archive_count_are_limits() -> None:
    out, _ = _open(_zip({"x.txt": b"x"}), level=MAX_NESTING)
    assert _limits(out) == [f"a.zip: archive nested {MAX_NESTING} deep"] and not out.parts
    out, _ = _open(_zip({"x.txt": b"x"}), budget=ContainerBudget(archives=MAX_ARCHIVES_OPENED))
    assert _limits(out) == [f"a.zip: over {MAX_ARCHIVES_OPENED} archives"]


def test_an_office_document_is_read_for_its_relationships() -> None:
    rels = (b'<Relationships><Relationship Type="x/attachedTemplate" TargetMode="External" '
            b'Target="https://evil.test/t.dotm"/></Relationships>')
    docx = _zip({"[Content_Types].xml": b"<Types/>", "word/document.xml": b"<w/>",
                 "word/_rels/document.xml.rels": rels})
    out, _ = _open(docx)
    assert [s.name for s in out.signals] == ["attach-office-remote-load"]
    assert [link.url for link in out.links] == ["https://evil.test/t.dotm"]


def test_a_broken_archive_is_left_to_the_name_rules() -> None:
    out, _ = _open(b"PK\x03\x04 not really a zip")
    assert (out.parts, out.signals) == ([], [])


def test_markup_past_its_group_budget_is_read_as_text() -> None:
    budget = ContainerBudget(by_group={"markup": 1024 * 1024})
    out = Opened()
    parent = Part(content_type="application/zip", filename="a.zip", attachment=True,
                  payload=b"", charset=None, depth=0)
    judge_member(parent, "p.html", "text/html", b"<a href='https://x.test/'>", "a.zip",
                 budget, out)
    assert out.parts == [] and out.texts == ["<a href='https://x.test/'>"]
    assert _limits(out) == ["a.zip: p.html past 1048576 bytes of markup"]
