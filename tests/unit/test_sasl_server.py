"""SaslServer over the built-in table and over a scripted Dovecot auth
server: mechanisms offered, the exchange, Postfix's replies and log lines."""

import asyncio
import base64

import pytest

from pfy.config import load_config
from pfy.sasl import Challenge, Failure, SaslConfigError, SaslServerFactory, Success
from pfy.sasl.userdb import set_password

FAST = {"log_n": 4}


def _cfg(tmp_path, **settings):
    text = "".join(f"{k} = {v}\n" for k, v in settings.items())
    (tmp_path / "main.cf").write_text(text)
    return load_config(str(tmp_path))


@pytest.fixture
def builtin(tmp_path):
    set_password(str(tmp_path / "sasl_users"), "alice", "s3cret", **FAST)
    set_password(str(tmp_path / "sasl_users"), "carol@example.com", "pw", **FAST)
    return lambda **kw: SaslServerFactory.from_config(_cfg(tmp_path, smtpd_sasl_type="pfy", **kw))


def run(coro):
    return asyncio.run(coro)


def plain(authcid, password, authzid=""):
    return f"{authzid}\0{authcid}\0{password}".encode()


def test_unsupported_type_is_a_config_error(tmp_path):
    with pytest.raises(SaslConfigError, match="smtpd_sasl_type"):
        SaslServerFactory.from_config(_cfg(tmp_path, smtpd_sasl_type="cyrus"))  # Postfix's default
    with pytest.raises(SaslConfigError, match="smtpd_sasl_security_options"):
        SaslServerFactory.from_config(_cfg(tmp_path, smtpd_sasl_type="pfy",
                                           smtpd_sasl_security_options="bogus"))


def test_the_built_in_table_is_the_default_type(tmp_path):
    # pfy has no Cyrus: its default smtpd_sasl_type is the built-in table.
    with pytest.raises(SaslConfigError, match="sasl_users.lmdb"):
        SaslServerFactory.from_config(_cfg(tmp_path))


def test_missing_user_table_names_the_file(tmp_path):
    with pytest.raises(SaslConfigError, match="sasl_users.lmdb"):
        SaslServerFactory.from_config(_cfg(tmp_path, smtpd_sasl_type="pfy"))


def test_mechanisms_follow_security_options(builtin):
    async def go():
        f = builtin(smtpd_sasl_security_options="noanonymous, noplaintext",
                    smtpd_sasl_tls_security_options="noanonymous")
        s = await f.session(client_addr="192.0.2.1")
        assert s.mechanisms() == ()
        s.tls_established()
        assert s.mechanisms() == ("PLAIN", "LOGIN")
        f2 = builtin(smtpd_sasl_mechanism_filter="login")
        assert (await f2.session()).mechanisms() == ("LOGIN",)
    run(go())


def test_plain_success(builtin):
    async def go():
        s = await builtin().session(client_addr="192.0.2.1")
        out = await s.start("plain", plain("alice", "s3cret"))
        assert isinstance(out, Success) and out.username == "alice"
        assert (out.reply.code, out.reply.status) == (235, "2.7.0")
        assert (s.username, s.method) == ("alice", "PLAIN")
    run(go())


def test_plain_with_challenge_and_own_authzid(builtin):
    async def go():
        s = await builtin().session()
        out = await s.start("PLAIN", None)
        assert out == Challenge(b"")
        out = await s.step(plain("alice", "s3cret", authzid="alice"))
        assert isinstance(out, Success)
    run(go())


def test_plain_other_authzid_is_refused(builtin):
    async def go():
        s = await builtin().session()
        out = await s.start("PLAIN", plain("alice", "s3cret", authzid="root"))
        assert isinstance(out, Failure) and out.reply.code == 535
    run(go())


def test_wrong_password_reply_and_log_hold_no_auth_data(builtin):
    async def go():
        s = await builtin().session(client_addr="192.0.2.1", namaddr="h.example[192.0.2.1]")
        data = plain("alice", "wrongpass")
        out = await s.start("PLAIN", data)
        assert isinstance(out, Failure) and not out.temporary
        assert (out.reply.code, out.reply.status) == (535, "5.7.8")
        assert out.reply.text == "Error: authentication failed: authentication failure"
        assert out.log == ("h.example[192.0.2.1]: SASL PLAIN authentication failed: "
                           "authentication failure, sasl_username=alice")
        for secret in ("wrongpass", base64.b64encode(data).decode()):
            assert secret not in out.log and secret not in out.reply.text
        assert s.username is None
    run(go())


