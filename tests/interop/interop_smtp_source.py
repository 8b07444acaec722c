# mailnet interop: Postfix's smtp-source (its load generator) against smtpd: 5 sessions ×
# 200 messages of 4096 octets, one connection per message, then again with -d (one connection
# per session for all its messages): exactly 200, then 400, files in the recipient's mailbox,
# each with well-formed trace headers and smtp-source's message after them.
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

SMTPD = t.smtpd_binary()


def find_smtp_source():
    for d in ("/usr/sbin", "/usr/lib/postfix/sbin", "/usr/libexec/postfix"):
        p = os.path.join(d, "smtp-source")
        if os.access(p, os.X_OK):
            return p
    t.skip("smtp-source (postfix) not installed")


SMTP_SOURCE = find_smtp_source()
SENDER = "source@example.org"
RCPT = "load@example.org"
HELO = "source.interop.test"


class SmtpSource(t.SmtpdCase):
    binary = SMTPD

    def source(self, srv, *args):
        cmd = [SMTP_SOURCE, "-s", "5", "-m", "200", "-l", "4096", "-M", HELO, "-f", SENDER, "-t", RCPT,
               *args, f"{t.HOST}:{srv.port}"]
        start = time.monotonic()
        p = t.run(cmd, timeout=50)
        took = time.monotonic() - start
        self.assertEqual(p.returncode, 0, f"{cmd} -> {p.returncode}: {p.stdout!r} {p.stderr!r}")
        print(f"  {' '.join(cmd[1:-1])}: {took:.2f} s", file=sys.stderr)
        return p

    def check_all(self, want):
        got = t.delivered(self.store, RCPT, wait_for=want)
        self.assertEqual(len(got), want, f"exactly {want} files delivered")
        self.assertEqual(t.tmp_files(self.store, RCPT, settle=True), [], "tmp/ is empty")
        ids = set()
        for path, data in got:
            # smtp-source greets with HELO: `with SMTP` (RFC 3848).
            rest, rcvd = t.check_trace(self, data, SENDER, [RCPT], "SMTP", helo=HELO)
            ids.add(rcvd["id"])
            # smtp-source's message: its headers, an empty line, then `-l` octets of body.
            self.assertRegex(rest[:200], rb"^From: <" + re.escape(SENDER.encode()) + rb">\n", path)
            head, sep, body = rest.partition(b"\n\n")
            self.assertTrue(sep, path)
            self.assertIn(b"\nTo: <" + RCPT.encode() + b">", b"\n" + head, path)
            self.assertGreaterEqual(len(body), 4000, path)
            # S= in the name is the file's size (DESIGN.md "On disk").
            m = re.search(r",S=(\d+),W=(\d+)", os.path.basename(path))
            self.assertIsNotNone(m, path)
            self.assertEqual(int(m.group(1)), len(data), path)
            self.assertEqual(int(m.group(2)), len(data) + data.count(b"\n"), path)
        self.assertEqual(len(ids), want, "every delivery has its own Received: id")

    def test_200_then_400_with_d(self):
        srv = self.start(tls=False)
        self.source(srv)
        self.check_all(200)
        self.source(srv, "-d")
        self.check_all(400)


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=100)
