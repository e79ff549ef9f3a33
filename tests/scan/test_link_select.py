"""Which links are judged when there are more than the rules can afford: de-duplicated by
what the rules see, clickable and suspicious ones first, the limit counted in hosts."""

from __future__ import annotations

from popproxy.scan.extract import Link
from popproxy.scan.link_select import LinkPool, select_links


def text(url: str) -> Link:
    return Link(url, "text")


def href(url: str, anchor: str = "") -> Link:
    return Link(url, "href", anchor_text=anchor)


def test_a_pool_keeps_each_link_once_up_to_its_cap() -> None:
    pool = LinkPool(max_candidates=2)
    pool.add([text("https://a.test/"), text("https://a.test/"), text("https://b.test/")])
    assert list(pool.links) == [text("https://a.test/"), text("https://b.test/")]
    assert not pool.overflow
    pool.add([text("https://c.test/")])
    assert pool.overflow and len(pool.links) == 2


def test_links_the_rules_see_alike_count_once() -> None:
    trackers = [href(f"https://trk.example/{i}", "Read more") for i in range(1000)]
    chosen = select_links(trackers, max_hosts=10, max_links=10)
    assert (chosen.links, chosen.hosts, chosen.exhausted) == ([trackers[0]], 1, False)


def test_padding_cannot_push_the_real_link_out() -> None:
    padding = [text(f"https://news{i}.example/") for i in range(50)]
    phish = href("http://198.51.100.7/login", "https://www.paypal.com/")
    chosen = select_links([*padding, phish], max_hosts=3, max_links=100)
    assert chosen.links[0] == phish  # an anchor of the body, and a suspicious one
    assert chosen.hosts == 3 and chosen.exhausted


def test_suspicious_hosts_come_first_within_a_tier() -> None:
    plain = href("https://shop.example/", "Shop")
    ip = href("http://203.0.113.5/", "Shop")
    puny = href("https://xn--pypal-4ve.example/", "Shop")
    chosen = select_links([plain, ip, puny], max_hosts=2, max_links=10)
    assert chosen.links == [ip, puny]


def test_attachment_links_come_after_body_text() -> None:
    inside = Link("https://evil.example/", "text", attachment=True)
    body = text("https://body.example/")
    assert select_links([inside, body], max_hosts=1, max_links=10).links == [body]


def test_the_link_cap_counts_repeats_of_taken_hosts() -> None:
    links = [href("https://a.test/x.pdf", "A"), href("https://a.test/y.exe", "A"),
             href("https://a.test/z.zip", "A")]
    chosen = select_links(links, max_hosts=5, max_links=2)
    assert chosen.links == links[:2] and chosen.exhausted


def test_text_that_is_no_url_is_left_out() -> None:
    assert select_links([text("http://[::1")], max_hosts=5, max_links=5).links == []
