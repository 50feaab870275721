"""sendmail - the Sendmail-compatible interface: put a message in maildrop/.

    sendmail [option ...] [recipient ...]

Options and their meaning are Postfix's sendmail(1) (see man/man1/sendmail.1):
the message is read from stdin until EOF or a line with a lone "." (unless
-i/-oi), with CRLF or LF line endings, and streamed record by record into a
new maildrop file (pfy/cli/postdrop.py describes the file and the privilege
boundary), so memory does not grow with the message.  The exit status is
0 only after the file is fsynced and marked complete.

START-UP COST
    sendmail runs once per message, so this module imports nothing at load
    time but os and sys; main.cf is read by a small parser that knows the
    few parameters sendmail needs (read_settings), and the full
    configuration package is loaded only when one of them uses $name
    expansion.  The rarely used modes import what they need when run.
"""

import os
import sys

__all__ = ["Options", "UsageError", "parse_args", "parse_addresses",
           "HeaderExtractor", "read_settings", "main"]

# sysexits.h; sendmail.c passes these to msg_fatal_status().  (Debian's
# Postfix 3.7 actually exits 75 for most of them, because its msg_cleanup
# hook exits EX_TEMPFAIL first; we return the status sendmail.c asks for.)
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_OSERR = 71
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78

# Postfix dsn_mask.h / deliver_request.h values, as written into the file.
DSN_NOTIFY = {"never": 1, "success": 2, "failure": 4, "delay": 8}
DSN_RET = {"full": 1, "hdrs": 2}
DEL_REQ_FLAG_USR_VRFY = 1 << 9      # sendmail -bv
DEL_REQ_FLAG_RECORD = 1 << 10       # sendmail -v

# The main.cf parameters sendmail reads, with the registry's defaults
# (pfy/config/params.py; a unit test keeps these equal to it).
SETTINGS_DEFAULTS = {
    "queue_directory": "/var/spool/pfy",
    "sendmail_fix_line_endings": "always",
    "line_length_limit": "2048",
    "header_size_limit": "102400",
    "pickup_service_name": "pickup",
    "alias_database": "hash:/etc/aliases",
    "authorized_submit_users": "static:anyone",
    "default_verp_delimiters": "+=",
    "verp_delimiter_filter": "-=+",
}
_INT_SETTINGS = ("line_length_limit", "header_size_limit")


class UsageError(Exception):
    """Bad command line; str() is Postfix's message, .status the exit code."""

    def __init__(self, msg: str, status: int = EX_USAGE):
        super().__init__(msg)
        self.status = status


class Options:
    """The parsed command line (defaults: sendmail.c main())."""

    def __init__(self):
        self.mode = "enqueue"        # enqueue newaliases mailq flushq daemon user ignore
        self.extract = False         # -t
        self.dot_ends = True         # SM_FLAG_AEOF; -i / -oi clear it
        self.sender: str | None = None
        self.full_name: str | None = None
        self.config_dir: str | None = None
        self.encoding: str | None = None
        self.dsn_notify = 0
        self.dsn_ret = 0
        self.dsn_envid: str | None = None
        self.rewrite_context = "local"
        self.verp: str | None = None  # delimiters, or "" = the default ones
        self.verbose = 0
        self.trace_flags = 0
        self.alias_database: str | None = None    # -oA
        self.qtime: str | None = None
        self.site_to_flush: str | None = None
        self.id_to_flush: str | None = None
        self.recipients: list[str] = []
        self.warnings: list[str] = []


# Option letters that take an argument (sendmail.c GETOPT_LIST
# "A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx").
_WITH_ARG = frozenset("ABCFLNORVXbefhopqr")
_NO_ARG = frozenset("GIUcimntvx")


def dsn_notify_mask(text: str) -> int:
    """Postfix dsn_notify_mask(): 0 when any word is bad or never is mixed."""
    mask = 0
    for word in text.replace(",", " ").split():
        bit = DSN_NOTIFY.get(word.lower())
        if bit is None:
            return 0
        mask |= bit
    if mask & 1 and mask != 1:
        return 0
    return mask


