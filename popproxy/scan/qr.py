"""QR codes in images: read with Pillow, decoded with zxing-cpp, within hard limits.

A QR code in a mail is a link the reader follows with a phone, out of sight of the mail client
and of any link rewriting ("quishing").  Every image of a message (inline, attached, or inside a
PDF page) goes through :func:`decode_qr_urls`, which charges one :class:`MediaBudget` per message,
so neither one huge image nor a thousand small ones can buy more decoding than the limits below.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import zxingcpp
from PIL import Image

# Encoded bytes of one image handed to Pillow.  A QR code needs a few kilobytes (a phone photo
# of one a few megabytes); decoding cost grows with the file.  Bigger images are counted as
# skipped, not decoded: honest mail attaches 10 MB photos, so skipping one is no evidence.
MAX_QR_IMAGE_BYTES = 8 * 1024 * 1024

# Pixels an image may declare (width x height) and still be decoded.  Checked from the header,
# before any pixel is decoded: a PNG of 100,000 x 100,000 pixels fits in a few kilobytes of zlib
# and would take 10 GB to decode (a decompression bomb).  48 MP is a phone camera's full size,
# and JPEGs are decoded at reduced scale (Pillow's draft mode: 1/8 of each side at most).
MAX_QR_IMAGE_PIXELS = 48_000_000
# The same for formats decoded in full (PNG, GIF, WebP): 16 MP is a 5K screenshot, ~64 MB as
# RGBA and ~0.1 s to decode.
MAX_QR_FULL_DECODE_PIXELS = 16_000_000

# Declared pixels per encoded byte above which an over-size image is a decompression bomb rather
# than a big picture: deflate compresses at most ~1,032:1 and a 1-bit PNG packs 8 pixels a byte,
# so even a blank page cannot exceed ~8,000; a photo is ~2-10.  Only such images raise
# ``limit-image`` (weighted to tag): a message must not get cleaner by hiding its QR code in an
# image too big to decode, and no honest encoder writes one.
BOMB_PIXELS_PER_BYTE = 8_256

# Longest side an image is scaled down to before zxing looks at it.  A QR code in a mail is
# shown at 100-400 pixels; a screenshot with a QR code in a corner still has modules of several
# pixels at this size, and zxing's cost grows with the pixel count.
QR_MAX_SIDE = 1200

# Smallest side that can hold a QR code: version 1 is 21 x 21 modules.  Smaller images (tracking
# pixels, spacers, bullets) are not decoded and not counted against MAX_QR_IMAGES, so padding a
# message with tiny images cannot use up the budget.
QR_MIN_SIDE = 21

# Distinct images decoded per message (identical images count once).  A phishing mail carries
# one QR code, but may pad it with pictures (a tuning-corpus phish has 14 PNGs); the pictures of
# a mail are small (~0.5 ms each: 711 images of the tuning phish took 0.6 s in all), and big
# ones are bounded by MAX_QR_PIXELS_PER_MESSAGE.  Images past this are counted (``qr-skipped``,
# informational): honest newsletters have more, so the count alone is no evidence.
MAX_QR_IMAGES = 32

# Pixels decoded per message in total (after JPEG draft scaling), over all its images: a 16 MP
# PNG costs ~0.25 s to decode and scale, so twelve of them would cost 3 s.  40 MP is a dozen
# drafted phone photos or two 5K screenshots; past it images are counted in ``qr-skipped``.
MAX_QR_PIXELS_PER_MESSAGE = 40_000_000

# Pixels per module when a code drawn as HTML cells is rendered for zxing: its finder needs a
# few pixels a module; version 40 (177 modules) becomes ~740 px a side, under QR_MAX_SIDE.
GRID_MODULE_PIXELS = 4
# Light modules added around a drawn code: the quiet zone a reader needs (ISO/IEC 18004
# section 7.3.7: 4 modules), which a table drawn without one lacks.
GRID_QUIET_ZONE = 4

# Pillow plugins allowed to read mail images: the formats mail clients show inline.  Fewer
# decoders, less attack surface (TIFF, PSD, EPS and the like are never tried).
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP")

_MAGIC: tuple[bytes, ...] = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")
_QR_FORMATS = zxingcpp.BarcodeFormats(
    [zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.MicroQRCode]
)


@dataclass(slots=True)
class MediaBudget:
    """What one message may still spend on decoding images and PDFs, and what it skipped.

    Attributes:
        pdfs: PDFs read with pypdf so far (bounded by pdf.MAX_PDFS_PER_MESSAGE).
        decoded: distinct images handed to zxing so far.
        pixels: pixels decoded so far (bounded by MAX_QR_PIXELS_PER_MESSAGE).
        skipped: images not decoded because of a limit (count, bytes, pixels).
        bombs: images whose header declares far more pixels than their bytes can hold.
        grid_cells, grids_cut: the search for codes drawn with HTML tables (:mod:`.html_qr`).
    """

    max_images: int = MAX_QR_IMAGES
    pdfs: int = 0
    grid_cells: int = 0  # table cells examined for drawn codes (html_qr.MAX_GRID_CELLS)
    grids_cut: bool = False  # that budget ran out: some tables went unexamined
    decoded: int = 0
    pixels: int = 0
    skipped: int = 0
    bombs: int = 0
    seen: set[int] = field(default_factory=set)

    def take(self, data: bytes, pixels: int) -> bool:
        """Charge one image of ``pixels`` to decode; False when seen already or over budget."""
        key = hash(data)
        if key in self.seen:
            return False
        if self.decoded >= self.max_images or self.pixels + pixels > MAX_QR_PIXELS_PER_MESSAGE:
            self.skipped += 1
            return False
        self.seen.add(key)
        self.decoded += 1
        self.pixels += pixels
        return True


def is_image(data: bytes) -> bool:
    """PNG, JPEG, GIF or WebP by their magic bytes (the declared type is the sender's claim)."""
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def decode_qr_urls(data: bytes, budget: MediaBudget) -> list[str]:
    """The texts of the QR codes in an encoded image (empty when none, or when skipped)."""
    if len(data) > MAX_QR_IMAGE_BYTES:
        budget.skipped += 1
        return []
    try:
        with warnings.catch_warnings():
            # Pillow warns on images over its own pixel limit; ours (admit) is lower and decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
                return _decode_opened(image, data, budget)
    except Image.DecompressionBombError:
        # Over twice Pillow's limit (~179 MP declared): refused in open(), before admit() ran.
        budget.skipped += 1
        if 2 * (Image.MAX_IMAGE_PIXELS or 0) > BOMB_PIXELS_PER_BYTE * len(data):
            budget.bombs += 1
        return []
    except Exception:
        # Pillow raises many kinds on hostile files (OSError, ValueError, SyntaxError,
        # struct.error, EOFError ...): an unreadable image holds no QR code a phone could read.
        return []


def decode_qr_image(image: Image.Image) -> list[str]:
    """The QR texts of an image decoded elsewhere (a PDF's picture).

    The caller admits the declared size (:func:`admit`) and charges the budget
    (:meth:`MediaBudget.take`) before decoding the picture.
    """
    try:
        return _read_codes(image)
    except Exception:
        return []


def decode_module_grid(width: int, height: int, modules: bytes, budget: MediaBudget) -> list[str]:
    """The QR texts of a code given as modules (one byte each, 0 dark, 255 light, row by row):
    drawn as a picture of GRID_MODULE_PIXELS per module with a quiet zone, then decoded."""
    side = GRID_MODULE_PIXELS
    size = ((width + 2 * GRID_QUIET_ZONE) * side, (height + 2 * GRID_QUIET_ZONE) * side)
    if not budget.take(modules, size[0] * size[1]):
        return []
    drawn = Image.frombytes("L", (width, height), modules)
    picture = Image.new("L", size, 255)
    inner = drawn.resize((width * side, height * side), Image.Resampling.NEAREST)
    picture.paste(inner, (GRID_QUIET_ZONE * side, GRID_QUIET_ZONE * side))
    return decode_qr_image(picture)


def admit(width: int, height: int, encoded_bytes: int, budget: MediaBudget, *, cap: int) -> bool:
    """Whether an image of this declared size may be decoded (over ``cap`` pixels: counted)."""
    if width < QR_MIN_SIDE or height < QR_MIN_SIDE:
        return False
    pixels = width * height
    if pixels > cap:
        budget.skipped += 1
        if pixels > BOMB_PIXELS_PER_BYTE * max(encoded_bytes, 1):
            budget.bombs += 1
        return False
    return True


def _decode_opened(image: Image.Image, data: bytes, budget: MediaBudget) -> list[str]:
    width, height = image.size
    # JPEGs decode at reduced scale (draft), so the larger cap applies to them.
    cap = MAX_QR_IMAGE_PIXELS if image.format == "JPEG" else MAX_QR_FULL_DECODE_PIXELS
    if not admit(width, height, len(data), budget, cap=cap):
        return []
    image.draft("L", (QR_MAX_SIDE, QR_MAX_SIDE))  # JPEG: decode at 1/2..1/8 scale; else no-op
    if not budget.take(data, image.size[0] * image.size[1]):
        return []
    return _read_codes(image)


def _read_codes(image: Image.Image) -> list[str]:
    grey = _on_white(image)
    grey.thumbnail((QR_MAX_SIDE, QR_MAX_SIDE))
    found = zxingcpp.read_barcodes(grey, formats=_QR_FORMATS, try_rotate=False)
    return [code.text for code in found if code.text]


def _on_white(image: Image.Image) -> Image.Image:
    """8-bit grey, transparent pixels white (a QR code drawn on a transparent background)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        backdrop.alpha_composite(rgba)
        return backdrop.convert("L")
    return image.convert("L")
