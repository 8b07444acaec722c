# mailnetd end to end: the real mailnetd on port 0 (SMTP in, POP3 out, one store), mail sent
# with python3 smtplib and swaks, fetched with python3 poplib, over plain TCP, STARTTLS/STLS and
# implicit TLS with --tls-self-signed (clients pinned to the printed fingerprint); --exit-after,
# open mode's loopback rule, users mode, and the try-this commands it prints.
import json
import os
import poplib
import re
import shlex
import smtplib
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

MAILNETD = t.program_binary("mailnetd")
SENDER = "sender@example.org"
EX_USAGE = 64


def login(tc, port, user, password=None, context=None, stls=False, implicit=False, pin=None):
    """A poplib session logged in as `user` (open mode: the password is the address): plain,
    STLS (stls) or implicit TLS (implicit) with `context`. With `pin`, the TLS peer's
    certificate must be the one whose SHA-256 that is."""
    password = user if password is None else password
    if implicit:
        p = poplib.POP3_SSL(t.HOST, port, timeout=10, context=context)
    else:
        p = poplib.POP3(t.HOST, port, timeout=10)
    try:
        if stls:
            p.stls(context=context)
        if pin is not None:
            t.assert_pinned(tc, p.sock, pin)
        p.user(user)
        p.pass_(password)
        return p
    except BaseException:
        p.close()
        raise


def fetch_all(tc, port, user, password=None, **tls):
    """Logs in (see login()) and returns [message bytes] (CRLF, as RETR gave them after
    dot-unstuffing); the session ends with QUIT."""
    return t.retr_all_and_quit(login(tc, port, user, password, **tls))


def body(fetched):
    """A fetched message without the Return-Path: and Received: of its delivery."""
    return t.split_trace(fetched)[2]


def files_in(store, mailbox):
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(store, mailbox, sub)
        if os.path.isdir(d):
            out += [os.path.join(d, n) for n in os.listdir(d)]
    return out