def parse_args(argv: list[str], prog: str = "sendmail") -> Options:
    """sendmail.c's option loop, as getopt(3) without permutation: the first
    non-option ends the options, so "sendmail x -f y" has three recipients."""
    o = Options()
    if prog == "mailq":
        o.mode = "mailq"
    elif prog == "newaliases":
        o.mode = "newaliases"
    i = 0
    n = len(argv)
    while i < n:
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg == "-q":                     # not getopt compatible
            o.mode = "flushq" if o.mode != "daemon" else o.mode
            i += 1
            continue
        # Postfix 2.2 -V / -Vxy meant VERP; rewritten to -XV with a warning.
        if arg == "-V" and i + 1 < n and len(argv[i + 1]) == 2:
            o.warnings.append("option -V is deprecated with Postfix 2.3; specify -XV instead")
            arg = "-XV"
        elif arg.startswith("-V") and len(arg) == 4:
            o.warnings.append(f"option {arg} is deprecated with Postfix 2.3; "
                              f"specify -X{arg[1:]} instead")
            arg = "-X" + arg[1:]
        if arg == "-XV":
            o.verp = ""
            i += 1
            continue
        i += 1
        j = 1
        while j < len(arg):
            c = arg[j]
            j += 1
            if c in _WITH_ARG:
                if j < len(arg):
                    optarg = arg[j:]
                elif i < n:
                    optarg = argv[i]
                    i += 1
                else:
                    raise UsageError(f"option requires an argument -- '{c}'\n"
                                     f"usage: {prog} [options]")
                _option_with_arg(o, c, optarg)
                break
            if c not in _NO_ARG:
                raise UsageError(f"invalid option -- '{c}'\nusage: {prog} [options]")
            if c == "n":
                raise UsageError("-n option not supported")
            if c == "G":
                o.rewrite_context = "remote"
            elif c == "I":
                o.mode = "newaliases"
            elif c == "i":
                o.dot_ends = False
            elif c == "t":
                o.extract = True
            elif c == "v":
                o.verbose += 1
            # c, m, U, x: ignored, as Postfix.
    o.recipients = argv[i:]
    _check_conflicts(o)
    return o


def _option_with_arg(o: Options, c: str, optarg: str) -> None:
    if c == "B":
        if optarg == "8BITMIME":            # RFC 6152
            o.encoding = "8bit"
        elif optarg == "7BIT":
            o.encoding = "7bit"
        else:
            raise UsageError("-B option needs 8BITMIME or 7BIT")
    elif c == "C":
        # -C names main.cf or its folder (sendmail(1)).
        if os.path.basename(optarg) == "main.cf":
            optarg = os.path.dirname(optarg) or "."
        o.config_dir = optarg
    elif c == "F":
        o.full_name = optarg
    elif c == "N":
        o.dsn_notify = dsn_notify_mask(optarg)
        if not o.dsn_notify:
            o.warnings.append(f'unknown DSN NOTIFY command value "{optarg}"')
            o.warnings.append("bad -N option value -- ignored")
    elif c == "R":
        o.dsn_ret = DSN_RET.get(optarg.lower(), 0)
        if not o.dsn_ret:
            o.warnings.append("bad -R option value -- ignored")
    elif c == "V":
        # RFC 3461 4.4: ENVID is at most 100 characters of xtext-able text.
        if len(optarg) > 100:
            o.warnings.append("too long -V option value -- ignored")
        elif not all(" " <= ch <= "~" for ch in optarg):
            o.warnings.append("bad syntax in -V option value -- ignored")
        else:
            o.dsn_envid = optarg
    elif c == "X":
        if not optarg.startswith("V"):
            raise UsageError(f"unsupported: -X{optarg[:1]}")
        o.verp = optarg[1:]
    elif c == "b":
        mode = {"d": "daemon", "l": "daemon", "h": "ignore", "H": "ignore",
                "i": "newaliases", "m": "enqueue", "p": "mailq",
                "s": "user"}.get(optarg[:1])
        if optarg[:1] == "v":
            o.trace_flags |= DEL_REQ_FLAG_USR_VRFY
        elif mode is None:
            raise UsageError(f"unsupported: -b{optarg[:1]}")
        else:
            o.mode = mode
    elif c in ("f", "r"):
        o.sender = optarg
    elif c == "o":
        if optarg[:1] == "A":
            if len(optarg) == 1:
                raise UsageError("-oA requires pathname")
            o.alias_database = optarg[1:]
        elif optarg[:1] == "i":
            o.dot_ends = False
        # -o7 -o8 -om and any other -oX: ignored, as Postfix.
    elif c == "q":
        if optarg[:1].isdigit():
            o.qtime = optarg
        elif optarg[:1] == "R":
            if len(optarg) == 1:
                raise UsageError("specify: -qRsitename")
            o.site_to_flush = optarg[1:]
        elif optarg[:1] == "I":
            if len(optarg) == 1:
                raise UsageError("specify: -qIqueueid")
            o.id_to_flush = optarg[1:]
        else:
            raise UsageError(f"-q{optarg[:1]} is not implemented")
    # A, L, O, e, h, p: ignored, as Postfix.


