"""man/man5/postconf.5 is generated from the registry and must be current."""

from pathlib import Path

from pfy.config.manpage import render


def test_committed_postconf_5_is_current():
    page = Path(__file__).parents[2] / "man" / "man5" / "postconf.5"
    assert page.read_text() == render(), "run: python3 -m pfy.config.manpage > man/man5/postconf.5"


def test_every_parameter_is_documented():
    text = render()
    assert "\\fBmaximal_queue_lifetime\\fR (time, default: 5d)" in text
    assert "The default time unit is d." in text
