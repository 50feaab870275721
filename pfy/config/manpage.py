"""Generate man/man5/postconf.5 from the registry:

    python3 -m pfy.config.manpage > man/man5/postconf.5

tests/unit/test_config_manpage.py fails when the committed page is stale.
"""

import sys

from pfy.config.params import DIFFERS_FROM_POSTFIX, DYNAMIC, PARAMS, TIME

__all__ = ["render"]


def _roff(text: str) -> str:
    text = text.replace("\\", "\\e")
    if text.startswith((".", "'")):
        text = "\\&" + text
    return text


def render() -> str:
    out = [
        '.TH POSTCONF 5 "" "pfy" "File Formats"',
        ".SH NAME",
        "postconf \\- pfy configuration parameters",
        ".SH SYNOPSIS",
        "postconf \\fIparameter\\fR ...",
        ".SH DESCRIPTION",
        "The main.cf file holds the parameters below, one \"name = value\" a line;",
        "lines starting with whitespace continue the previous line, lines starting",
        "with # are comments, and the last setting of a name wins. $name, ${name},",
        "${name?value}, ${name:value}, ${name?{a}:{b}} and",
        "${{a} == {b} ? {c} : {d}} expand as in Postfix. Defaults are Postfix",
        "3.7's except where noted. Time values take a unit suffix s, m, h, d or w.",
        ".SH PARAMETERS",
    ]
    for name in sorted(PARAMS):
        p = PARAMS[name]
        default = "computed: " + DYNAMIC[name] if name in DYNAMIC else (p.default or "empty")
        out.append(".TP")
        out.append(f"\\fB{_roff(name)}\\fR " + _roff(f"({p.type}, default: {default})"))
        out.append(_roff(p.doc))
        if p.type == TIME:
            out.append(_roff(f"The default time unit is {p.unit}."))
        if name in DIFFERS_FROM_POSTFIX:
            theirs, why = DIFFERS_FROM_POSTFIX[name]
            out.append(_roff(f"Postfix's default is \"{theirs}\": {why}."))
    out += [".SH \"SEE ALSO\"", "postconf(1), master(5)", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(render())
