"""anvil on its multi skeleton: the client in pfy.ipc.anvil_client against
the real process, counts released when an smtpd goes away, statistics."""

import asyncio
import textwrap
import time

import pytest

from pfy.ipc.anvil_client import AnvilClient
from pfy.server.testing import start_daemon, unix_listener


@pytest.fixture
def anvil(tmp_path):
    (tmp_path / "main.cf").write_text(textwrap.dedent(f"""\
        queue_directory = {tmp_path}
        maillog_file = {tmp_path}/maillog
        anvil_rate_time_unit = 60s
        anvil_status_update_time = 1s
        """))
    sock, path = unix_listener(tmp_path / "private" / "anvil")
    proc = start_daemon("anvil", config_dir=tmp_path, listen=[sock], args=["-t", "unix", "-l"])
    sock.close()
    yield path, tmp_path / "maillog", proc
    if proc.poll() is None:
        proc.master_exit()
        proc.wait(10)


def test_counts_rates_and_release_on_client_exit(anvil):
    path, maillog, proc = anvil

    async def go():
        a = AnvilClient(path)
        b = AnvilClient(path)
        assert await a.connect("smtp", "192.0.2.7") is not None
        c = await a.connect("smtp", "192.0.2.7")
        assert (c.count, c.rate) == (2, 2)
        c = await b.connect("smtp", "192.0.2.7")
        assert (c.count, c.rate) == (3, 3)
        assert await b.message("smtp", "192.0.2.7") == 1
        assert await b.recipient("smtp", "192.0.2.7") == 1
        assert await b.auth("smtp", "192.0.2.7") == 1
        await b.disconnect("smtp", "192.0.2.7")
        # smtpd "a" dies without saying disconnect: anvil releases its two.
        a.close()
        await asyncio.sleep(0.2)
        r = await b.lookup("smtp", "192.0.2.7")
        assert (r.count, r.rate, r.mail, r.rcpt, r.auth) == (0, 3, 1, 1, 1)
        b.close()
    asyncio.run(go())
    # anvil_status_update_time = 1s: the peak values reach the log.
    deadline = time.time() + 10
    text = ""
    while time.time() < deadline:
        text = maillog.read_text() if maillog.exists() else ""
        if "max connection count" in text:
            break
        time.sleep(0.2)
    assert "postfix/anvil[" in text
    assert "statistics: max connection rate 3/60s for (smtp:192.0.2.7) at " in text
    assert "statistics: max connection count 3 for (smtp:192.0.2.7) at " in text
    assert "statistics: max message rate 1/60s for (smtp:192.0.2.7) at " in text


def test_anvil_stays_after_master_says_nothing_and_exits_on_master_exit(anvil):
    path, maillog, proc = anvil

    async def go():
        a = AnvilClient(path)
        assert (await a.connect("smtp", "192.0.2.1")).count == 1
        a.close()
    asyncio.run(go())
    proc.master_exit()
    assert proc.wait(10) == 0


def test_client_carries_on_when_anvil_is_down(tmp_path):
    async def go():
        a = AnvilClient(str(tmp_path / "private" / "anvil"))
        t0 = time.monotonic()
        assert await a.connect("smtp", "192.0.2.7") is None
        assert await a.message("smtp", "192.0.2.7") is None
        assert await a.disconnect("smtp", "192.0.2.7") is None
        assert time.monotonic() - t0 < 1
    asyncio.run(go())