def _check_conflicts(o: Options) -> None:
    if o.extract and o.mode != "enqueue":
        raise UsageError("-t can be used only in delivery mode")
    if o.site_to_flush and o.mode != "enqueue":
        raise UsageError("-qR can be used only in delivery mode")
    if o.id_to_flush and o.mode != "enqueue":
        raise UsageError("-qI can be used only in delivery mode")
    if o.trace_flags & DEL_REQ_FLAG_USR_VRFY:
        if o.extract:
            raise UsageError("-t option cannot be used with -bv")
        if o.dsn_notify:
            raise UsageError("-N option cannot be used with -bv")
        if o.dsn_ret:
            raise UsageError("-R option cannot be used with -bv")
        if o.verbose == 1:
            raise UsageError("-v option cannot be used with -bv")
    # One -v asks for a delivery report; more ask for verbose logging.
    if o.verbose == 1 and o.mode == "enqueue":
        o.verbose = 0
        o.trace_flags |= DEL_REQ_FLAG_RECORD


# -- RFC 5322 address lists, as Postfix's tok822 parser sees them -------------

def _tokens(text: str):
    """Tokens of an address list: ('q', unquoted) quoted-string, ('d', text)
    domain literal, ('s', ch) special, ('a', text) atom; comments dropped."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            i += 1
        elif ch == "(":                     # comment, nested (RFC 5322 3.2.2)
            depth = 0
            while i < n:
                if text[i] == "\\":
                    i += 2
                    continue
                if text[i] == "(":
                    depth += 1
                elif text[i] == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        elif ch == '"':
            i += 1
            out = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(text[i])
                i += 1
            i += 1
            yield "q", "".join(out)
        elif ch == "[":
            j = text.find("]", i)
            j = n - 1 if j < 0 else j
            yield "d", text[i:j + 1]
            i = j + 1
        elif ch in "<>@,;:.":
            yield "s", ch
            i += 1
        else:
            j = i
            while j < n and text[j] not in ' \t\r\n()"[<>@,;:.':
                j += 1
            yield "a", text[i:j]
            i = j


def _internalize(tokens) -> str:
    """tok822_internalize(TOK822_STR_DEFL): tokens joined, quotes removed."""
    return "".join(t for _, t in tokens)


def parse_addresses(text: str) -> list[str]:
    """The addresses in an address list, internal form ("b c"@y -> b c@y).

    Group names ("grp: a@x, b@y;") and display names ("Alice <a@x>") are
    dropped; an element without any address yields nothing.  Source routes
    in angle brackets (<@relay:a@x>) keep only the mailbox, as Postfix."""
    result = []
    element: list = []
    angle: list | None = None

    def finish():
        nonlocal element, angle
        toks = angle if angle is not None else element
        if toks:
            result.append(_internalize(toks))
        element, angle = [], None

    in_angle = False
    for kind, tok in _tokens(text):
        if in_angle:
            if kind == "s" and tok == ">":
                in_angle = False
            elif kind == "s" and tok == ":" and any(t == "@" for k, t in angle if k == "s"):
                angle = []                  # end of a source route
            else:
                angle.append((kind, tok))
            continue
        if kind == "s" and tok == "<":
            in_angle, angle = True, []
        elif kind == "s" and tok in ",;":
            finish()
        elif kind == "s" and tok == ":":
            element = []                    # "group:" starts a group
        else:
            element.append((kind, tok))
    finish()
    return result


# Headers whose addresses -t takes (Postfix header_opts.c HDR_OPT_EXTRACT),
# lowercased; the Resent- ones replace the others once one is seen.
_RECIPIENT_HEADERS = frozenset((b"to", b"cc", b"bcc"))
_RESENT_HEADERS = frozenset((b"resent-to", b"resent-cc", b"resent-bcc"))


class HeaderExtractor:
    """sendmail -t: collect recipients from the primary header, line by line.

    feed(line) for each content line (no newline) until it returns False:
    the header ends at an empty line or at a line that is neither a header
    nor a continuation (Postfix's MIME processor with MIME disabled).  The
    lines themselves are not changed (cleanup removes Bcc: headers, per
    message_drop_headers, as in Postfix).
    """

    def __init__(self, header_size_limit: int = 102400):
        self.recipients: list[str] = []
        self.resent_recipients: list[str] = []
        self.resent = False
        self._limit = header_size_limit
        self._current: list[bytes] = []
        self._size = 0
        self._mid_line = False
        self.in_header = True

    def feed(self, line: bytes, continued: bool = False) -> bool:
        """One line, or with continued=True one L piece of a longer line.
        Returns False once the header has ended (the line is body text)."""
        if not self.in_header:
            return False
        if self._mid_line:                      # the rest of a long line
            self._append(line)
        elif self._current and line[:1] in (b" ", b"\t"):
            self._append(b"\n" + line)         # folded header line
        else:
            self._end_header()
            colon = line.find(b":")
            name = line[:colon].rstrip(b" \t") if colon > 0 else b""
            if not name or any(c <= 32 or c >= 127 for c in name):
                self.in_header = False          # empty line or body text
                return False
            self._append(line)
        self._mid_line = continued
        return True

    def _append(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            # Postfix MIME_OPT_REPORT_TRUNC_HEADER with header_size_limit.
            raise ValueError("message header length exceeds safety limit")
        self._current.append(data)

    def _end_header(self) -> None:
        if not self._current:
            return
        text = b"".join(self._current)
        self._current, self._size = [], 0
        colon = text.find(b":")
        name = text[:colon].rstrip(b" \t").lower()
        if name in _RESENT_HEADERS:
            self.resent = True
            into = self.resent_recipients
        elif name in _RECIPIENT_HEADERS and not self.resent:
            into = self.recipients
        else:
            return
        value = text[colon + 1:].decode("utf-8", "surrogateescape")
        into.extend(parse_addresses(value))

    def finish(self) -> list[str]:
        """The extracted recipients (the Resent- ones when there are any)."""
        self._end_header()
        self.in_header = False
        return self.resent_recipients if self.resent else self.recipients


# -- main.cf, the fast way ---------------------------------------------------

def read_settings(config_dir: str | None) -> dict:
    """The SETTINGS_DEFAULTS parameters from main.cf, as Postfix reads them
    (last setting wins, leading whitespace continues a line, # comments).

    A value that uses $name expansion sends us to the full configuration
    package, which is correct for everything and slower to import.
    """
    directory = config_dir or os.environ.get("MAIL_CONFIG") or "/etc/pfy"
    values = dict(SETTINGS_DEFAULTS)
    values["config_directory"] = directory
    try:
        with open(os.path.join(directory, "main.cf"), "rb") as f:
            data = f.read().decode("utf-8", "surrogateescape")
    except FileNotFoundError:
        data = ""
    logical: list[str] = []
    for line in data.split("\n"):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[:1] in (" ", "\t") and logical:
            logical[-1] += " " + stripped
        else:
            logical.append(stripped)
    needs_expansion = False
    for line in logical:
        name, eq, value = line.partition("=")
        name = name.strip()
        if eq and name in SETTINGS_DEFAULTS:
            values[name] = value.strip()
            if "$" in value:
                needs_expansion = True
    if needs_expansion:
        from pfy.config import load_config
        cfg = load_config(directory)
        for name in SETTINGS_DEFAULTS:
            v = cfg[name]
            values[name] = ", ".join(v) if isinstance(v, list) else str(v)
    for name in _INT_SETTINGS:
        try:
            values[name] = int(values[name])
        except ValueError:
            raise UsageError(f"{directory}/main.cf: bad numerical parameter "
                             f"value: {name} = {values[name]}", EX_CONFIG) from None
    return values


# -- enqueue -----------------------------------------------------------------

def _login_and_gecos(uid: int) -> tuple[str | None, str | None]:
    import pwd
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return None, None
    gecos = pw.pw_gecos.split(",", 1)[0]
    # BSD convention (Postfix util/fullname.c): & is the capitalized login.
    gecos = gecos.replace("&", pw.pw_name[:1].upper() + pw.pw_name[1:])
    return pw.pw_name, gecos or None


def enqueue(o: Options, settings: dict, stdin, say) -> int:
    """Write one maildrop file from stdin; returns the exit status."""
    from pfy.cli.postdrop import MaildropFile, wake_pickup
    uid = os.getuid()
    # sendmail.c enqueue(): the friendly early refusal comes first.
    status = _check_submit(settings, uid, say)
    if status:
        return status
    login, gecos = _login_and_gecos(uid)
    if o.sender is not None:
        addrs = parse_addresses(o.sender)
        sender = addrs[0] if addrs else ""
        if len(addrs) > 1:
            say("warning", f"-f option specified malformed sender: {o.sender}")
    elif login is None:
        say("fatal", f"no login name found for user ID {uid}")
        return EX_OSERR
    else:
        sender = login
    who = f"{sender}({uid})"
    fix = settings["sendmail_fix_line_endings"]
    if fix not in ("always", "strict", "never"):
        say("fatal", f"invalid sendmail_fix_line_endings value: {fix}")
        return EX_USAGE
    if o.verp is not None:
        delims = o.verp or settings["default_verp_delimiters"]
        allowed = settings["verp_delimiter_filter"]
        if len(delims) != 2 or any(ch not in allowed for ch in delims):
            say("fatal", f"-V requires two characters from {allowed}")
            return EX_USAGE
        if not sender:
            say("fatal", f"{who}: -V option requires non-null sender address")
            return EX_USAGE
    full_name = o.full_name or os.environ.get("NAME") or gecos
    maildrop = os.path.join(settings["queue_directory"], "maildrop")
    try:
        out = MaildropFile(maildrop)
    except OSError as err:
        say("fatal", f"{who}: unable to create file in {maildrop}: {err.strerror}")
        return EX_TEMPFAIL if err.errno != 2 else EX_UNAVAILABLE
    with out:
        try:
            status = _write_message(o, settings, stdin, out, sender, full_name, who, say)
        except OSError as err:
            say("fatal", f"{who}: error writing queue file: {err.strerror}")
            return EX_TEMPFAIL
        if status:
            return status
        try:
            out.commit()
        except OSError as err:
            say("fatal", f"{who}: error writing queue file: {err.strerror}")
            return EX_TEMPFAIL
    warn = wake_pickup(settings["queue_directory"], settings["pickup_service_name"])
    if warn:
        say("warning", warn)
    if o.trace_flags:
        sys.stdout.write(f"Mail Delivery Status Report will be mailed to <{sender}>.\n")
        sys.stdout.flush()
    return EX_OK


def _submit_allowed(settings: dict, uid: int) -> str | None:
    """authorized_submit_users (Postfix check_user_acl_byuid()): None when
    uid may submit, else its name for the refusal.  The default
    (static:...) costs no import; pickup enforces the same list by the
    file owner, since maildrop/ is writable without this command."""
    acl = settings["authorized_submit_users"]
    if acl.lstrip().startswith("static:"):
        return None
    from pfy.cli._acl import check_user_acl_byuid
    from pfy.config import load_config
    from pfy.tables import open_table
    cfg = load_config(settings["config_directory"])
    return check_user_acl_byuid(cfg.authorized_submit_users, uid,
                                lambda spec: open_table(spec, cfg))


def _check_submit(settings: dict, uid: int, say) -> int:
    """EX_OK, or Postfix's refusal (EX_NOPERM) after saying why."""
    try:
        refused = _submit_allowed(settings, uid)
    except Exception as err:            # TableError, TableTempFail, ConfigError
        say("fatal", f"authorized_submit_users: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
        return EX_TEMPFAIL if type(err).__name__ == "TableTempFail" else EX_CONFIG
    if refused is not None:
        say("fatal", f"User {refused}({uid}) is not allowed to submit mail")
        return EX_NOPERM
    return EX_OK


def _write_message(o, settings, stdin, out, sender, full_name, who, say) -> int:
    notify = b"%d" % o.dsn_notify if o.dsn_notify else None
    if o.dsn_envid:
        out.record(65, b"envelope_id=" + o.dsn_envid.encode())            # A
    if o.dsn_ret:
        out.record(65, b"ret_flags=%d" % o.dsn_ret)
    out.record(65, b"rewrite_context=" + o.rewrite_context.encode())
    if full_name:
        out.record(70, full_name.encode("utf-8", "surrogateescape"))      # F
    out.record(83, sender.encode("utf-8", "surrogateescape"))             # S
    if o.encoding:
        out.record(65, b"encoding=" + o.encoding.encode())
    if o.trace_flags:
        out.record(65, b"trace_flags=%d" % o.trace_flags)
    if o.verp is not None:
        out.record(86, (o.verp or settings["default_verp_delimiters"]).encode())  # V
    count = 0
    for arg in o.recipients:
        # Each argument is parsed like a header (sendmail.c): "a, b" is two
        # recipients, "Name <a@x>" is a@x, and nothing at all is "" .
        addrs = parse_addresses(arg) or [""]
        for addr in addrs:
            if notify:
                out.record(65, b"notify_flags=" + notify)
            out.record(82, addr.encode("utf-8", "surrogateescape"))       # R
            count += 1
    out.record(77, b"")                                                   # M
    extractor = None
    if o.trace_flags & DEL_REQ_FLAG_USR_VRFY:
        if sender:
            out.record(78, b"From: " + sender.encode("utf-8", "surrogateescape"))
        out.record(78, b"Subject: probe")
        if o.recipients:
            out.record(76, b"To:")
            for k, arg in enumerate(o.recipients):
                out.record(78, b"\t" + arg.encode("utf-8", "surrogateescape")
                           + (b"," if k + 1 < len(o.recipients) else b""))
    else:
        if o.extract:
            extractor = HeaderExtractor(settings["header_size_limit"])
        try:
            copy_content(stdin, out, settings["line_length_limit"],
                         settings["sendmail_fix_line_endings"], o.dot_ends, extractor)
        except ValueError as err:
            say("fatal", f"{who}: unable to extract recipients: {err}")
            return EX_DATAERR
    out.record(88, b"")                                                   # X
    if extractor is not None:
        for addr in extractor.finish():
            if notify:
                out.record(65, b"notify_flags=" + notify)
            out.record(82, addr.encode("utf-8", "surrogateescape"))
            count += 1
    if count == 0:
        say("fatal", f"{who}: No recipient addresses found in message header"
            if o.extract else f"{who}: Recipient addresses must be specified on "
            "the command line or via the -t option")
        return EX_USAGE
    out.record(69, b"")                                                   # E
    return EX_OK


def copy_content(stdin, out, line_limit: int, fix_eol: str, dot_ends: bool,
                 extractor: "HeaderExtractor | None") -> None:
    """Stream stdin into N/L records (sendmail.c's rec_streamlf_get loop).

    A line longer than line_length_limit becomes L pieces and a final N;
    leading "From " (and ">From ") lines are dropped; trailing CRs go per
    sendmail_fix_line_endings; a lone "." ends the input unless -i.
    """
    readline = stdin.readline
    strip_cr = {"always": True, "never": False}.get(fix_eol)   # None: decide
    skip_from = True
    prev_cont = False
    record = out.record
    while True:
        # Postfix rec_streamlf_get(line_length_limit): up to the limit, a
        # newline makes N, no newline (long line, or EOF) makes L.
        piece = readline(line_limit)
        if not piece:
            break
        if piece[-1:] == b"\n":
            rtype, data = 78, piece[:-1]                        # N
        else:
            rtype, data = 76, piece                             # L
        if strip_cr is None and rtype == 78:
            strip_cr = data[-1:] == b"\r"
        if skip_from:
            if rtype == 78 and data.lstrip(b">").startswith(b"From "):
                continue
            skip_from = False
        if strip_cr and rtype == 78:
            data = data.rstrip(b"\r")
        if dot_ends and not prev_cont and rtype == 78 and data == b".":
            break
        if extractor is not None and extractor.in_header:
            extractor.feed(data, continued=(rtype == 76))
        record(rtype, data)
        prev_cont = rtype == 76


# -- the other modes ---------------------------------------------------------

def _run_command(name: str, args: list[str], config_dir: str, say) -> int:
    """Replace this process with one of our commands (postqueue, postalias,
    postfix), found next to this sendmail as Postfix finds them in
    command_directory."""
    here = os.path.dirname(os.path.abspath(sys.argv[0]))
    path = os.path.join(here, name)
    if not os.access(path, os.X_OK):
        say("fatal", f"unable to execute {path}: No such file or directory")
        return EX_UNAVAILABLE
    os.environ["MAIL_CONFIG"] = config_dir
    sys.stdout.flush()
    os.execv(path, [name, *args])
    return EX_SOFTWARE      # not reached


def _postqueue(settings: dict, action: str, arg: str | None, say) -> int:
    """sendmail -q, -qRsite, -qIqueue_id: Postfix execs "postqueue -f/-s/-i";
    pfy runs the same code in-process, with the same checks
    (authorized_flush_users, "mail system is down") and messages."""
    from pfy.cli import postqueue
    from pfy.config import load_config
    cfg = load_config(settings["config_directory"])
    func = {"-f": postqueue.flush_queue, "-s": postqueue.flush_site,
            "-i": postqueue.flush_file}[action]
    try:
        return func(cfg) if arg is None else func(cfg, arg)
    except postqueue._Fatal as err:
        say("fatal", str(err))
        return err.status


def _list_queue(settings: dict, o: Options, prog: str) -> int:
    """sendmail -bp / mailq: postqueue -p's listing (authorized_mailq_users
    is checked there, as postqueue(1) does for Postfix's sendmail)."""
    from pfy.cli import _common
    from pfy.cli.mailq import list_queue
    _common.set_program_name(prog)
    sys.stdout.flush()
    return list_queue(settings["config_directory"], o.verbose)


def _stand_alone(settings: dict, o: Options, say) -> int:
    """sendmail -bs: SMTP on stdin/stdout, by smtpd(8) in stand-alone mode
    ("smtpd -S"), exec'ed as the user who ran sendmail: no privilege is
    gained, and smtpd -S hands each message to the maildrop queue as this
    user (postdrop(1)), so pickup stamps it with the real uid exactly as
    for sendmail's own submissions.  sendmail.c checks
    authorized_submit_users here too, before the exec.
    XXX smtpd -S still connects to public/cleanup; it must use
    pfy.cli.postdrop.MaildropSession in stand-alone mode (smtpd's owner)."""
    status = _check_submit(settings, os.getuid(), say)
    if status:
        return status
    from pfy.config import load_config
    from pfy.server.paths import daemon_argv
    cfg = load_config(settings["config_directory"])
    path = os.path.join(cfg.daemon_directory, "smtpd")
    exe, argv = daemon_argv(path)
    if not os.access(exe, os.X_OK) or not os.path.isfile(path):
        say("fatal", f"unable to execute {path}: No such file or directory")
        return EX_UNAVAILABLE
    os.environ["MAIL_CONFIG"] = cfg.config_directory
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(exe, [*argv, "-S", *(["-v"] * o.verbose)])
    except OSError as err:
        say("fatal", f"execvp {path}: {err.strerror}")
    return EX_UNAVAILABLE


def _newaliases(settings: dict, o: Options, say) -> int:
    db = o.alias_database if o.alias_database is not None else settings["alias_database"]
    maps = db.replace(",", " ").split()
    if not maps:
        return EX_OK
    try:
        from pfy.cli import newaliases as _na
    except ImportError:
        _na = None
    build = getattr(_na, "build_aliases", None) if _na else None
    if build is not None:
        return build(maps, settings["config_directory"], o.verbose) or EX_OK
    return _run_command("postalias", ["-v"] * o.verbose + maps,
                        settings["config_directory"], say)


def run(argv: list[str], prog: str, stdin, say) -> int:
    try:
        o = parse_args(argv, prog)
    except UsageError as err:
        lines = str(err).split("\n")
        for extra in lines[:-1]:
            sys.stderr.write(f"{prog}: {extra}\n")
        say("fatal", lines[-1])
        return err.status
    for w in o.warnings:
        say("warning", w)
    try:
        settings = read_settings(o.config_dir)
    except UsageError as err:
        say("fatal", str(err))
        return err.status
    except Exception as err:                # ConfigError from the full loader
        say("fatal", str(err).splitlines()[0] if str(err) else type(err).__name__)
        return EX_CONFIG
    if o.qtime and o.mode != "daemon":
        return EX_OK                        # -q30m: a Sendmail queue runner; ignored
    mode = o.mode
    if mode == "enqueue":
        if o.site_to_flush or o.id_to_flush:
            if o.recipients:
                say("fatal", "flush site requires no recipient" if o.site_to_flush
                    else "flush queue_id requires no recipient")
                return EX_USAGE
            flag, value = (("-s", o.site_to_flush) if o.site_to_flush
                           else ("-i", o.id_to_flush))
            return _postqueue(settings, flag, value, say)
        return enqueue(o, settings, stdin, say)
    needs_none = {"mailq": "display queue mode requires no recipient",
                  "flushq": "flush queue mode requires no recipient",
                  "daemon": "daemon mode requires no recipient",
                  "newaliases": "alias initialization mode requires no recipient",
                  "user": "stand-alone mode requires no recipient"}
    if mode in needs_none and o.recipients:
        say("fatal", needs_none[mode])
        return EX_USAGE
    if mode == "ignore":
        return EX_OK
    if mode == "mailq":
        return _list_queue(settings, o, prog)
    if mode == "flushq":
        return _postqueue(settings, "-f", None, say)
    if mode == "daemon":
        return _run_command("postfix", ["start"], settings["config_directory"], say)
    if mode == "newaliases":
        return _newaliases(settings, o, say)
    return _stand_alone(settings, o, say)          # mode == "user": -bs


def main(argv: list[str] | None = None) -> None:
    from pfy.stdio import reopen_closed_stdio
    reopen_closed_stdio()
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "sendmail"
    if prog not in ("mailq", "newaliases"):
        prog = "sendmail"

    def say(severity: str, msg: str) -> None:
        sys.stderr.write(f"{prog}: {severity}: {msg}\n")

    args = sys.argv[1:] if argv is None else argv
    try:
        status = run(args, prog, sys.stdin.buffer, say)
    except KeyboardInterrupt:
        status = EX_TEMPFAIL
    except OSError as err:
        say("fatal", f"{err.filename + ': ' if err.filename else ''}{err.strerror}")
        status = EX_TEMPFAIL
    sys.stderr.flush()
    raise SystemExit(status)


if __name__ == "__main__":
    main()
