"""sysexits.h exit statuses as delivery status (Postfix global/sys_exits.c),
shared by local(8) and pipe(8)."""

import pytest

from pfy.dsn.sys_exits import SysExitsDetail, sys_exits_code, sys_exits_detail


@pytest.mark.parametrize("code, dsn, text", [
    (64, "5.3.0", "command line usage error"),        # EX_USAGE
    (65, "5.6.0", "data format error"),               # EX_DATAERR
    (66, "5.3.0", "cannot open input"),               # EX_NOINPUT
    (67, "5.1.1", "user unknown"),                    # EX_NOUSER
    (68, "5.1.2", "host name unknown"),               # EX_NOHOST
    (69, "5.3.0", "service unavailable"),             # EX_UNAVAILABLE
    (70, "5.3.0", "internal software error"),         # EX_SOFTWARE
    (71, "4.3.0", "system resource problem"),         # EX_OSERR
    (72, "5.3.0", "critical OS file missing"),        # EX_OSFILE
    (73, "5.2.0", "can't create user output file"),   # EX_CANTCREAT
    (74, "5.3.0", "input/output error"),              # EX_IOERR
    (75, "4.3.0", "temporary failure"),               # EX_TEMPFAIL
    (76, "5.5.0", "remote error in protocol"),        # EX_PROTOCOL
    (77, "5.7.0", "permission denied"),               # EX_NOPERM
    (78, "5.3.5", "local configuration error"),       # EX_CONFIG
    (1, "5.3.0", "unknown mail system error 1"),      # outside sysexits.h
    (63, "5.3.0", "unknown mail system error 63"),
    (79, "5.3.0", "unknown mail system error 79"),
])
def test_sys_exits_detail(code, dsn, text):
    got = sys_exits_detail(code)
    want = SysExitsDetail(code, dsn, text)
    assert got == want, f"got {got} want {want}"
    assert sys_exits_code(code) == (64 <= code <= 78)
