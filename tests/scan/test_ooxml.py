"""External targets of Office Open XML documents, read from their relationship parts within
the limits; the signals they raise through the scanner are in test_containers.py."""

from __future__ import annotations

import io
import zipfile

import pytest

from popproxy.scan.extract import Link
from popproxy.scan.ooxml import MAX_RELS_PARTS, ExternalTargets, external_targets, is_ooxml

TYPES = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
RELS = ('<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
        'package/2006/relationships">{rels}</Relationships>')
BAD = "https://paypa1.example/login"


def rel(kind: str, target: str, mode: str = "External") -> str:
    return f'<Relationship Id="r" Type="{TYPES}{kind}" Target="{target}" TargetMode="{mode}"/>'


def targets(parts: dict[str, str], max_bytes: int = 1 << 20) -> ExternalTargets:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in parts.items():
            archive.writestr(name, text)
    with zipfile.ZipFile(buffer) as archive:
        return external_targets(archive, archive.namelist(), lambda: None, max_bytes)


def docx(*rels: str) -> dict[str, str]:
    return {"[Content_Types].xml": "<Types/>", "word/document.xml": "<w:document/>",
            "word/_rels/document.xml.rels": RELS.format(rels="".join(rels))}


def test_is_ooxml() -> None:
    assert is_ooxml(["[Content_Types].xml", "xl/workbook.xml"])
    assert not is_ooxml(["[Content_Types].xml", "mimetype"])
    assert not is_ooxml(["word/document.xml"])


def test_hyperlinks_and_remote_loads() -> None:
    found = targets(docx(rel("hyperlink", BAD),
                         rel("attachedTemplate", "https://evil.test/t.dotm"),
                         rel("oleObject", "\\\\203.0.113.5\\share\\x.bin")))
    assert found.links == [Link(BAD, "href", attachment=True),
                           Link("https://evil.test/t.dotm", "frame", attachment=True),
                           Link("\\\\203.0.113.5\\share\\x.bin", "frame", attachment=True)]
    assert found.remote_loads == ["https://evil.test/t.dotm", "\\\\203.0.113.5\\share\\x.bin"]
    assert not found.limited and found.bytes_read > 0


@pytest.mark.parametrize("relationship", [
    rel("attachedTemplate", "file:///C:/Users/x/Templates/Normal.dotm"),  # the author's disk
    rel("hyperlink", BAD, mode="Internal"),
    rel("hyperlink", "  "),
    rel("styles", BAD),  # neither loaded nor clicked
])
def test_targets_that_are_not_external_links(relationship: str) -> None:
    found = targets(docx(relationship))
    assert (found.links, found.remote_loads) == ([], [])


def test_entity_expansion_is_refused_not_expanded() -> None:
    laughs = ('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
              '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
              '<Relationships><Relationship Target="&b;" TargetMode="External"/></Relationships>')
    parts = docx()
    parts["word/_rels/document.xml.rels"] = laughs
    assert targets(parts).links == []


def test_the_byte_budget_and_part_count_are_limits() -> None:
    assert targets(docx(rel("hyperlink", BAD)), max_bytes=10).limited
    many = docx()
    many.update({f"word/_rels/p{i}.xml.rels": RELS.format(rels="")
                 for i in range(MAX_RELS_PARTS + 1)})
    assert targets(many).limited
