# mailnet interop: openssl s_client against pop3d: -starttls pop3 (RFC 2595 4) and implicit
# TLS (RFC 8314), certificate and IP checked against the test CA; TLS 1.2 minimum.
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

POP3D = t.pop3d_binary()
(OPENSSL,) = t.require_programs("openssl")


class SClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = t.TempDir()
        cls.d = cls.tmp.path
        cls.ca = t.TestCA(cls.d)
        cls.users = t.write_users(os.path.join(cls.d, "users"), {"alice": "secret"})
        cls.store = os.path.join(cls.d, "store")
        cls.stored = t.fill_maildir(os.path.join(cls.store, "alice"), t.test_messages(big=False))
        cls.srv = t.Pop3d(POP3D, cls.store, cls.users, tls=cls.ca, implicit_tls=True, workdir=cls.d)
        cls.srv.start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop()
        finally:
            cls.tmp.cleanup()

    def tearDown(self):
        if not getattr(self._outcome, "success", True):
            print(f"--- pop3d stderr ---\n{self.srv.stderr()}", file=sys.stderr)

    def s_client(self, stdin: bytes, *opts, starttls=True, expect_ok=True):
        """Runs s_client -quiet with stdin (it implies -ign_eof: it ends when the server
        closes after QUIT), bounded by a timeout; returns the CompletedProcess."""
        port = self.srv.port if starttls else self.srv.tls_port
        cmd = [OPENSSL, "s_client", "-connect", f"{t.HOST}:{port}", "-CAfile", self.ca.ca,
               "-verify_return_error", "-verify_ip", t.HOST, "-quiet", *opts]
        if starttls:
            cmd[2:2] = ["-starttls", "pop3"]
        p = t.run(cmd, timeout=20, input=stdin)
        if expect_ok:
            self.assertEqual(p.returncode, 0, f"{cmd} -> {p.returncode}: {p.stderr!r}")
        return p

    def capa_lines(self, out: bytes):
        lines = out.split(b"\r\n")
        i = lines.index(b"+OK capability list follows") if b"+OK capability list follows" in lines else \
            next(k for k, ln in enumerate(lines) if ln.startswith(b"+OK"))
        j = lines.index(b".", i)
        return lines[i + 1:j]

    def test_starttls_capa(self):
        p = self.s_client(b"CAPA\r\nQUIT\r\n")
        out = p.stdout
        self.assertTrue(out.startswith(b"+OK"), out)
        caps = self.capa_lines(out)
        self.assertIn(b"USER", caps)
        self.assertIn(b"SASL PLAIN", caps)
        self.assertNotIn(b"STLS", caps, "no STLS once TLS is on")
        self.assertTrue(out.rstrip(b"\r\n").split(b"\r\n")[-1].startswith(b"+OK"), "QUIT answered")

    def test_starttls_session(self):
        data = dict(t.test_messages(big=False))
        p = self.s_client(b"USER alice\r\nPASS secret\r\nSTAT\r\nUIDL\r\nQUIT\r\n")
        lines = p.stdout.split(b"\r\n")
        self.assertTrue(lines[0].startswith(b"+OK"), lines)
        self.assertTrue(lines[1].startswith(b"+OK"), lines)
        self.assertEqual(lines[2].split()[:2], [b"+OK", str(len(data)).encode()])
        # RETR through s_client: exact wire bytes.
        n = 2
        p = self.s_client(f"USER alice\r\nPASS secret\r\nUIDL {n}\r\nRETR {n}\r\nQUIT\r\n".encode())
        r = t.RawPop3.from_bytes(p.stdout)
        self.assertTrue(r.readline().startswith(b"+OK"))
        self.assertTrue(r.readline().startswith(b"+OK"))
        uid_line = r.readline()
        self.assertTrue(uid_line.startswith(b"+OK %d " % n), uid_line)
        uid = uid_line.split()[2].decode()
        stored = {name: d for _l, name, d in self.stored}[uid]
        self.assertTrue(r.readline().startswith(b"+OK"))
        self.assertEqual(r.read_multiline(), t.wire_form(stored))
        self.assertTrue(r.readline().startswith(b"+OK"), "QUIT answered")

    def test_implicit_tls(self):
        p = self.s_client(b"CAPA\r\nQUIT\r\n", starttls=False)
        self.assertTrue(p.stdout.startswith(b"+OK"), p.stdout)
        self.assertNotIn(b"STLS", self.capa_lines(p.stdout))

    def test_tls13_and_tls12(self):
        for v in ("-tls1_3", "-tls1_2"):
            p = self.s_client(b"CAPA\r\nQUIT\r\n", v)
            self.assertIn(b"+OK capability list follows", p.stdout, v)

    def test_tls11_refused(self):
        # The client is allowed TLS 1.1 (security level 0); the server must refuse it.
        for starttls in (True, False):
            p = self.s_client(b"QUIT\r\n", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0",
                              starttls=starttls, expect_ok=False)
            self.assertNotEqual(p.returncode, 0, f"TLS 1.1 accepted (starttls={starttls})")
            self.assertIn(b"alert protocol version", p.stderr, "refused by the server's alert")
        # The server is still serving.
        self.s_client(b"QUIT\r\n")

    def test_wrong_ca_fails(self):
        other = t.TestCA(os.path.join(self.d, "other"))
        p = t.run([OPENSSL, "s_client", "-starttls", "pop3", "-connect", f"{t.HOST}:{self.srv.port}",
                   "-CAfile", other.ca, "-verify_return_error", "-quiet"],
                  timeout=20, input=b"QUIT\r\n")
        self.assertNotEqual(p.returncode, 0)


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=100)
