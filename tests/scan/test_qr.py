"""QR codes in inline images, attached images and PDF pages: decoded links are judged like any
other link, and the image limits never make a message cleaner."""

from __future__ import annotations

import base64
import io
import time

import pytest
from PIL import Image

from popproxy.scan import media
from popproxy.scan.qr import (
    MAX_QR_IMAGES,
    MediaBudget,
    decode_qr_urls,
)
from tests.scan.helpers import build, names, scan
from tests.scan.media_helpers import (
    photo,
    png_declaring,
    qr_image,
    related_message,
    transparent_qr,
)

_HTML = '<p>Scan the code to keep your mailbox.</p><img src="cid:code">'


def _signal(verdict_signals: tuple[object, ...], name: str) -> str:
    for sig in verdict_signals:
        if getattr(sig, "name", "") == name:
            return str(getattr(sig, "detail", ""))
    raise AssertionError(f"{name} not raised")


def test_qr_in_inline_png_becomes_a_judged_link() -> None:
    msg = related_message(_HTML, [("code", qr_image("http://198.51.100.7/login"), "png")])
    verdict = scan(msg)
    assert {"link-in-qr", "link-ip-host"} <= names(verdict)
    assert _signal(verdict.signals, "link-ip-host") == "198.51.100.7"
    assert _signal(verdict.signals, "link-in-qr") == "198.51.100.7"


def test_qr_in_attached_jpeg_goes_through_the_shortener_rule() -> None:
    jpeg = qr_image("https://bit.ly/3AbCdEf", fmt="JPEG", scale=8)
    verdict = scan(build(text="see the invoice", attachments=(("scan.jpg", jpeg, "image/jpeg"),)))
    assert {"link-in-qr", "link-shortener"} <= names(verdict)


def test_qr_image_under_a_misleading_type_is_still_decoded() -> None:
    data = qr_image("http://198.51.100.8/x")
    verdict = scan(build(attachments=(("notes.dat", data, "application/octet-stream"),)))
    assert {"link-in-qr", "link-ip-host"} <= names(verdict)


def test_qr_on_a_transparent_background_is_read() -> None:
    msg = related_message(_HTML, [("code", transparent_qr("http://198.51.100.9/t"), "png")])
    assert "link-in-qr" in names(scan(msg))


def test_qr_without_a_web_link_raises_nothing() -> None:
    wifi = qr_image("WIFI:T:WPA;S:office;P:correct-horse;;")
    verdict = scan(related_message(_HTML, [("code", wifi, "png")]))
    assert "link-in-qr" not in names(verdict)
    assert verdict.action == "pass"


def test_plain_pictures_raise_nothing() -> None:
    msg = related_message(_HTML, [("code", photo(300, 200), "png")])
    assert names(scan(msg)) & {"link-in-qr", "qr-skipped", "limit-image"} == set()


def test_decompression_bomb_png_is_bounded_and_tagged() -> None:
    bomb = png_declaring(100_000, 100_000)
    assert len(bomb) < 200
    started = time.monotonic()
    verdict = scan(related_message(_HTML, [("code", bomb, "png")]))
    assert time.monotonic() - started < 2.0
    assert "limit-image" in names(verdict)
    assert verdict.action != "pass"


def test_bomb_just_over_pillows_own_limit_is_ours_too() -> None:
    # 10,000 x 10,000 = 100 MP: Pillow only warns (its error starts at 179 MP).
    budget = MediaBudget()
    assert decode_qr_urls(png_declaring(10_000, 10_000), budget) == []
    assert (budget.skipped, budget.bombs) == (1, 1)


def test_big_honest_image_is_skipped_without_evidence() -> None:
    # 5,000 x 4,000 declared, with as many bytes as a real picture of that size needs at least:
    # over the full-decode cap, but no bomb.
    big = png_declaring(5_000, 4_000, idat_bytes=4_000_000)
    verdict = scan(related_message(_HTML, [("code", big, "png")]))
    assert "qr-skipped" in names(verdict)
    assert "limit-image" not in names(verdict)
    assert verdict.score == 0.0


def test_images_past_the_budget_are_counted() -> None:
    pictures = [(f"p{i}", photo(64, 64, seed=i), "png") for i in range(MAX_QR_IMAGES + 3)]
    verdict = scan(related_message(_HTML, pictures))
    assert _signal(verdict.signals, "qr-skipped") == "3 images not decoded"
    assert verdict.action == "pass"


def test_big_pictures_share_one_pixel_budget() -> None:
    # Four smooth 4000 x 3000 PNGs (12 MP each, a few KB, no bomb): 0.25 s each to decode, so
    # the message's pixel budget stops after three.
    gradient = Image.linear_gradient("L").resize((4000, 3000))
    pictures = []
    for shade in range(4):
        out = io.BytesIO()
        gradient.point(lambda v, s=shade: min(255, v + s)).save(out, format="PNG")
        pictures.append(out.getvalue())
    budget = MediaBudget()
    started = time.monotonic()
    for picture in pictures:
        assert decode_qr_urls(picture, budget) == []
    assert time.monotonic() - started < 3.0
    assert (budget.decoded, budget.skipped, budget.bombs) == (3, 1, 0)


def test_repeated_and_tiny_images_do_not_use_up_the_budget() -> None:
    logo = photo(64, 64, seed=1)
    pixel = photo(1, 1, seed=2)
    padding = [(f"l{i}", logo, "png") for i in range(30)] + [
        (f"t{i}", photo(1, 1 + i % 3, seed=i), "png") for i in range(30)
    ]
    code = ("code", qr_image("http://198.51.100.10/q"), "png")
    verdict = scan(related_message(_HTML, [*padding, ("px", pixel, "png"), code]))
    assert "link-in-qr" in names(verdict)
    assert "qr-skipped" not in names(verdict)


def test_many_images_stay_within_time() -> None:
    pictures = [(f"p{i}", photo(800, 600, seed=i), "png") for i in range(60)]
    started = time.monotonic()
    scan(related_message(_HTML, pictures))
    assert time.monotonic() - started < 3.0


def test_truncated_image_is_not_an_error() -> None:
    broken = qr_image("http://198.51.100.11/x")[:200]
    verdict = scan(related_message(_HTML, [("code", broken, "png")]))
    assert verdict.action != "unscanned"


def test_qr_in_a_data_uri_image_of_the_html_body() -> None:
    # No image part at all: the picture is inside the HTML, where attachment scanners miss it.
    encoded = base64.b64encode(qr_image("http://198.51.100.13/d")).decode("ascii")
    html = f'<p>Scan to verify</p><img src="data:image/png;base64,{encoded}">'
    verdict = scan(build(html=html))
    assert {"link-in-qr", "link-ip-host"} <= names(verdict)


def test_over_size_data_uri_image_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "_MAX_DATA_URI_CHARS", 10_000)
    encoded = base64.b64encode(photo(400, 400, seed=3)).decode("ascii")
    html = f'<p>Scan to verify</p><img src="data:image/png;base64,{encoded + "A" * 10_000}">'
    verdict = scan(build(html=html))
    assert "qr-skipped" in names(verdict)


def test_qr_in_a_pdf_page_image() -> None:
    picture = Image.open(io.BytesIO(qr_image("http://198.51.100.12/pdf"))).convert("RGB")
    out = io.BytesIO()
    picture.save(out, format="PDF")
    verdict = scan(build(attachments=(("invoice.pdf", out.getvalue(), "application/pdf"),)))
    assert {"link-in-qr", "link-ip-host"} <= names(verdict)
