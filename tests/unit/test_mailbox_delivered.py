"""delivered_to_set(): the Delivered-To loop check that local, virtual and
pipe share."""

from pfy.mailbox import delivered_to_set


def test_values_of_the_header_section_only_case_folded():
    lines = [b"Received: x", b"DELIVERED-TO: Alice@Example.ORG", b"delivered-to:bob@x",
             b"", b"Delivered-To: body@x"]
    assert delivered_to_set(lines) == {"alice@example.org", "bob@x"}


def test_non_ascii_address_matches_its_own_header():
    """The envelope address is decoded with surrogateescape and compared
    lower-cased as text: the header value must fold the same way (ASCII
    folding of the bytes missed 'JÖRG' against 'jörg', so a loop went
    undetected)."""
    seen = delivered_to_set(["Delivered-To: JÖRG@Example".encode(), b""])
    assert "jörg@example" in seen
    raw = b"Delivered-To: \xff@x"                       # not UTF-8
    assert b"\xff@x".decode("utf-8", "surrogateescape").lower() in delivered_to_set([raw])


def test_header_scan_is_bounded():
    lines = [b"X-Filler: y"] * 10000 + [b"Delivered-To: late@x"]
    assert delivered_to_set(lines) == set()
