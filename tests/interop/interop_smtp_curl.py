# mailnet interop: smtpd driven by curl's SMTP client: --mail-from, two --mail-rcpt and
# --upload-file over cleartext; STARTTLS with --ssl-reqd and --cacert; smtps:// against
# --tls-listen. curl dot-stuffs the upload itself; the file has CRLF line ends (curl sends
# the bytes as they are, and smtpd refuses bare LF).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

SMTPD = t.smtpd_binary()
(CURL,) = t.require_programs("curl")
HELO = "curl.interop.test"  # curl's EHLO name is the URL's path
SENDER = "sender@example.org"


class Curl(t.SmtpdCase):
    binary = SMTPD

    def curl(self, url, message, rcpts, *args):
        path = self.message_file(message, "curl")
        cmd = [CURL, "-sS", "--max-time", "20", url, "--mail-from", SENDER,
               *[a for r in rcpts for a in ("--mail-rcpt", r)], "--upload-file", path, *args]
        p = t.run(cmd, timeout=40)
        self.assertEqual(p.returncode, 0, f"{cmd} -> {p.returncode}: {p.stderr!r}")
        return p

    def test_plain_two_recipients(self):
        srv = self.start(tls=False)
        rcpts = ["one@example.org", "two@example.org"]
        msg = t.smtp_message("curl plain", t.DOT_LINES + t.EIGHT_BIT_LINES)
        self.curl(f"smtp://{t.HOST}:{srv.port}/{HELO}", msg, rcpts)
        t.assert_delivered(self, self.store, rcpts, SENDER, msg, "ESMTP", helo=HELO)

    def test_starttls_ssl_reqd(self):
        srv = self.start()
        rcpts = ["one@example.org", "two@example.org"]
        msg = t.smtp_message("curl starttls", t.DOT_LINES)
        self.curl(f"smtp://{t.HOST}:{srv.port}/{HELO}", msg, rcpts, "--ssl-reqd", "--cacert", self.cert.ca)
        t.assert_delivered(self, self.store, rcpts, SENDER, msg, "ESMTPS", helo=HELO)

    def test_smtps(self):
        srv = self.start(implicit_tls=True)
        msg = t.smtp_message("curl smtps", t.DOT_LINES)
        self.curl(f"smtps://{t.HOST}:{srv.tls_port}/{HELO}", msg, ["one@example.org"], "--cacert", self.cert.ca)
        t.assert_delivered(self, self.store, ["one@example.org"], SENDER, msg, "ESMTPS", helo=HELO)

    def test_starttls_refuses_an_untrusted_certificate(self):
        # The check above means something: without --cacert curl refuses the self-signed cert.
        srv = self.start()
        path = self.message_file(t.smtp_message("curl untrusted", [b"never sent"]), "curl")
        p = t.run([CURL, "-sS", "--max-time", "20", f"smtp://{t.HOST}:{srv.port}/{HELO}", "--ssl-reqd",
                   "--mail-from", SENDER, "--mail-rcpt", "one@example.org", "--upload-file", path], timeout=40)
        self.assertNotEqual(p.returncode, 0)
        self.assertEqual(t.delivered(self.store, "one@example.org"), [])


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=100)