def test_unknown_user_fails_like_wrong_password(builtin):
    async def go():
        s = await builtin().session()
        out = await s.start("PLAIN", plain("mallory", "x"))
        assert out.reply.text == "Error: authentication failed: authentication failure"
    run(go())


def test_login_dialogue(builtin):
    async def go():
        s = await builtin().session()
        assert await s.start("LOGIN", None) == Challenge(b"Username:")
        assert await s.step(b"alice") == Challenge(b"Password:")
        out = await s.step(b"s3cret")
        assert isinstance(out, Success) and s.method == "LOGIN"
    run(go())


def test_malformed_plain_is_a_535_not_an_exception(builtin):
    async def go():
        s = await builtin().session()
        out = await s.start("PLAIN", b"garbage-without-nuls")
        assert isinstance(out, Failure) and out.reply.code == 535
    run(go())


def test_realm_is_appended_for_lookup(builtin):
    async def go():
        s = await builtin(smtpd_sasl_local_domain="example.com").session()
        out = await s.start("PLAIN", plain("carol", "pw"))
        assert isinstance(out, Success) and out.username == "carol"
    run(go())


def test_mechanism_not_offered_is_refused(builtin):
    async def go():
        s = await builtin(smtpd_sasl_security_options="noplaintext").session()
        out = await s.start("PLAIN", plain("alice", "s3cret"))
        assert out.reply.text == "Error: authentication failed: Invalid authentication mechanism"
    run(go())


# ---------------------------------------------------------------------------
# Dovecot protocol against a scripted auth server

class FakeDovecot:
    def __init__(self):
        self.lines = []
        self.users = {"bob": "pw"}
        self.mechs = "MECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nMECH\tANONYMOUS\tanonymous\n" \
                     "MECH\tSECRET\tprivate\n"
        self.login_user = {}

    async def handle(self, reader, writer):
        writer.write(("VERSION\t1\t2\n" + self.mechs +
                      "SPID\t1\nCUID\t1\nCOOKIE\tabc\nDONE\n").encode())
        while True:
            raw = await reader.readline()
            if not raw:
                return
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            f = line.split("\t")
            if f[0] == "AUTH":
                rid, mech = f[1], f[2]
                args = dict(a.split("=", 1) if "=" in a else (a, "") for a in f[3:])
                if mech == "PLAIN":
                    if "resp" not in args:
                        writer.write(f"CONT\t{rid}\t\n".encode())
                    else:
                        writer.write(self._plain(rid, base64.b64decode(args["resp"])))
                else:
                    writer.write(f"CONT\t{rid}\t{base64.b64encode(b'Username:').decode()}\n".encode())
            elif f[0] == "CONT":
                rid, data = f[1], base64.b64decode(f[2])
                if rid in self.login_user:
                    user = self.login_user.pop(rid)
                    ok = self.users.get(user) == data.decode()
                    writer.write((f"OK\t{rid}\tuser={user}\n" if ok else
                                  f"FAIL\t{rid}\tuser={user}\n").encode())
                elif b"\0" in data:
                    writer.write(self._plain(rid, data))
                else:
                    self.login_user[rid] = data.decode()
                    writer.write(f"CONT\t{rid}\t{base64.b64encode(b'Password:').decode()}\n".encode())
            await writer.drain()

    def _plain(self, rid, data):
        _, user, pw = data.decode().split("\0")
        if user == "temp":
            return f"FAIL\t{rid}\tuser={user}\ttemp\treason=backend down\n".encode()
        if self.users.get(user) == pw:
            return f"OK\t{rid}\tuser={user}\n".encode()
        return f"FAIL\t{rid}\tuser={user}\n".encode()


