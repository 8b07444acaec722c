# mailnet interop: Dovecot reads what smtpd writes. smtpd (with --users) delivers three
# messages (plain, dot lines, 8-bit) to alice@example.org's Maildir; then a private Dovecot
# POP3 server (PEERS.md) serves that same Maildir with the same users file, and Python's
# poplib RETRs each message through Dovecot: the bytes are what smtpd stored (CRLF line ends
# on the wire), Dovecot's LIST sizes and UIDLs (pop3_uidl_format = %f) match smtpd's file
# names (,W= and the base name).
import os
import poplib
import pwd
import smtplib
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

SMTPD = t.smtpd_binary()
t.require_programs("dovecot", "doveconf", "openssl")
t.require_root("Dovecot runs as root with a nobody-owned Maildir (PEERS.md)")
for _u in ("dovecot", "dovenull", "nobody"):
    try:
        pwd.getpwnam(_u)
    except KeyError:
        t.skip(f"system user {_u} missing (the dovecot package creates it)")

USER = "alice@example.org"
SENDER = "sender@example.org"
HELO = "smtplib.interop.test"


class SmtpdThenDovecot(t.SmtpdCase):
    binary = SMTPD

    def test_dovecot_serves_what_smtpd_stored(self):
        srv = self.start(users=True, tls=False)
        msgs = [
            t.smtp_message("plain", [b"Hello Alice.", b"", b"Bye."]),
            t.smtp_message("dots", t.DOT_LINES),
            t.smtp_message("8bit", t.EIGHT_BIT_LINES,
                           headers=[b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8",
                                    b"Content-Transfer-Encoding: 8bit"]),
        ]
        with smtplib.SMTP(t.HOST, srv.port, local_hostname=HELO, timeout=20) as s:
            for m in msgs:
                self.assertEqual(s.sendmail(SENDER, [USER], m, mail_options=["BODY=8BITMIME"]), {})
        stored = {}
        files = t.delivered(self.store, USER, wait_for=3)
        self.assertEqual(len(files), 3)
        for (path, data), m in zip(files, msgs):
            rest, _ = t.check_trace(self, data, SENDER, [USER], "ESMTP", helo=HELO)
            self.assertEqual(rest, t.sent_form(m))
            stored[os.path.basename(path).split(":", 1)[0]] = data
        srv.stop()

        mdir = t.mailbox_dir(self.store, USER)
        t.chown_tree(mdir, "nobody")
        dovecot = t.Dovecot(self.d, self.store, self.users)
        try:
            dovecot.start()
            p = poplib.POP3(t.HOST, dovecot.port, timeout=20)
            try:
                p.user(USER)
                p.pass_(t.SMTP_USERS[USER])
                count, _octets = p.stat()
                self.assertEqual(count, 3)
                uidls = {int(n): u.decode() for n, u in (ln.split() for ln in p.uidl()[1])}
                sizes = {int(n): int(s) for n, s in (ln.split() for ln in p.list()[1])}
                self.assertEqual(sorted(uidls.values()), sorted(stored), "UIDL %f = smtpd's base names")
                for n, uid in uidls.items():
                    want = t.wire_form(stored[uid])
                    self.assertEqual(sizes[n], len(want), f"Dovecot's LIST size of {uid}")
                    resp, lines, octets = p.retr(n)
                    self.assertTrue(resp.startswith(b"+OK"), resp)
                    got = b"".join(line + b"\r\n" for line in lines)
                    self.assertEqual(got, want, f"Dovecot's RETR {n} ({uid}) == smtpd's file, CRLF")
                p.quit()
            finally:
                p.close()
        except Exception:
            print(f"--- dovecot logs ---\n{dovecot.logs()}", file=sys.stderr)
            raise
        finally:
            dovecot.stop()


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=100)
