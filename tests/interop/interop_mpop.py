# mailnet interop: mpop (pipelining POP3 fetcher) fetches alice's whole mailbox from pop3d
# into a Maildir with keep: plain USER/PASS, SASL PLAIN, STLS and pop3s; UIDLs persist.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

POP3D = t.pop3d_binary()
(MPOP,) = t.require_programs("mpop")


class Mpop(t.FetcherCase):
    binary = POP3D

    def mpop(self, maildir, uidls, *opts, port=None, expect=0):
        # --host: command-line settings only, no configuration file is read.
        cmd = [MPOP, f"--host={t.HOST}", f"--port={port or self.srv.port}", "--timeout=20",
               f"--user={t.USER}", f"--passwordeval=echo {t.PASSWORD}", "--keep=on",
               "--received-header=off", f"--delivery=maildir,{maildir}",
               f"--uidls-file={uidls}", "--half-quiet", *opts]
        p = t.run(cmd, timeout=60, cwd=self.d)
        self.assertEqual(p.returncode, expect,
                         f"{cmd} -> {p.returncode}\nstdout {p.stdout!r}\nstderr {p.stderr!r}")
        return p

    def fetch_all(self, label, *opts, port=None):
        d = self.fresh_dir(label)
        md = t.make_maildir(os.path.join(d, "Maildir"))
        uidls = os.path.join(d, "uidls")
        self.mpop(md, uidls, *opts, port=port)
        self.check_fetched(md, f"mpop {label}")
        return md, uidls

    def test_user_pass(self):
        self.fetch_all("user", "--tls=off", "--auth=user", "--pipelining=on")

    def test_sasl_plain_no_pipelining(self):
        self.fetch_all("plain", "--tls=off", "--auth=plain", "--pipelining=off")

    def test_stls(self):
        self.fetch_all("stls", "--tls=on", "--tls-starttls=on", f"--tls-trust-file={self.ca.ca}",
                       "--auth=user")

    def test_pop3s(self):
        self.fetch_all("pop3s", "--tls=on", "--tls-starttls=off", f"--tls-trust-file={self.ca.ca}",
                       port=self.srv.tls_port)

    def test_only_new_fetches_nothing_twice(self):
        md, uidls = self.fetch_all("onlynew", "--tls=off", "--auth=user", "--only-new=on")
        # mpop remembers the UIDLs it saw: a second run with --only-new fetches nothing.
        self.mpop(md, uidls, "--tls=off", "--auth=user", "--only-new=on")
        self.assertEqual(len(t.maildir_messages(md)), len(self.stored), "nothing fetched twice")

    def test_serverinfo(self):
        p = t.run([MPOP, f"--host={t.HOST}", f"--port={self.srv.port}", "--timeout=20",
                   "--tls=on", "--tls-starttls=on", f"--tls-trust-file={self.ca.ca}", "--serverinfo"],
                  timeout=30, cwd=self.d)
        self.assertEqual(p.returncode, 0, p.stderr)
        out = p.stdout.decode()
        for cap in ("PIPELINING", "TOP", "UIDL", "STLS", "PLAIN"):
            self.assertIn(cap, out, out)


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=110)