class Mailnetd(unittest.TestCase):
    def setUp(self):
        self.tmp = t.TempDir()
        self.dir = self.tmp.path
        self.store = os.path.join(self.dir, "store")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.stop()
        self.tmp.cleanup()

    def start(self, **kw):
        srv = t.Mailnetd(MAILNETD, self.store, workdir=self.dir, **kw)
        self.servers.append(srv)
        return srv.start()

    def send(self, port, to, message, sender=SENDER):
        with smtplib.SMTP(t.HOST, port, timeout=10) as s:
            refused = s.sendmail(sender, to, message)
            self.assertEqual(refused, {})

    def test_smtplib_two_recipients_each_get_one_copy_with_the_sent_bytes(self):
        srv = self.start()
        msg = t.smtp_message("two recipients", t.DOT_LINES, to="alice@example.org, Bob@Example.NET")
        self.send(srv.port, ["alice@example.org", "Bob@Example.NET"], msg)
        # Each mailbox is the address with its ASCII letters lowercased: one copy each.
        self.assertEqual(len(files_in(self.store, "alice@example.org")), 1)
        self.assertEqual(len(files_in(self.store, "bob@example.net")), 1)
        for login in ("alice@example.org", "BOB@EXAMPLE.NET"):  # any case: the same mailbox
            got = fetch_all(self, srv.pop3_port, login)
            self.assertEqual(len(got), 1, login)
            self.assertEqual(body(got[0]), msg, f"{login}: fetched == sent after the trace headers")
        # A wrong password (open mode: the address itself) is refused.
        with self.assertRaises(poplib.error_proto):
            fetch_all(self, srv.pop3_port, "alice@example.org", "secret")
        err = srv.stderr()
        self.assertRegex(err, r"smtp \S+ delivered from=sender@example.org rcpts=2 octets=\d+ "
                              r"to=alice@example.org,Bob@Example.NET")
        self.assertRegex(err, r"pop3 alice@example.org from 127.0.0.1 quit: 0 of 1 messages deleted")

    def test_swaks(self):
        (swaks,) = t.require_programs("swaks")
        srv = self.start()
        msg = t.smtp_message("swaks", [b"Hello from swaks.", b".a dot-leading line", b"Bye."],
                             to="carol@example.org")
        p = t.swaks_send(swaks, srv.port, SENDER, ["carol@example.org"], msg, os.path.join(self.dir, "swaks.eml"))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        got = fetch_all(self, srv.pop3_port, "carol@example.org")
        self.assertEqual([body(m) for m in got], [msg])

    def pop3_transports(self, srv):
        """(name, port, login() keywords) for plain POP3, STLS and POP3S on a server started with
        tls_self_signed and implicit_tls: poplib pinned to the printed fingerprint over TLS."""
        ctx = t.pinned_context()
        return [("plain", srv.pop3_port, {}),
                ("stls", srv.pop3_port, dict(context=ctx, stls=True, pin=srv.fingerprint)),
                ("pop3s", srv.pop3s_port, dict(context=ctx, implicit=True, pin=srv.fingerprint))]

    def test_an_open_session_keeps_its_snapshot_and_the_next_one_sees_new_mail(self):
        # Over plain POP3, STLS and POP3S: the snapshot is the session's, whatever carries it.
        srv = self.start(tls_self_signed=True, implicit_tls=True)
        for name, port, tls in self.pop3_transports(srv):
            with self.subTest(transport=name):
                box = f"dave-{name}@example.org"
                first = t.smtp_message(f"first {name}", [b"one"], to=box)
                second = t.smtp_message(f"second {name}", [b"two"], to=box)
                self.send(srv.port, [box], first)
                p = login(self, port, box, **tls)
                try:
                    self.assertEqual(p.stat()[0], 1)
                    self.send(srv.port, [box], second)  # delivered while the session is open
                    self.assertEqual(p.stat()[0], 1, "the open session does not see the new message")
                    self.assertEqual(len(p.list()[1]), 1)
                    self.assertEqual(body(b"\r\n".join(p.retr(1)[1]) + b"\r\n"), first)
                    with self.assertRaises(poplib.error_proto):  # there is no message 2 in it
                        p.retr(2)
                    p.quit()
                finally:
                    p.close()
                got = fetch_all(self, port, box, **tls)
                self.assertEqual([body(m) for m in got], [first, second], "the next session sees both, in order")

    def test_dele_and_quit_removes_a_dropped_session_removes_nothing(self):
        # Over plain POP3, STLS and POP3S (poplib's close() drops the TCP connection without
        # QUIT and, over TLS, without a close_notify).
        srv = self.start(tls_self_signed=True, implicit_tls=True)
        for name, port, tls in self.pop3_transports(srv):
            with self.subTest(transport=name):
                box = f"erin-{name}@example.org"
                msg = t.smtp_message(f"to delete {name}", [b"bye"], to=box)
                self.send(srv.port, [box], msg)
                # DELE, then the connection drops without QUIT: nothing is deleted (RFC 1939 6).
                p = login(self, port, box, **tls)
                p.dele(1)
                p.close()
                deadline = time.monotonic() + 10
                while True:  # the server notices the drop and releases the mailbox lock
                    try:
                        got = fetch_all(self, port, box, **tls)
                        break
                    except poplib.error_proto as e:
                        if b"IN-USE" not in e.args[0] or time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)
                self.assertEqual([body(m) for m in got], [msg], "a dropped session deletes nothing")
                self.assertEqual(len(files_in(self.store, box)), 1)
                # DELE and QUIT: gone, from POP3 and from the Maildir.
                p = login(self, port, box, **tls)
                p.dele(1)
                p.quit()
                got = fetch_all(self, port, box, **tls)
                self.assertEqual(got, [])
                self.assertEqual(files_in(self.store, box), [])
                self.assertRegex(srv.stderr(), rf"pop3 {re.escape(box)} from 127\.0\.0\.1 left without QUIT: 1 messages, none deleted")
                self.assertRegex(srv.stderr(), rf"pop3 {re.escape(box)} from 127\.0\.0\.1 quit: 1 of 1 messages deleted")

    def test_tls_self_signed_starttls_stls_and_implicit_tls_pinned_to_the_printed_fingerprint(self):
        srv = self.start(tls_self_signed=True, implicit_tls=True)
        self.assertIsNotNone(srv.fingerprint, srv.stdout())
        out = srv.stdout().splitlines()
        self.assertTrue(out[0].startswith("tls-fingerprint sha256 "), "the fingerprint comes before the listening lines")
        ctx = t.pinned_context()
        box = "frank@example.org"
        starttls_msg = t.smtp_message("over starttls", t.DOT_LINES, to=box)
        smtps_msg = t.smtp_message("over smtps", [b"implicit TLS", b".dot"], to=box)
        with smtplib.SMTP(t.HOST, srv.port, timeout=10) as s:
            s.starttls(context=ctx)
            t.assert_pinned(self, s.sock, srv.fingerprint)
            self.assertEqual(s.sendmail(SENDER, [box], starttls_msg), {})
        with smtplib.SMTP_SSL(t.HOST, srv.ports["smtps"], timeout=10, context=ctx) as s:
            t.assert_pinned(self, s.sock, srv.fingerprint)
            self.assertEqual(s.sendmail(SENDER, [box], smtps_msg), {})
        got = fetch_all(self, srv.pop3_port, box, context=ctx, stls=True, pin=srv.fingerprint)
        self.assertEqual([body(m) for m in got], [starttls_msg, smtps_msg])
        for m in got:
            self.assertRegex(t.split_trace(m)[1], r" with ESMTPS id ", "the trace says TLS")
        got = fetch_all(self, srv.pop3s_port, box, context=ctx, implicit=True, pin=srv.fingerprint)
        self.assertEqual([body(m) for m in got], [starttls_msg, smtps_msg])

    def test_implicit_tls_listeners_alone_bind_no_default_port(self):
        # As pop3d: a protocol's plain default (2525, 1100) only when neither of its options is
        # given, so a CI job asking for TLS on port 0 never collides on a fixed port.
        p = subprocess.Popen([MAILNETD, "--store", self.store, "--no-http", "--tls-self-signed",
                              "--smtps", "127.0.0.1:0", "--pop3s", "127.0.0.1:0", "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.dir)
        try:
            lines = []
            deadline = time.monotonic() + 10
            while len(lines) < 3 and time.monotonic() < deadline:
                line = p.stdout.readline().decode()
                if not line:
                    break
                lines.append(line.strip())
            self.assertEqual(len(lines), 3, lines)
            self.assertRegex(lines[0], r"^tls-fingerprint sha256 [0-9a-f]{64}$")
            self.assertEqual(sorted(l.split()[1] for l in lines[1:]), ["pop3s", "smtps"], lines)
            for l in lines[1:]:
                self.assertRegex(l, r"^listening (smtps|pop3s) 127\.0\.0\.1:\d+$")
                self.assertNotRegex(l, r":(2525|1100)$")
        finally:
            p.terminate()
            p.wait(timeout=10)
            p.stdout.close()
            p.stderr.close()

    def test_exit_after_2_exits_0_after_the_second_message(self):
        srv = self.start(extra=["--exit-after", "2"])
        box = "gina@example.org"
        msgs = [t.smtp_message(f"message {i}", [b"hello"], to=box) for i in (1, 2)]
        self.send(srv.port, [box], msgs[0])
        time.sleep(0.3)
        self.assertIsNone(srv.proc.poll(), "still running after one message")
        with smtplib.SMTP(t.HOST, srv.port, timeout=10) as s:
            self.assertEqual(s.sendmail(SENDER, [box], msgs[1]), {})
            code, _ = s.quit()
            self.assertEqual(code, 221, "the sender that made the count ends its session normally")
        status = srv.proc.wait(timeout=15)
        self.assertEqual(status, 0, srv.stderr())
        self.assertEqual(len(files_in(self.store, box)), 2, "both messages are in the store")
        self.assertIn("2 messages accepted (--exit-after); stopping", srv.stderr())

    def test_quiet_logs_no_line_per_delivery_or_session_and_no_try_this_lines(self):
        srv = self.start(extra=["--quiet"])
        box = "quinn@example.org"
        msg = t.smtp_message("quiet", [b"hello"], to=box)
        self.send(srv.port, [box], msg)
        self.assertEqual([body(m) for m in fetch_all(self, srv.pop3_port, box)], [msg])
        srv.stop()
        err = srv.stderr()
        self.assertNotIn("delivered", err)
        self.assertNotRegex(err, r"pop3 \S+ from 127\.0\.0\.1")
        self.assertEqual([l for l in err.splitlines() if l.startswith("  ")], [], "no try-this lines")
        # The same without --quiet logs both (the control: the patterns above would match).
        loud = self.start()
        self.send(loud.port, [box], msg)
        fetch_all(self, loud.pop3_port, box)
        loud.stop()
        self.assertIn("delivered", loud.stderr())
        self.assertRegex(loud.stderr(), r"pop3 \S+ from 127\.0\.0\.1")

    def test_open_mode_refuses_non_loopback_listeners_without_allow_open_network(self):
        for option in ("--smtp", "--pop3"):
            p = t.run([MAILNETD, "--store", self.store, "--smtp", "127.0.0.1:0", "--pop3", "127.0.0.1:0",
                       "--no-http", option, "0.0.0.0:0"], timeout=20)
            self.assertEqual(p.returncode, EX_USAGE, p.stderr)
            self.assertIn(b"--allow-open-network", p.stderr)
            self.assertIn(b"0.0.0.0", p.stderr)

    def test_a_silent_smtp_client_reads_421_a_silent_pop3_client_nothing(self):
        # python3's smtplib and poplib as the clients: past the idle limit SMTP says why (421
        # 4.4.2, as Postfix), POP3 closes without a word (RFC 1939 3).
        srv = self.start(extra=["--idle-timeout", "1", "--allow-short-idle-timeout"])
        with smtplib.SMTP(t.HOST, srv.port, timeout=10) as s:
            s.ehlo("client.example")
            time.sleep(1.6)
            code, text = s.getreply()  # what the server said meanwhile
            self.assertEqual(code, 421)
            self.assertIn(b"4.4.2", text)
            self.assertIn(b"Timeout", text)
        p = poplib.POP3(t.HOST, srv.pop3_port, timeout=10)
        p.getwelcome()
        time.sleep(1.6)
        with self.assertRaises((poplib.error_proto, EOFError, ConnectionError)):
            p.noop()  # the connection is gone, with nothing said
        p.close()

    def test_the_http_api_stays_on_loopback_in_users_mode_too_and_a_busy_port_says_why(self):
        users = t.write_users(os.path.join(self.dir, "users"), {"alice@example.org": "alice-secret"})
        p = t.run([MAILNETD, "--store", self.store, "--users", users, "--smtp", "127.0.0.1:0",
                   "--pop3", "127.0.0.1:0", "--http", "0.0.0.0:0"], timeout=20)
        self.assertEqual(p.returncode, EX_USAGE, p.stderr)
        self.assertIn(b"the HTTP API has no login, so even with --users only loopback", p.stderr)
        self.assertIn(b"--allow-open-network", p.stderr)
        with socket.socket() as busy:
            busy.bind((t.HOST, 0))
            busy.listen()
            port = busy.getsockname()[1]
            p = t.run([MAILNETD, "--store", self.store, "--smtp", f"127.0.0.1:{port}", "--pop3", "127.0.0.1:0",
                       "--no-http"], timeout=20)
        self.assertEqual(p.returncode, 69, p.stderr)
        self.assertIn(f"cannot listen on 127.0.0.1:{port}: Address already in use".encode(), p.stderr)
        self.assertIn(b"mailnetd: cannot listen (the line above says why)", p.stderr)

    def test_users_mode_takes_mail_for_its_accounts_only(self):
        users = t.write_users(os.path.join(self.dir, "users"), {"Alice@Example.org": "alice-secret"})
        srv = self.start(users=users)
        msg = t.smtp_message("users mode", [b"for an account"], to="alice@example.org")
        with smtplib.SMTP(t.HOST, srv.port, timeout=10) as s:
            with self.assertRaises(smtplib.SMTPRecipientsRefused) as refused:
                s.sendmail(SENDER, ["nobody@example.org"], msg)
            self.assertEqual(refused.exception.recipients["nobody@example.org"][0], 550)
            self.assertEqual(s.sendmail(SENDER, ["ALICE@example.org"], msg), {})
        with self.assertRaises(poplib.error_proto):  # open mode's rule does not apply
            fetch_all(self, srv.pop3_port, "Alice@Example.org", "Alice@Example.org")
        with self.assertRaises(poplib.error_proto):
            fetch_all(self, srv.pop3_port, "alice@example.org", "ALICE-SECRET")
        got = fetch_all(self, srv.pop3_port, "aLiCe@eXaMpLe.org", "alice-secret")  # any case reaches it
        self.assertEqual([body(m) for m in got], [msg])

    def test_users_mode_with_its_own_certificate_starttls_auth_and_stls(self):
        ca = t.TestCA(self.dir)
        users = t.write_users(os.path.join(self.dir, "users"), {"Alice@Example.org": "alice-secret"})
        srv = self.start(users=users, extra=["--tls-cert", ca.cert, "--tls-key", ca.key])
        msg = t.smtp_message("authenticated", [b"over STARTTLS with AUTH"], to="alice@example.org")
        with smtplib.SMTP(t.HOST, srv.port, timeout=10) as s:
            s.ehlo("client.example")
            self.assertTrue(s.has_extn("starttls"))
            code, _ = s.starttls(context=ca.client_context())  # verified against the CA, 127.0.0.1 in its SAN
            self.assertEqual(code, 220)
            s.ehlo("client.example")
            self.assertFalse(s.has_extn("starttls"), "not offered again inside TLS")
            self.assertIn("PLAIN", s.esmtp_features.get("auth", ""))
            with self.assertRaises(smtplib.SMTPAuthenticationError) as bad:
                s.login("alice@example.org", "wrong")
            self.assertEqual(bad.exception.smtp_code, 535)
            code, _ = s.login("ALICE@example.org", "alice-secret")  # the users file's account, any case
            self.assertEqual(code, 235)
            self.assertEqual(s.sendmail(SENDER, ["alice@example.org"], msg), {})
        p = poplib.POP3(t.HOST, srv.pop3_port, timeout=10)
        p.stls(context=ca.client_context())
        p.user("alice@example.org")
        p.pass_("alice-secret")
        got = [b"\r\n".join(p.retr(i + 1)[1]) + b"\r\n" for i in range(p.stat()[0])]
        p.quit()
        self.assertEqual([body(m) for m in got], [msg])
        self.assertRegex(t.split_trace(got[0])[1], r" with ESMTPSA id ", "the trace says TLS and AUTH")

    def test_the_readme_tour_works_with_its_ports_and_paths_put_in(self):
        # README.md's "mailnetd in 30 seconds" block, run line by line against a mailnetd on
        # ports of its own: 2525, 1100 and 8025 replaced by its ports, var/mail by its store,
        # build/pop3c/pop3c by the pop3c beside it. Each command must succeed, and say so.
        (swaks, curl) = t.require_programs("swaks", "curl")
        readme = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "README.md")
        with open(readme) as f:
            text = f.read()
        block = re.search(r"## mailnetd in 30 seconds.*?```sh\n(.*?)```", text, re.S).group(1)
        srv = self.start(http=True)
        pop3c = os.path.join(os.path.dirname(MAILNETD), "..", "pop3c", "pop3c")
        subs = [("127.0.0.1:2525", f"127.0.0.1:{srv.port}"), ("127.0.0.1:1100", f"127.0.0.1:{srv.pop3_port}"),
                ("--port 1100", f"--port {srv.pop3_port}"), ("127.0.0.1:8025", f"127.0.0.1:{srv.http_port}"),
                ("var/mail/", self.store + "/"), ("build/pop3c/pop3c", pop3c)]
        commands = [c.strip() for c in block.replace("\\\n", " ").splitlines()]
        commands = [c for c in commands if c and not c.startswith("#")]
        self.assertEqual(len(commands), 7, commands)
        outputs = []
        for cmd in commands:
            for a, b in subs:
                cmd = cmd.replace(a, b)
            for port in ("2525", "1100", "8025"):
                self.assertNotRegex(cmd, rf"[:\s]{port}\b", f"a fixed port left in {cmd}")
            p = subprocess.run(["sh", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, timeout=60)
            self.assertEqual(p.returncode, 0, f"{cmd}\n{p.stdout!r}\n{p.stderr!r}")
            outputs.append(p.stdout)
        _, _, first, ls, fetched, listed, waited = outputs
        self.assertIn(b"X-Mailer: swaks", first)
        self.assertEqual(len(re.findall(rb",S=\d+,W=\d+", ls)), 2, ls)
        self.assertEqual(fetched.count(b"Return-Path: <me@example.org>"), 2, fetched)
        self.assertIn(b"Hello from curl.", fetched)
        self.assertEqual(json.loads(listed)["total"], 2, listed)
        self.assertEqual(json.loads(waited)["total"], 2, waited)

    def test_the_commands_it_prints_work_as_printed(self):
        (swaks, curl) = t.require_programs("swaks", "curl")
        srv = self.start()

        def printed():
            return [l.strip() for l in srv.stderr().splitlines() if l.startswith("  ")]

        # Printed after the listening lines (on stderr, which start() does not wait for): a
        # slow build (ASan) is read before them otherwise.
        t.wait_until(lambda: len(printed()) >= 5, timeout=10)
        err = srv.stderr()
        lines = printed()
        self.assertEqual(len(lines), 5, err)
        send_swaks, send_curl, fetch_curl, fetch_pop3c, ls = lines
        self.assertTrue(send_swaks.startswith("swaks "), send_swaks)
        self.assertIn(f"127.0.0.1:{srv.port}", send_swaks)
        self.assertIn(f"pop3://127.0.0.1:{srv.pop3_port}/1", fetch_curl)

        def sh(cmd):
            p = subprocess.run(["sh", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, timeout=60)
            self.assertEqual(p.returncode, 0, f"{cmd}\n{p.stdout!r}\n{p.stderr!r}")
            return p.stdout

        sh(send_swaks)
        sh(send_curl)
        self.assertTrue(fetch_curl.endswith("/1"), fetch_curl)
        self.assertIn(b"X-Mailer: swaks", sh(fetch_curl))  # the first: swaks's
        second = sh(fetch_curl[:-1] + "2")
        self.assertIn(b"Subject: hello", second)
        self.assertIn(b"Hello from curl.", second)
        pop3c = shlex.split(fetch_pop3c)[1]
        self.assertTrue(os.path.isabs(pop3c), "a path that works from any directory: " + fetch_pop3c)
        self.assertTrue(os.access(pop3c, os.X_OK), "the pop3c beside mailnetd: " + fetch_pop3c)
        out = sh(fetch_pop3c)
        self.assertEqual(out.count(b"Return-Path: <me@example.org>"), 2, out)
        self.assertEqual(len(re.findall(rb",S=\d+,W=\d+", sh(ls))), 2, "both messages in new/ or cur/")


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=240)
