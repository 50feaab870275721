"""Bounce message templates: Postfix's built-in texts and bounce(5) files.

A template has pseudo-headers (Charset, From, Subject, Postmaster-Subject)
and a message text with $name macros.  The four classes are Postfix's:
failure (non-delivery), delay (delay warning), success (NOTIFY=SUCCESS)
and verify (sendmail -bv / -v reports).

    templates = load_templates(cfg.bounce_template_file, warn=log.warning)
    lines = expand_text(templates["failure"], lookup_from_config(cfg))

A bounce_template_file is read once, before chroot (bounce(8)), in
bounce(5) format:

    failure_template = <<EOF
    Charset: us-ascii
    From: MAILER-DAEMON (Mail Delivery System)
    Subject: Undelivered Mail Returned to Sender
    Postmaster-Subject: Postmaster Copy: Undelivered Mail

    This is the mail system at host $myhostname.
    ...
    EOF

Errors are Postfix's: a bad template is ignored with a warning and the
built-in one is used (bounce_template.c); a bad file syntax or an undefined
$name is fatal (TemplateError).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable

__all__ = ["Template", "TemplateError", "DEFAULT_TEMPLATES", "CLASSES",
           "load_templates", "parse_template_file", "expand_text", "lookup_from_config",
           "dump_templates", "expand_templates"]

CLASSES = ("failure", "delay", "success", "verify")
_MAILER_DAEMON = "Mail Delivery System <MAILER-DAEMON>"
_SIGNATURE = "                   The mail system"


class TemplateError(Exception):
    """A fatal template problem; str() names the file and line."""


@dataclass(frozen=True)
class Template:
    cls: str                    # failure / delay / success / verify
    origin: str                 # "[built-in]" or the file name
    charset: str
    from_: str
    subject: str
    postmaster_subject: str | None    # None: the class has no postmaster copy
    text: tuple[str, ...]
    encoding: str = "7bit"      # 8bit when the text is not ASCII

    @property
    def is_failure(self) -> bool:
        return self.cls == "failure"

    @property
    def is_delay(self) -> bool:
        return self.cls == "delay"


# The built-in texts, word for word Postfix's (bounce_templates.c), so
# users and their filters see the same notices.
DEFAULT_TEMPLATES: dict[str, Template] = {
    "failure": Template("failure", "[built-in]", "us-ascii", _MAILER_DAEMON,
                        "Undelivered Mail Returned to Sender",
                        "Postmaster Copy: Undelivered Mail", (
        "This is the mail system at host $myhostname.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. It's attached below.",
        "",
        "For further assistance, please send mail to postmaster.",
        "",
        "If you do so, please include this problem report. You can",
        "delete your own text from the attached returned message.",
        "",
        _SIGNATURE)),
    "delay": Template("delay", "[built-in]", "us-ascii", _MAILER_DAEMON,
                      "Delayed Mail (still being retried)",
                      "Postmaster Warning: Delayed Mail", (
        "This is the mail system at host $myhostname.",
        "",
        "####################################################################",
        "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
        "####################################################################",
        "",
        "Your message could not be delivered for more than $delay_warning_time_hours hour(s).",
        "It will be retried until it is $maximal_queue_lifetime_days day(s) old.",
        "",
        "For further assistance, please send mail to postmaster.",
        "",
        "If you do so, please include this problem report. You can",
        "delete your own text from the attached returned message.",
        "",
        _SIGNATURE)),
    "success": Template("success", "[built-in]", "us-ascii", _MAILER_DAEMON,
                        "Successful Mail Delivery Report", None, (
        "This is the mail system at host $myhostname.",
        "",
        "Your message was successfully delivered to the destination(s)",
        "listed below. If the message was delivered to mailbox you will",
        "receive no further notifications. Otherwise you may still receive",
        "notifications of mail delivery errors from other systems.",
        "",
        _SIGNATURE)),
    "verify": Template("verify", "[built-in]", "us-ascii", _MAILER_DAEMON,
                       "Mail Delivery Status Report", None, (
        "This is the mail system at host $myhostname.",
        "",
        "Enclosed is the mail delivery report that you requested.",
        "",
        _SIGNATURE)),
}

# bounce_template.c: only these two time parameters take a _seconds ..
# _weeks suffix in templates (their value is converted to that unit).
_TIME_PARAMS = ("delay_warning_time", "maximal_queue_lifetime")
_DIVISORS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
_HEADER = re.compile(r"^([!-9;-~]+)[ \t]*:")     # is_header(): a field name, then ':'


def parse_template_file(path: str, text: str, warn: Callable[[str], None] = lambda m: None
                        ) -> dict[str, Template]:
    """Templates defined in one bounce(5) file, keyed by class."""
    out: dict[str, Template] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        lineno = i
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, eq, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not name:
            raise TemplateError(f'{path}, line {lineno}: missing \'=\' after attribute name: "{line}"')
        if value.startswith("<<"):
            marker = value[2:].strip()
            if not marker:
                raise TemplateError(f"{path}, line {lineno}: missing end marker after <<")
            if not marker[0].isalnum():
                raise TemplateError(f"{path}, line {lineno}: malformed end marker after <<")
            body = []
            while i < len(lines) and lines[i] != marker:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                warn(f'{path}, line {i}: missing "{marker}" end marker')
            else:
                i += 1                          # the marker itself
            value = "\n".join(body)
        cls = name[:-len("_template")] if name.endswith("_template") else None
        if cls not in CLASSES:
            warn(f"{path}, line {lineno}: unknown template name: {name} -- ignoring this template")
            continue
        tmpl = _parse_template(DEFAULT_TEMPLATES[cls], path, value, warn)
        if tmpl is not None:
            out[cls] = tmpl
    return out


def _parse_template(base: Template, origin: str, value: str,
                    warn: Callable[[str], None]) -> Template | None:
    """bounce_template_parse_buffer(): None = unusable, keep the built-in."""
    lines = value.split("\n")
    fields = {"charset": base.charset, "from": base.from_, "subject": base.subject,
              "postmaster-subject": base.postmaster_subject}
    i = 0
    while i < len(lines) and (m := _HEADER.match(lines[i])):
        label = m.group(1)
        hval = lines[i][m.end():].strip(" \t:")
        if not hval:
            warn(f'{origin}: empty "{label}" header value in {base.cls} template -- ignoring this template')
            return None
        if not hval.isascii():
            warn(f'{origin}: non-ASCII "{label}" header value in {base.cls} template -- ignoring this template')
            return None
        key = label.lower()
        if key not in fields:
            warn(f'{origin}: unknown "{label}" header label in {base.cls} template -- ignoring this template')
            return None
        if key == "postmaster-subject" and base.postmaster_subject is None:
            warn(f'{origin}: inapplicable "{label}" header label in {base.cls} template -- ignoring this template')
            return None
        fields[key] = hval
        i += 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i >= len(lines):
        warn(f"{origin}: missing message text in {base.cls} template -- ignoring this template")
        return None
    text = tuple(lines[i:])
    encoding = "7bit"
    if not all(t.isascii() for t in text):
        if fields["charset"].lower() == "us-ascii":
            warn(f"{origin}: 8-bit message text in {base.cls} template")
            warn("please specify a charset value other than us-ascii")
            warn("-- ignoring this template for now")
            return None
        encoding = "8bit"
    return replace(base, origin=origin, charset=fields["charset"], from_=fields["from"],
                   subject=fields["subject"], postmaster_subject=fields["postmaster-subject"],
                   text=text, encoding=encoding)


def load_templates(path: str, warn: Callable[[str], None] = lambda m: None
                   ) -> dict[str, Template]:
    """The four templates: the built-ins, overridden by those in path
    (bounce_template_file; "" = built-ins only).  Raises OSError when the
    file cannot be read (bounce(8) makes that fatal) and TemplateError."""
    templates = dict(DEFAULT_TEMPLATES)
    if path:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
        templates.update(parse_template_file(path, text, warn))
    return templates


_MACRO = re.compile(r"\$(?:\{([A-Za-z0-9_]+)\}|\(([A-Za-z0-9_]+)\)|([A-Za-z0-9_]+))")


def lookup_from_config(cfg) -> Callable[[str], str | None]:
    """$name lookup for templates: main.cf parameters (expanded), and the
    time parameters with a unit suffix ($delay_warning_time_hours)."""
    from pfy.config.params import PARAMS

    def lookup(name: str) -> str | None:
        if name in PARAMS or name in cfg.settings():
            return cfg.expand("$" + name)
        return None
    return time_lookup({p: cfg[p] for p in _TIME_PARAMS}, lookup)


def time_lookup(times: dict[str, int], fallback: Callable[[str], str | None],
                warn: Callable[[str], None] = lambda m: None, origin: str = "",
                cls: str = "") -> Callable[[str], str | None]:
    def lookup(name: str) -> str | None:
        for param in _TIME_PARAMS:
            if name.startswith(param + "_"):
                suffix = name[len(param) + 1:]
                if suffix not in _DIVISORS:
                    raise TemplateError(
                        f'{origin}: unrecognized suffix "{suffix}" in parameter "{name}"')
                return str(int(times[param]) // _DIVISORS[suffix])
        return fallback(name)
    return lookup


def expand_text(template: Template, lookup: Callable[[str], str | None]) -> list[str]:
    """The message text with $name, ${name} and $(name) expanded (once:
    a value is not expanded again; a config value is already expanded)."""
    out = []
    for line in template.text:
        def sub(m: re.Match) -> str:
            name = m.group(1) or m.group(2) or m.group(3)
            value = lookup(name)
            if value is None:
                raise TemplateError(
                    f"{template.origin}: undefined $name in {template.cls} template: {line}")
            return value
        if "$$" in line:
            parts = line.split("$$")
            out.append("$".join(_MACRO.sub(sub, p) for p in parts))
        else:
            out.append(_MACRO.sub(sub, line))
    return out


def dump_templates(templates: dict[str, Template]) -> str:
    """postconf -t: the templates in bounce(5) format (bounce_templates_dump)."""
    parts = []
    for cls in CLASSES:
        t = templates[cls]
        body = [f"Charset: {t.charset}", f"From: {t.from_}", f"Subject: {t.subject}"]
        if t.postmaster_subject:
            body.append(f"Postmaster-Subject: {t.postmaster_subject}")
        body.append("")
        body.extend(t.text)
        parts.append(f"{cls}_template = <<EOF\n" + "\n".join(body) + "\nEOF\n")
    return "\n".join(parts)


def expand_templates(templates: dict[str, Template], lookup: Callable[[str], str | None]) -> str:
    """postconf -b: each template's text with $names expanded
    (bounce_templates_expand)."""
    parts = []
    for cls in CLASSES:
        body = expand_text(templates[cls], lookup)
        parts.append(f"expanded_{cls}_text = <<EOF\n" + "\n".join(body) + "\nEOF\n")
    return "\n".join(parts)
