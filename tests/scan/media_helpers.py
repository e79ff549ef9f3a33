"""Images, QR codes and PDFs written by the QR and PDF tests (no corpus data)."""

from __future__ import annotations

import email.policy
import io
import struct
import zlib
from email.message import EmailMessage

import segno
from PIL import Image


def qr_image(text: str, *, fmt: str = "PNG", scale: int = 6, mode: str = "L") -> bytes:
    """A QR code holding ``text`` as an encoded image file."""
    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="png", scale=scale, border=4)
    image = Image.open(io.BytesIO(buf.getvalue())).convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def transparent_qr(text: str) -> bytes:
    """A QR code drawn in black on a fully transparent background (RGBA PNG)."""
    buf = io.BytesIO()
    segno.make(text, error="m").save(buf, kind="png", scale=6, border=4, light=None)
    return buf.getvalue()


def photo(width: int, height: int, seed: int = 0) -> bytes:
    """A plain picture without a QR code (distinct per ``seed``)."""
    image = Image.new("RGB", (width, height), (seed % 256, (seed * 7) % 256, 90))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def png_declaring(width: int, height: int, idat_bytes: int = 64) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, followed by a small IDAT.

    With few bytes for billions of pixels this is a decompression bomb; Pillow reads the size
    from the header without decoding a pixel.
    """

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\x00" * idat_bytes)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def related_message(html: str, images: list[tuple[str, bytes, str]], subject: str = "hi") -> bytes:
    """HTML in multipart/related with inline images (cid, bytes, image subtype)."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "Alice <alice@example.org>"
    msg["To"] = "bob@example.net"
    msg["Subject"] = subject
    msg.set_content(html, subtype="html")
    for cid, data, subtype in images:
        msg.add_related(
            data, maintype="image", subtype=subtype, cid=f"<{cid}>", disposition="inline"
        )
    return msg.as_bytes()


def pdf_file(objects: list[bytes], *, root: int = 1, trailer_extra: bytes = b"") -> bytes:
    """A PDF with a classic cross-reference table: ``objects[i]`` is object number i + 1."""
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root %d 0 R " % (len(objects) + 1, root) + trailer_extra)
    out.write(b">>\nstartxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def stream(data: bytes, extra: bytes = b"", *, compress: bool = True) -> bytes:
    """A stream object body, FlateDecode-compressed unless told otherwise."""
    if compress:
        data = zlib.compress(data)
        extra += b" /Filter /FlateDecode"
    return b"<< /Length %d%s >>\nstream\n" % (len(data), extra) + data + b"\nendstream"


def hex_string(text: str) -> bytes:
    """A PDF hex string: invisible to a search for "/URI (" in the file's bytes."""
    return b"<" + text.encode("latin-1").hex().encode("ascii") + b">"


def one_page_pdf(
    *,
    text: str = "",
    annots: bytes = b"[]",
    resources: bytes = b"<< >>",
    pages: int = 1,
    catalog: bytes = b"",
) -> bytes:
    """A PDF whose first page shows ``text`` (compressed content stream) and has ``annots``;
    ``pages`` - 1 more blank pages follow it; ``catalog`` is added to the document catalog."""
    content = b"BT /F1 12 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET"
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    res = resources[:-2] + b" /Font << /F1 5 0 R >> >>"
    first = b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources "
    kids = b" ".join([b"3 0 R"] + [b"6 0 R"] * (pages - 1))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R " + catalog + b" >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
        first + res + b" /Annots " + annots + b" >>",
        stream(content),
        font,
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
    ]
    return pdf_file(objects)


def link_annotation(action: bytes) -> bytes:
    """A link annotation (direct object) with the given action dictionary."""
    return b"<< /Type /Annot /Subtype /Link /Rect [72 700 300 720] /A " + action + b" >>"
