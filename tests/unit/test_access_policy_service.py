"""check_policy_service against a tiny policy server in the test (the
SMTPD_POLICY_README protocol), including failure -> default action."""

import asyncio

from pfy.access import SessionFacts, Stage
from tests.unit.test_access_engine import facts, policy


async def _serve(requests, action):
    async def handle(reader, writer):
        while True:
            attrs = {}
            while True:
                line = await reader.readline()
                if not line:
                    writer.close()
                    return
                line = line.decode().rstrip("\n")
                if not line:
                    break
                k, _, v = line.partition("=")
                attrs[k] = v
            requests.append(attrs)
            writer.write(f"action={action}\n\n".encode())
            await writer.drain()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_policy_server_reject_and_attributes(tmp_path):
    async def main():
        requests = []
        server = await _serve(requests, "DEFER_IF_PERMIT 4.2.0 Greylisted, see http://x")
        port = server.sockets[0].getsockname()[1]
        p = policy(tmp_path, smtpd_recipient_restrictions=f"check_policy_service inet:127.0.0.1:{port}, permit",
                   smtpd_relay_restrictions="reject_unauth_destination")
        f = facts(client_port=4711, sasl_username="", instance="abc.1")
        f.recipient = "u@ours.example"
        v1 = await p.check(Stage.RCPT, f)
        f.recipient = "v@ours.example"
        v2 = await p.check(Stage.RCPT, f)
        p.close()
        server.close()
        return requests, v1, v2
    requests, v1, v2 = asyncio.run(main())
    assert str(v1.reply) == "450 4.2.0 <u@ours.example>: Recipient address rejected: Greylisted, see http://x"
    assert not v2.ok
    r = requests[0]
    assert r["request"] == "smtpd_access_policy" and r["protocol_state"] == "RCPT"
    assert (r["sender"], r["recipient"], r["client_address"], r["client_name"]) == \
        ("a@remote.example", "u@ours.example", "192.0.2.7", "mx.remote.example")
    for name in ("helo_name", "queue_id", "instance", "sasl_method", "ccert_fingerprint",
                 "encryption_protocol", "size", "reverse_client_name", "policy_context", "server_address"):
        assert name in r, name
    assert len(requests) == 2          # one connection reused


def test_policy_server_down_uses_default_action(tmp_path):
    p = policy(tmp_path, smtpd_recipient_restrictions="check_policy_service inet:127.0.0.1:1, permit",
               smtpd_policy_service_retry_delay="0s", smtpd_policy_service_timeout="2s")
    f = facts(recipient="u@ours.example")
    v = asyncio.run(p.check(Stage.RCPT, f))
    assert str(v.reply) == "451 4.3.5 <u@ours.example>: Recipient address rejected: Server configuration problem"
