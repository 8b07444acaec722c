# mailnet interop: pop3d driven by curl's POP3 client: LIST, RETR, UIDL, DELE, the three
# login methods (USER, SASL PLAIN, APOP), STLS with --ssl-reqd, and pop3s.
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

POP3D = t.pop3d_binary()
(CURL,) = t.require_programs("curl")


class Curl(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = t.TempDir()
        cls.d = cls.tmp.path
        cls.ca = t.TestCA(cls.d)
        cls.users = t.write_users(os.path.join(cls.d, "users"), {"alice": "secret"})
        cls.store = os.path.join(cls.d, "store")
        cls.mdir = os.path.join(cls.store, "alice")
        cls.stored = t.fill_maildir(cls.mdir, t.test_messages(big=True))
        cls.by_name = {n: d for _l, n, d in cls.stored}
        cls.srv = t.Pop3d(POP3D, cls.store, cls.users, tls=cls.ca, implicit_tls=True,
                          extra=("--enable-apop",), workdir=cls.d)
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

    def curl(self, *args, url_path="/", scheme="pop3", port=None, user="alice:secret", ok=True):
        port = port or self.srv.port
        cmd = [CURL, "-sS", "--max-time", "20", "-u", user, *args,
               f"{scheme}://{t.HOST}:{port}{url_path}"]
        p = t.run(cmd, timeout=30)
        if ok:
            self.assertEqual(p.returncode, 0, f"{cmd} -> {p.returncode}: {p.stderr!r}")
        return p

    def uidls(self, *args, **kw):
        out = self.curl("-X", "UIDL", *args, **kw).stdout
        return {int(n): u.decode() for n, u in (ln.split(b" ", 1) for ln in out.split(b"\r\n") if ln)}

    def test_list(self):
        out = self.curl().stdout
        lines = [ln for ln in out.split(b"\r\n") if ln]
        self.assertEqual(len(lines), len(self.stored), out)
        uids = self.uidls()
        for ln in lines:
            n, s = map(int, ln.split())
            self.assertEqual(s, len(t.to_crlf(self.by_name[uids[n]])))

    def test_retr_each(self):
        uids = self.uidls()
        self.assertEqual(sorted(uids.values()), sorted(self.by_name))
        for n, uid in uids.items():
            got = self.curl(url_path=f"/{n}").stdout
            data = self.by_name[uid]
            self.assertEqual(t.normalise(got), t.normalise(data), f"RETR {n} ({uid})")
            self.assertEqual(got, t.wire_form(data), f"RETR {n} ({uid}) exact CRLF bytes")

    def test_login_methods(self):
        uids = self.uidls()
        n = next(k for k, u in uids.items() if self.by_name[u] == dict(t.test_messages(False))["dots"])
        want = t.wire_form(self.by_name[uids[n]])
        for opts, sent in ((["--login-options", "AUTH=PLAIN", "--sasl-ir"], b"> AUTH PLAIN "),
                           (["--login-options", "AUTH=PLAIN"], b"> AUTH PLAIN\n"),
                           (["--login-options", "AUTH=+APOP"], b"> APOP alice ")):
            p = self.curl("-v", *opts, url_path=f"/{n}")
            self.assertEqual(p.stdout, want, f"curl {opts}")
            self.assertIn(sent, p.stderr.replace(b"\r\n", b"\n"), f"curl {opts} used that login method")

    def test_wrong_password(self):
        p = self.curl(user="alice:wrong", ok=False)
        self.assertEqual(p.returncode, 67, f"curl: login denied; {p.stderr!r}")

    def test_stls_ssl_reqd(self):
        uids = self.uidls("--ssl-reqd", "--cacert", self.ca.ca)
        self.assertEqual(sorted(uids.values()), sorted(self.by_name))
        for n, uid in uids.items():
            got = self.curl("--ssl-reqd", "--cacert", self.ca.ca, url_path=f"/{n}").stdout
            self.assertEqual(got, t.wire_form(self.by_name[uid]), f"RETR {n} over STLS")

    def test_stls_untrusted_fails(self):
        # Without the test CA curl must refuse the certificate (exit 60).
        p = self.curl("--ssl-reqd", "--capath", "/nonexistent", "--cacert", "/dev/null", ok=False)
        self.assertNotEqual(p.returncode, 0)

    def test_pop3s(self):
        uids = self.uidls("--cacert", self.ca.ca, scheme="pop3s", port=self.srv.tls_port)
        self.assertEqual(sorted(uids.values()), sorted(self.by_name))
        for n, uid in uids.items():
            got = self.curl("--cacert", self.ca.ca, scheme="pop3s", port=self.srv.tls_port,
                            url_path=f"/{n}").stdout
            self.assertEqual(got, t.wire_form(self.by_name[uid]), f"RETR {n} over pop3s")

    def test_zz_dele(self):
        # Runs last (alphabetical): removes one message through curl's custom request.
        uids = self.uidls()
        self.curl("-X", "DELE 1", "-I")
        self.assertNotIn(uids[1], t.maildir_files(self.mdir))
        after = self.uidls()
        self.assertEqual(len(after), len(uids) - 1)
        self.assertNotIn(uids[1], after.values())


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=100)
