# mailnet interop: smtpd driven by Python's smtplib: sendmail to several recipients with dot
# lines, 8-bit UTF-8 and SMTPUTF8 internationalised addresses; starttls() verifying the
# certificate, then login(); a 5 MiB message; send_message() with Cc and Bcc; the SIZE limit
# (552 at MAIL and after DATA); a client gone mid-DATA leaves nothing; implicit TLS (SMTP_SSL).
import email.message
import email.policy
import os
import smtplib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

SMTPD = t.smtpd_binary()
HELO = "smtplib.interop.test"
SENDER = "sender@example.org"


def big_message(size):
    """A CRLF message of exactly `size` octets with dot-leading lines all through it."""
    head = t.smtp_message(f"big {size}", [])
    lines = []
    n = len(head)
    i = 0
    while n < size:
        line = (b".dot line %d" % i) if i % 89 == 0 else (b"%08d " % i) + b"abcdefghijklmnopqrstuvwxyz" * 2
        lines.append(line + b"\r\n")
        n += len(line) + 2
        i += 1
    msg = head + b"".join(lines)
    return msg[:size - 2] + b"\r\n"


class Smtplib(t.SmtpdCase):
    binary = SMTPD

    def smtp(self, port, **kw):
        s = smtplib.SMTP(t.HOST, port, local_hostname=HELO, timeout=20, **kw)
        self.addCleanup(s.close)
        return s

    def test_sendmail_several_recipients_smtputf8(self):
        srv = self.start()
        sender = "jürgen@bücher.example"
        rcpts = ["rcpt@example.org", "Élodie@Exämple.ORG", "zoë@example.net"]
        msg = t.smtp_message("smtplib utf8", t.DOT_LINES + t.EIGHT_BIT_LINES,
                             headers=[b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8",
                                      b"Content-Transfer-Encoding: 8bit"])
        with self.smtp(srv.port) as s:
            s.ehlo()
            self.assertTrue(s.has_extn("smtputf8") and s.has_extn("8bitmime"))
            refused = s.sendmail(sender, rcpts, msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
            self.assertEqual(refused, {})
        # Mailboxes: ASCII letters lowercased, UTF-8 untouched ("Élodie@exämple.org").
        t.assert_delivered(self, self.store, rcpts, sender, msg, "UTF8SMTP", helo=HELO)
        self.assertIn("Élodie@exämple.org".encode(), [os.fsencode(n) for n in os.listdir(self.store)])

    def test_starttls_login(self):
        srv = self.start(users=True)
        msg = t.smtp_message("smtplib starttls login", [b"over STARTTLS, authenticated"])
        with self.smtp(srv.port) as s:
            s.ehlo()
            self.assertTrue(s.has_extn("starttls"))
            s.starttls(context=self.cert.client_context())
            s.ehlo()
            self.assertIn("PLAIN", s.esmtp_features.get("auth", "").upper())
            code, _ = s.login("alice@example.org", "alice-secret")
            self.assertEqual(code, 235)
            self.assertEqual(s.sendmail("alice@example.org", ["bob@example.org"], msg), {})
        t.assert_delivered(self, self.store, ["bob@example.org"], "alice@example.org", msg,
                           "ESMTPSA", helo=HELO)

    def test_five_mib(self):
        srv = self.start(tls=False)
        msg = big_message(5 << 20)
        with self.smtp(srv.port) as s:
            self.assertEqual(s.sendmail(SENDER, ["big@example.org"], msg), {})
        t.assert_delivered(self, self.store, ["big@example.org"], SENDER, msg, "ESMTP", helo=HELO)

    def test_send_message_cc_bcc(self):
        srv = self.start(tls=False)
        m = email.message.EmailMessage(policy=email.policy.SMTP)
        m["From"] = "Sender <sender@example.org>"
        m["To"] = "To <to@example.org>"
        m["Cc"] = "cc@example.org"
        m["Bcc"] = "hidden@example.org"
        m["Subject"] = "send_message with Cc and Bcc"
        m["Message-ID"] = "<send-message@interop.test>"
        m.set_content("Hello,\n.a dot line\n..\nCafé ☕\n", charset="utf-8", cte="8bit")
        with self.smtp(srv.port) as s:
            self.assertEqual(s.send_message(m), {})
        # smtplib sent the message without Bcc, flattened with CRLF line ends.
        del m["Bcc"]
        sent = m.as_bytes(policy=m.policy.clone(linesep="\r\n"))
        stored = t.assert_delivered(self, self.store, ["to@example.org", "cc@example.org", "hidden@example.org"],
                                    SENDER, sent, "ESMTP", helo=HELO)
        self.assertNotIn(b"hidden@example.org", stored, "no trace of the Bcc recipient in the copies")

    def test_size_limit_552(self):
        srv = self.start(tls=False, extra=["--max-message-size", "10000"])
        small = big_message(5000)
        large = big_message(20000)
        with self.smtp(srv.port) as s:
            s.ehlo()
            self.assertEqual(s.esmtp_features.get("size"), "10000")
            # sendmail announces SIZE=20000: refused at MAIL.
            with self.assertRaises(smtplib.SMTPSenderRefused) as e:
                s.sendmail(SENDER, ["rcpt@example.org"], large)
            self.assertEqual(e.exception.smtp_code, 552)
            # Without SIZE= the message is read to its end, then refused.
            self.assertEqual(s.mail(SENDER)[0], 250)
            self.assertEqual(s.rcpt("rcpt@example.org")[0], 250)
            code, text = s.data(large)  # data() returns the final reply, whatever it is
            self.assertEqual(code, 552, text)
            self.assertTrue(text.startswith(b"5.3.4 "), text)
            # The session goes on: a message under the limit is taken.
            self.assertEqual(s.sendmail(SENDER, ["rcpt@example.org"], small), {})
        t.assert_delivered(self, self.store, ["rcpt@example.org"], SENDER, small, "ESMTP", helo=HELO)

    def test_disconnect_mid_data(self):
        srv = self.start(tls=False)
        msg = big_message(1 << 20)

        def drop_mid_data():
            s = self.smtp(srv.port)
            s.ehlo()
            self.assertEqual(s.mail(SENDER)[0], 250)
            self.assertEqual(s.rcpt("gone@example.org")[0], 250)
            code, _ = s.docmd("DATA")
            self.assertEqual(code, 354)
            s.send(msg[:600 * 1024])
            return s

        # A new mailbox: the message is spooled until it ends, so the drop leaves no mailbox.
        s = drop_mid_data()
        time.sleep(0.3)
        s.close()  # closes the socket and smtplib's file on it, without QUIT
        mdir = t.mailbox_dir(self.store, "gone@example.org")
        time.sleep(0.3)
        self.assertFalse(os.path.exists(mdir), f"{mdir} made for a message never accepted")
        # The server still takes mail; the mailbox is made by it.
        done = t.smtp_message("after the drop", [b"still alive"])
        with self.smtp(srv.port) as s2:
            self.assertEqual(s2.sendmail(SENDER, ["gone@example.org"], done), {})
        t.assert_delivered(self, self.store, ["gone@example.org"], SENDER, done, "ESMTP", helo=HELO)
        # The mailbox exists now: past the server's write-out threshold the delivery's tmp/ file
        # is written as the message comes, and a drop removes it.
        s = drop_mid_data()
        self.assertTrue(t.wait_until(lambda: t.tmp_files(self.store, "gone@example.org"), timeout=5),
                        "smtpd began writing the message into tmp/")
        s.close()
        self.assertTrue(t.wait_until(lambda: not t.tmp_files(self.store, "gone@example.org"), timeout=5),
                        f"tmp/ still holds {t.tmp_files(self.store, 'gone@example.org')}")
        t.assert_delivered(self, self.store, ["gone@example.org"], SENDER, done, "ESMTP", helo=HELO)

    def test_implicit_tls_smtp_ssl(self):
        srv = self.start(implicit_tls=True)
        msg = t.smtp_message("smtplib SMTP_SSL", t.DOT_LINES)
        with smtplib.SMTP_SSL(t.HOST, srv.tls_port, local_hostname=HELO, timeout=20,
                              context=self.cert.client_context()) as s:
            s.ehlo()
            self.assertFalse(s.has_extn("starttls"), "no STARTTLS inside TLS")
            self.assertEqual(s.sendmail(SENDER, ["rcpt@example.org"], msg), {})
        t.assert_delivered(self, self.store, ["rcpt@example.org"], SENDER, msg, "ESMTPS", helo=HELO)


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=100)
