# mailnet interop: SMTP smuggling with a raw socket (DESIGN.md "Rules": end of DATA is exactly
# CRLF.CRLF). Each body holds a fake end of data (\n.\n, \r.\r, \n.\r\n, \r\n.\n, \r\n.\r)
# followed by `MAIL FROM:<evil@x> RCPT TO:<victim@y> DATA evil` and a real CRLF.CRLF: smtpd
# answers once for the whole message (550 5.6.0: bare CR/LF refused by default), takes no
# smuggled command, and stores nothing for victim@y. With --normalise-bare-line-ends the
# message is one delivery to the real recipient, the smuggled commands mere text in it.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

SMTPD = t.smtpd_binary()
SENDER = "sender@example.org"
RCPT = "rcpt@example.org"
FAKE_ENDS = [b"\n.\n", b"\r.\r", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r"]
SMUGGLED = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nevil"
HEAD = b"From: sender@example.org\r\nTo: rcpt@example.org\r\nSubject: smuggling\r\n\r\nbefore"


class Smuggling(t.SmtpdCase):
    binary = SMTPD

    def data_replies(self, port, body):
        """One transaction whose DATA is `body` (sent in one write, ending with the real
        CRLF.CRLF), then QUIT: every reply from DATA's 354 on."""
        c = t.RawSmtp(port)
        try:
            c.greet()
            c.expect(f"MAIL FROM:<{SENDER}>", 250)
            c.expect(f"RCPT TO:<{RCPT}>", 250)
            c.expect("DATA", 354)
            c.send(body)
            replies = [c.reply()]
            c.send(b"QUIT\r\n")
            try:
                while True:
                    replies.append(c.reply())
            except EOFError:
                pass
            return replies
        finally:
            c.close()

    def assert_nothing_smuggled(self):
        self.assertFalse(os.path.exists(t.mailbox_dir(self.store, "victim@y")), "nothing for victim@y")
        self.assertEqual(sorted(os.listdir(self.store)), [] if not os.path.exists(t.mailbox_dir(self.store, RCPT))
                         else [RCPT])

    def test_each_fake_end_refused_as_one_message(self):
        srv = self.start(tls=False)
        for fake in FAKE_ENDS:
            with self.subTest(fake=fake):
                replies = self.data_replies(srv.port, HEAD + fake + SMUGGLED + b"\r\n.\r\n")
                codes = [code for code, _ in replies]
                self.assertEqual(codes, [550, 221], replies)
                self.assertRegex(replies[0][1][0], r"^550 5\.6\.0 ")
        self.assert_nothing_smuggled()
        self.assertEqual(t.delivered(self.store, RCPT), [])

    def test_all_fake_ends_in_one_message(self):
        srv = self.start(tls=False)
        body = HEAD + b"".join(fake + SMUGGLED for fake in FAKE_ENDS) + b"\r\n.\r\n"
        replies = self.data_replies(srv.port, body)
        self.assertEqual([code for code, _ in replies], [550, 221], replies)
        self.assertRegex(replies[0][1][0], r"^550 5\.6\.0 ")
        self.assert_nothing_smuggled()
        self.assertEqual(t.delivered(self.store, RCPT), [])

    def test_normalising_server_delivers_one_message(self):
        srv = self.start(tls=False, extra=["--normalise-bare-line-ends"])
        for n, fake in enumerate(FAKE_ENDS, 1):
            with self.subTest(fake=fake):
                replies = self.data_replies(srv.port, HEAD + fake + SMUGGLED + b"\r\n.\r\n")
                self.assertEqual([code for code, _ in replies], [250, 221], replies)
                got = t.delivered(self.store, RCPT, wait_for=n)
                self.assertEqual(len(got), n)
                rest, _ = t.check_trace(self, got[-1][1], SENDER, [RCPT], "ESMTP", helo="raw.interop.test")
                # Every bare CR or LF became a line end; the smuggled commands are body text.
                want = (HEAD + fake.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + SMUGGLED + b"\r\n")
                self.assertEqual(rest, t.sent_form(want).replace(b"\r", b"\n"))
        self.assert_nothing_smuggled()


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=100)