def _dovecot_factory(tmp_path, path, **kw):
    return SaslServerFactory.from_config(_cfg(tmp_path, smtpd_sasl_type="dovecot",
                                              smtpd_sasl_path=path, **kw))


def test_dovecot_exchange(tmp_path):
    fake = FakeDovecot()

    async def go():
        sock = str(tmp_path / "auth")
        server = await asyncio.start_unix_server(fake.handle, sock)
        f = _dovecot_factory(tmp_path, sock)
        s = await f.session(client_addr="192.0.2.9", client_port=40000, server_addr="192.0.2.1",
                            server_port=587, tls_active=True)
        # private mechanisms are never offered; noanonymous drops ANONYMOUS
        assert s.mechanisms() == ("PLAIN", "LOGIN")
        out = await s.start("PLAIN", plain("bob", "pw"))
        assert isinstance(out, Success) and out.username == "bob"
        req = fake.lines[-1].split("\t")
        assert req[0] == "AUTH" and req[2] == "PLAIN"
        for field in ("service=smtp", "nologin", "lip=192.0.2.1", "rip=192.0.2.9",
                      "lport=587", "rport=40000", "secured"):
            assert field in req, f"got {req} want {field}"
        # wrong password: Dovecot sends no reason
        s2 = await f.session(client_addr="192.0.2.9")
        out = await s2.start("PLAIN", plain("bob", "nope"))
        assert isinstance(out, Failure) and out.reply.code == 535
        assert out.reply.text == "Error: authentication failed: (reason unavailable)"
        assert out.log.endswith("SASL PLAIN authentication failed: (reason unavailable), "
                                "sasl_username=bob")
        assert "secured" not in fake.lines[-1]
        # LOGIN through CONT
        s3 = await f.session()
        assert await s3.start("LOGIN", None) == Challenge(b"Username:")
        assert await s3.step(b"bob") == Challenge(b"Password:")
        assert isinstance(await s3.step(b"pw"), Success)
        # PLAIN with an empty challenge first
        s4 = await f.session()
        assert await s4.start("PLAIN", None) == Challenge(b"")
        assert isinstance(await s4.step(plain("bob", "pw")), Success)
        # temporary failure -> 454
        out = await (await f.session()).start("PLAIN", plain("temp", "x"))
        assert out.temporary and (out.reply.code, out.reply.status) == (454, "4.7.0")
        assert out.reply.text == "Temporary authentication failure: backend down"
        # concurrent sessions share one connection
        outs = await asyncio.gather(*[
            (await f.session()).start("PLAIN", plain("bob", "pw")) for _ in range(5)])
        assert all(isinstance(o, Success) for o in outs)
        f.close()
        server.close()
    run(go())


def test_dovecot_down_offers_nothing_and_fails_temporarily(tmp_path):
    async def go():
        f = _dovecot_factory(tmp_path, str(tmp_path / "no-such-socket"))
        s = await f.session()
        assert s.mechanisms() == ()
        out = await s.start("PLAIN", plain("bob", "pw"))
        assert isinstance(out, Failure)
    run(go())


def test_dovecot_restart_is_survived(tmp_path):
    fake = FakeDovecot()

    async def go():
        sock = str(tmp_path / "auth")
        server = await asyncio.start_unix_server(fake.handle, sock)
        f = _dovecot_factory(tmp_path, sock)
        s = await f.session()
        assert isinstance(await s.start("PLAIN", plain("bob", "pw")), Success)
        server.close()
        await server.wait_closed()
        f.dovecot._writer.close()          # the server side went away
        await asyncio.sleep(0.05)
        server = await asyncio.start_unix_server(fake.handle, sock)
        s = await f.session()
        assert isinstance(await s.start("PLAIN", plain("bob", "pw")), Success)
        f.close()
        server.close()
    run(go())


def test_dovecot_master_socket_is_detected(tmp_path):
    async def master(reader, writer):
        writer.write(b"VERSION\t1\t2\nSPID\t7\n")
        await writer.drain()
        await reader.read()

    async def go():
        sock = str(tmp_path / "auth-master")
        server = await asyncio.start_unix_server(master, sock)
        f = _dovecot_factory(tmp_path, sock)
        assert await f.connect() is False
        server.close()
    run(go())
