"""QR codes in images inside zip archives (issue 15): decoded like attached images, within the
image budgets, and a limit reached is a signal, never a cleaner message."""

from __future__ import annotations

import io
import time
import zipfile

import pytest

from popproxy.scan.qr import MAX_QR_IMAGE_BYTES
from popproxy.scan.zips import MAX_IMAGE_MEMBER_BYTES, MAX_IMAGE_MEMBERS, MAX_MEMBERS_READ
from tests.scan.helpers import build, names, scan
from tests.scan.media_helpers import photo, png_declaring, qr_image

_QR_URL = "http://198.51.100.7/login"  # an IP host: link-ip-host when judged
_ZIP = "application/zip"


def _zip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return out.getvalue()


def _padded(image: bytes, size: int) -> bytes:
    """``image`` with zeros after its end, ``size`` bytes in all (readers ignore the tail)."""
    return image + b"\0" * (size - len(image))


def _zip_signals(data: bytes) -> set[str]:
    start = time.monotonic()
    got = names(scan(build(text="see attached", attachments=(("files.zip", data, _ZIP),))))
    assert time.monotonic() - start < 5.0
    return got


@pytest.mark.parametrize(
    ("member", "fmt"), [("code.png", "PNG"), ("scan.JPG", "JPEG"), ("dir/code.gif", "GIF")]
)
def test_qr_in_a_zipped_image_is_a_judged_link(member: str, fmt: str) -> None:
    got = _zip_signals(_zip([(member, qr_image(_QR_URL, fmt=fmt, scale=8))]))
    assert {"link-in-qr", "link-ip-host"} <= got


def test_qr_in_an_image_in_a_zip_in_a_zip_is_judged() -> None:
    inner = _zip([("code.png", qr_image(_QR_URL))])
    assert {"link-in-qr", "link-ip-host"} <= _zip_signals(_zip([("inner.zip", inner)]))


def test_zip_of_photos_raises_nothing() -> None:
    photos = [(f"holiday/{i}.png", photo(64, 48, seed=i)) for i in range(10)]
    assert not _zip_signals(_zip(photos))


def test_image_members_do_not_use_up_the_member_limit() -> None:
    # Honest mail sends a zip of more photos than MAX_MEMBERS_READ: neither a limit that tags
    # nor the link-carrying members after them may be lost to the photos.
    photos = [(f"p{i}.png", photo(30, 30, seed=i)) for i in range(MAX_MEMBERS_READ + 10)]
    readme = ("readme.txt", b"see http://198.51.100.9/x")
    got = _zip_signals(_zip([*photos, readme]))
    assert "link-ip-host" in got
    assert "limit-container" not in got


def test_images_past_the_member_budget_are_counted_skipped() -> None:
    photos = [(f"p{i}.png", photo(30, 30, seed=i)) for i in range(MAX_IMAGE_MEMBERS)]
    got = _zip_signals(_zip([*photos, ("code.png", qr_image(_QR_URL))]))
    assert "link-in-qr" not in got
    assert "qr-skipped" in got  # the skipped image is counted, as attached ones are


def test_image_member_over_the_byte_cap_is_counted_skipped() -> None:
    big = qr_image(_QR_URL) + b"\0" * (MAX_QR_IMAGE_BYTES + 1)  # zlib makes it small
    assert "qr-skipped" in _zip_signals(_zip([("code.png", big)]))


def test_image_bytes_budget_per_message_is_counted_skipped() -> None:
    # Two images of half the budget each (under the per-image cap) use it all up.
    half = MAX_IMAGE_MEMBER_BYTES // 2
    members = [(f"pad{i}.png", _padded(photo(30, 30, seed=i), half)) for i in range(2)]
    got = _zip_signals(_zip([*members, ("code.png", qr_image(_QR_URL))]))
    assert "link-in-qr" not in got
    assert "qr-skipped" in got


def test_decompression_bomb_in_a_zip_is_a_limit() -> None:
    bomb = png_declaring(100_000, 100_000)
    assert "limit-image" in _zip_signals(_zip([("bomb.png", bomb)]))


def test_same_qr_image_twice_is_decoded_once() -> None:
    code = qr_image(_QR_URL)
    got = _zip_signals(_zip([("a.png", code), ("b.png", code)]))
    assert "link-in-qr" in got
    assert "qr-skipped" not in got
