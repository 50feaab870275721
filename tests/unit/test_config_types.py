"""Registry types other engineers rely on: qmgr feedback, smtpd_forbid_bare_newline."""

import pytest

from pfy.config import Config, ConfigError, feedback_value
from pfy.config.params import DIFFERS_FROM_POSTFIX, FEEDBACK, PARAMS


def cfg(**settings):
    return Config(settings, {}, "/nonexistent")


@pytest.mark.parametrize("text, want", [
    ("1", (1.0, False)), ("0.5", (0.5, False)), ("1/4", (0.25, False)), (" 1 / 2 ", (0.5, False)),
    ("1/concurrency", (1.0, True)), ("0.5/concurrency", (0.5, True)), ("0", (0.0, False)),
    ("2", None), ("-1", None), ("1/0", None), ("x", None), ("1/window", None), ("", None),
    ("nan", None), ("2/concurrency", None),
])
def test_feedback_syntax(text, want):
    assert feedback_value(text) == want, f"got {feedback_value(text)} want {want}"


def test_feedback_parameters_accept_per_concurrency_form():
    assert PARAMS["default_destination_concurrency_positive_feedback"].type == FEEDBACK
    c = cfg(default_destination_concurrency_negative_feedback="1/concurrency",
            smtp_destination_concurrency_positive_feedback="1/8")
    assert c.default_destination_concurrency_negative_feedback == "1/concurrency"
    assert c.transport_param("smtp", "destination_concurrency_positive_feedback") == "1/8"
    assert c.transport_param("relay", "destination_concurrency_negative_feedback") == "1/concurrency"
    with pytest.raises(ConfigError, match="relay_destination_concurrency_positive_feedback"):
        cfg(relay_destination_concurrency_positive_feedback="3").relay_destination_concurrency_positive_feedback


@pytest.mark.parametrize("text, want", [("normalize", "normalize"), ("YES", "yes"),
                                        ("reject", "reject"), ("no", "no")])
def test_forbid_bare_newline_values(text, want):
    assert cfg(smtpd_forbid_bare_newline=text).smtpd_forbid_bare_newline == want


def test_forbid_bare_newline_default_and_errors():
    assert cfg().smtpd_forbid_bare_newline == "normalize"
    assert "smtpd_forbid_bare_newline" in DIFFERS_FROM_POSTFIX
    with pytest.raises(ConfigError, match="smtpd_forbid_bare_newline"):
        cfg(smtpd_forbid_bare_newline="maybe").smtpd_forbid_bare_newline
