# mailnet interop: smtpd driven by swaks: plain, STARTTLS, AUTH PLAIN and LOGIN (loopback
# and over STARTTLS), PIPELINING, an 8-bit body with BODY=8BITMIME, several recipients (one
# hard-linked file), dot lines, and the refusals (535 wrong password, 550 5.1.1 unknown
# recipient, 530 MAIL before AUTH). swaks 20201014 has no BDAT: CHUNKING is driven by a raw
# socket here (test_bdat_raw_socket).
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

SMTPD = t.smtpd_binary()
(SWAKS,) = t.require_programs("swaks")
HELO = "swaks.interop.test"
SENDER = "sender@example.org"


needs_tls = unittest.skipUnless(t.swaks_has_tls(), "swaks --tls needs Net::SSLeay (libnet-ssleay-perl)")


def swaks_supports_bdat():
    p = t.run([SWAKS, "--help"], timeout=20)
    return re.search(rb"\bBDAT\b|--chunking", p.stdout + p.stderr) is not None


class Swaks(t.SmtpdCase):
    binary = SMTPD

    def swaks(self, srv, to, message, *args, sender=SENDER, ok=True):
        """Runs swaks against srv with `message` (CRLF, ending in CRLF) as its --data. swaks
        itself dot-stuffs the data and appends CRLF.CRLF: it is given the message without its
        last CRLF (with that CRLF it would send one more empty line). Returns the transcript."""
        type(self).n += 1
        p = t.swaks_send(SWAKS, srv.port, sender, to, message, os.path.join(self.d, f"swaks.{self.n}.eml"),
                         *args, helo=HELO)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        if ok:
            self.assertEqual(p.returncode, 0, f"{p.cmd} -> {p.returncode}\n{out}")
        else:
            self.assertNotEqual(p.returncode, 0, f"{p.cmd} succeeded\n{out}")
        return out

    def test_plain(self):
        srv = self.start()
        msg = t.smtp_message("swaks plain", [b"Hello from swaks.", b"Bye."])
        self.swaks(srv, ["rcpt@example.org"], msg)
        t.assert_delivered(self, self.store, ["rcpt@example.org"], SENDER, msg, "ESMTP", helo=HELO)

    @needs_tls
    def test_starttls(self):
        srv = self.start()
        msg = t.smtp_message("swaks starttls", [b"Sent over STARTTLS."])
        out = self.swaks(srv, ["rcpt@example.org"], msg, "--tls", "--tls-verify",
                         "--tls-ca-path", self.cert.ca)
        self.assertIn("=== TLS started with cipher", out)
        t.assert_delivered(self, self.store, ["rcpt@example.org"], SENDER, msg, "ESMTPS", helo=HELO)

    def test_auth_plain_and_login_loopback(self):
        srv = self.start(users=True, tls=False)
        for n, mech in enumerate(("PLAIN", "LOGIN"), 1):
            msg = t.smtp_message(f"swaks auth {mech}", [b"Authenticated over loopback."])
            out = self.swaks(srv, ["bob@example.org"], msg, "--auth", mech, "--auth-user",
                             "alice@example.org", "--auth-password", "alice-secret",
                             sender="alice@example.org")
            self.assertRegex(out, r"<- +235 2\.7\.0")
            t.assert_delivered(self, self.store, ["bob@example.org"], "alice@example.org", msg,
                               "ESMTPA", count=n, helo=HELO)

    @needs_tls
    def test_auth_plain_and_login_over_starttls(self):
        srv = self.start(users=True)
        for n, mech in enumerate(("PLAIN", "LOGIN"), 1):
            msg = t.smtp_message(f"swaks tls auth {mech}", [b"Authenticated over STARTTLS."])
            self.swaks(srv, ["bob@example.org"], msg, "--tls", "--tls-verify", "--tls-ca-path",
                       self.cert.ca, "--auth", mech, "--auth-user", "carol@example.org",
                       "--auth-password", "carol-secret", sender="carol@example.org")
            t.assert_delivered(self, self.store, ["bob@example.org"], "carol@example.org", msg,
                               "ESMTPSA", count=n, helo=HELO)

    def test_pipeline_several_recipients(self):
        srv = self.start()
        rcpts = ["one@example.org", "Two@Example.ORG", "three@example.net"]
        msg = t.smtp_message("swaks pipeline", [b"Pipelined to three recipients."])
        out = self.swaks(srv, rcpts, msg, "--pipeline")
        # swaks sent MAIL, the three RCPTs and DATA in one go, then read the five replies.
        self.assertRegex(out, r" -> MAIL FROM:<[^\n]*\n( -> RCPT TO:<[^\n]*\n){3} -> DATA\n"
                              r"<-  250 2\.1\.0 [^\n]*\n(<-  250 2\.1\.5 [^\n]*\n){3}<-  354 ")
        # Each mailbox (the address with ASCII letters lowercased) holds one copy, the same
        # file (one inode), and the Received: header names no recipient.
        t.assert_delivered(self, self.store, rcpts, SENDER, msg, "ESMTP", helo=HELO)
        self.assertEqual(sorted(os.listdir(self.store)),
                         sorted(r.lower() for r in rcpts))

    def test_eight_bit_body_with_body_8bitmime(self):
        # swaks 20201014 writes `MAIL FROM:<$from>` and has no option for MAIL parameters, so
        # BODY=8BITMIME rides in --from, closed by an empty AUTH=<> (RFC 4954 5: accepted where
        # AUTH is offered, so with users, from loopback).
        srv = self.start(users=True, tls=False)
        msg = t.smtp_message("swaks 8bit", t.EIGHT_BIT_LINES,
                             headers=[b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8",
                                      b"Content-Transfer-Encoding: 8bit"])
        out = self.swaks(srv, ["bob@example.org"], msg, sender=SENDER + "> BODY=8BITMIME AUTH=<")
        self.assertIn(f"MAIL FROM:<{SENDER}> BODY=8BITMIME AUTH=<>", out)
        t.assert_delivered(self, self.store, ["bob@example.org"], SENDER, msg, "ESMTP", helo=HELO)

    def test_dot_lines(self):
        srv = self.start()
        msg = t.smtp_message("swaks dots", t.DOT_LINES)
        out = self.swaks(srv, ["rcpt@example.org"], msg)
        sent = out.replace("\r", "")
        self.assertIn(" -> ..\n -> ....three\n", sent, "swaks stuffed the `.` line")
        self.assertIn(" -> ...\n -> ..\n", sent, "swaks stuffed the `..` line")
        t.assert_delivered(self, self.store, ["rcpt@example.org"], SENDER, msg, "ESMTP", helo=HELO)

    def test_wrong_password_535(self):
        srv = self.start(users=True, tls=False)
        msg = t.smtp_message("swaks wrong password", [b"never delivered"])
        out = self.swaks(srv, ["bob@example.org"], msg, "--auth", "PLAIN", "--auth-user",
                         "alice@example.org", "--auth-password", "wrong", ok=False)
        self.assertRegex(out, r"<\*\* *535 5\.7\.8")
        self.assertEqual(t.delivered(self.store, "bob@example.org"), [])

    def test_unknown_recipient_550(self):
        srv = self.start(users=True, tls=False)
        msg = t.smtp_message("swaks unknown", [b"never delivered"])
        out = self.swaks(srv, ["nobody@example.org"], msg, ok=False)
        self.assertRegex(out, r"<\*\* *550 5\.1\.1")
        self.assertFalse(os.path.exists(t.mailbox_dir(self.store, "nobody@example.org")))
        # A known recipient beside it still gets the message, once.
        out = self.swaks(srv, ["nobody@example.org", "bob@example.org"], msg)
        self.assertRegex(out, r"<\*\* *550 5\.1\.1")
        t.assert_delivered(self, self.store, ["bob@example.org"], SENDER, msg, "ESMTP", helo=HELO)
        self.assertFalse(os.path.exists(t.mailbox_dir(self.store, "nobody@example.org")))

    def test_require_auth_530(self):
        srv = self.start(users=True, tls=False, extra=["--require-auth"])
        msg = t.smtp_message("swaks require auth", [b"after AUTH only"])
        out = self.swaks(srv, ["bob@example.org"], msg, ok=False)
        self.assertRegex(out, r"<\*\* *530 5\.7\.0")
        self.assertEqual(t.delivered(self.store, "bob@example.org"), [])
        self.swaks(srv, ["bob@example.org"], msg, "--auth", "LOGIN", "--auth-user",
                   "bob@example.org", "--auth-password", "bob-secret")
        t.assert_delivered(self, self.store, ["bob@example.org"], SENDER, msg, "ESMTPA", helo=HELO)

    def test_bdat_raw_socket(self):
        # Not swaks: this swaks has no BDAT (checked here), so a raw client sends the chunks.
        self.assertFalse(swaks_supports_bdat(), "swaks has BDAT now: drive CHUNKING with it")
        srv = self.start()
        msg = t.smtp_message("bdat", t.DOT_LINES + t.EIGHT_BIT_LINES)
        # Chunks cut anywhere, one of them between a CR and its LF; no dot-stuffing in BDAT.
        cr = msg.index(b"\r\n", 100) + 1
        chunks = [msg[:7], msg[7:cr], msg[cr:cr + 1], msg[cr + 1:]]
        c = t.RawSmtp(srv.port)
        try:
            code, lines = c.greet()
            self.assertIn("250-CHUNKING", lines)
            c.expect(f"MAIL FROM:<{SENDER}> BODY=8BITMIME", 250)
            c.expect("RCPT TO:<rcpt@example.org>", 250)
            for i, ch in enumerate(chunks):
                last = " LAST" if i == len(chunks) - 1 else ""
                c.send(f"BDAT {len(ch)}{last}\r\n".encode() + ch)
                code, lines = c.reply()
                self.assertEqual(code, 250, lines)
            self.assertRegex(lines[0], r"^250 2\.0\.0 ")
            c.expect("QUIT", 221)
        finally:
            c.close()
        t.assert_delivered(self, self.store, ["rcpt@example.org"], SENDER, msg, "ESMTP",
                           helo="raw.interop.test")


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=100)
