"""main.cf reading and typed access (pfy.config)."""

import pytest

from pfy.config import ConfigError, UndeclaredParameter, config_directory, load_config


def write(tmp_path, text):
    (tmp_path / "main.cf").write_text(text)
    return str(tmp_path)


def test_missing_main_cf_is_all_defaults(tmp_path):
    cfg = load_config(str(tmp_path))
    assert cfg.maximal_queue_lifetime == 5 * 86400
    assert cfg.smtpd_banner.endswith(" ESMTP Postfix")
    assert cfg.default_database_type == "lmdb"
    assert cfg.config_directory == str(tmp_path)
    assert cfg.raw("myorigin") is None


def test_continuation_comments_last_wins(tmp_path):
    d = write(tmp_path, "myorigin = a\n  b\n# c\n  c\nrelayhost = x\nrelayhost = [y]:25\n")
    warnings = []
    cfg = load_config(d, warn=warnings.append)
    assert cfg.raw("myorigin") == "a  b  c"
    assert cfg.relayhost == "[y]:25"
    assert any("overriding earlier entry: relayhost=x" in w for w in warnings)


def test_types(tmp_path):
    d = write(tmp_path, "maximal_queue_lifetime = 2\nminimal_backoff_time = 5m\n"
                        "biff = No\nmessage_size_limit = 1000\n"
                        "mydestination = $myhostname, { a b }\nmydomain = example.org\n"
                        "myhostname = mx.$mydomain\nheader_checks = regexp:/x pcre:/y\n")
    cfg = load_config(d)
    assert cfg.maximal_queue_lifetime == 2 * 86400      # default unit: days
    assert cfg.minimal_backoff_time == 300
    assert cfg.biff is False
    assert cfg.message_size_limit == 1000
    assert cfg["mydestination"] == ["mx.example.org", "a b"]
    assert cfg.header_checks == ["regexp:/x", "pcre:/y"]


@pytest.mark.parametrize("line, words", [
    ("biff = maybe", "bad boolean configuration: biff = maybe"),
    ("message_size_limit = 10M", "bad numerical configuration"),
    ("maximal_queue_lifetime = 5y", "bad time value or unit"),
    ("alias_maps = /etc/aliases", 'need "type:name"'),
    ("myorigin = $a$", "empty macro name"),
])
def test_bad_values_name_file_and_line(tmp_path, line, words):
    d = write(tmp_path, "# x\n" + line + "\n")
    cfg = load_config(d)
    name = line.split()[0]
    with pytest.raises(ConfigError) as info:
        cfg[name]
    assert words in str(info.value)
    assert f"{d}/main.cf, line 2" in str(info.value)


def test_syntax_error_names_line(tmp_path):
    d = write(tmp_path, "a = 1\nbad line\n")
    with pytest.raises(ConfigError, match=r"main.cf, line 2: missing '=' after attribute name"):
        load_config(d)


def test_undeclared_parameter(tmp_path):
    cfg = load_config(str(tmp_path))
    with pytest.raises(UndeclaredParameter):
        cfg["no_such_parameter"]
    with pytest.raises(AttributeError):
        cfg.no_such_parameter


def test_overrides_and_transport_params(tmp_path):
    d = write(tmp_path, "default_destination_concurrency_limit = 7\nrelay_destination_concurrency_limit = 3\n")
    cfg = load_config(d)
    assert cfg.transport_param("relay", "destination_concurrency_limit") == 3
    assert cfg.transport_param("smtp", "destination_concurrency_limit") == 7
    assert cfg.transport_param("local", "destination_concurrency_limit") == 2   # built in
    assert cfg.mailman_time_limit == 1000        # $command_time_limit
    o = cfg.with_overrides({"syslog_name": "postfix/submission", "smtpd_tls_security_level": "encrypt"})
    assert o.syslog_name == "postfix/submission" and cfg.syslog_name == "postfix"
    assert o.smtpd_tls_security_level == "encrypt"


def test_compatibility_level_defaults(tmp_path):
    assert load_config(str(tmp_path)).smtputf8_enable is False
    cfg = load_config(write(tmp_path, "compatibility_level = 3.6\n"))
    assert cfg.smtputf8_enable is True
    assert cfg.smtpd_relay_restrictions == ["permit_mynetworks", "permit_sasl_authenticated",
                                            "defer_unauth_destination"]


def test_config_directory(monkeypatch):
    monkeypatch.delenv("MAIL_CONFIG", raising=False)
    assert config_directory() == "/etc/pfy"
    monkeypatch.setenv("MAIL_CONFIG", "/x")
    assert config_directory() == "/x"
    assert config_directory("/y") == "/y"


def test_myhostname_gets_mydomain(tmp_path, monkeypatch):
    from pfy.config import _dynamic
    monkeypatch.setattr(_dynamic, "gethostname", lambda: "box")
    cfg = load_config(write(tmp_path, "mydomain = example.net\n"))
    assert cfg.myhostname == "box.example.net"
    cfg = load_config(write(tmp_path, "myhostname = a.b.example\n"))
    assert cfg.mydomain == "b.example"
