# mailnet interop: fetchmail fetches alice's whole mailbox from pop3d (keep, fetchall) and
# hands each message to an MDA that writes a Maildir; plain, STLS and pop3s; UIDL memory.
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

POP3D = t.pop3d_binary()
(FETCHMAIL,) = t.require_programs("fetchmail")

MDA = t.FETCHMAIL_MDA  # writes tmp/ then renames into new/


class Fetchmail(t.FetcherCase):
    binary = POP3D

    def fetchmail(self, label, ssl_opts="sslproto ''", port=None, extra_poll="keep fetchall",
                  server_opts="", home=None, maildir=None, expect=0):
        home = home or self.fresh_dir(label)
        md = maildir or t.make_maildir(os.path.join(home, "Maildir"))
        mda = os.path.join(home, "mda.sh")
        with open(mda, "w") as f:
            f.write(MDA)
        os.chmod(mda, 0o755)
        rc = os.path.join(home, "fetchmailrc")
        # invisible: no Received: header; no rewrite: address headers untouched;
        # sslproto '': no opportunistic STLS on the plain runs.
        with open(rc, "w") as f:
            f.write("set no syslog\n"
                    "set invisible\n"
                    f"poll {t.HOST} service {port or self.srv.port} protocol POP3 timeout 20 {server_opts}:\n"
                    f"  user \"{t.USER}\" there with password \"{t.PASSWORD}\" is \"root\" here\n"
                    f"  {extra_poll} no rewrite {ssl_opts}\n"
                    f"  mda \"{mda} {md}\"\n")
        os.chmod(rc, 0o600)
        env = dict(os.environ, FETCHMAILHOME=home, HOME=home)
        cmd = [FETCHMAIL, "-f", rc, "--idfile", os.path.join(home, "fetchids"),
               "--pidfile", os.path.join(home, "fetchmail.pid"), "--nodetach", "-v"]
        p = t.run(cmd, timeout=90, env=env, cwd=home)
        if p.returncode != expect:
            out = (p.stdout + p.stderr).decode("utf-8", "replace")
            self.fail(f"{cmd} -> {p.returncode} (want {expect})\n{out[-4000:]}")
        return home, md, p

    def test_plain(self):
        _h, md, _p = self.fetchmail("plain")
        self.check_fetched(md, "fetchmail plain")

    def test_stls(self):
        _h, md, p = self.fetchmail(
            "stls",
            ssl_opts=f"sslproto 'tls1.2+' sslcertck sslcertfile \"{self.ca.ca}\" sslcommonname localhost")
        self.assertIn(b"STLS", p.stdout + p.stderr)
        self.check_fetched(md, "fetchmail STLS")

    def test_pop3s(self):
        _h, md, _p = self.fetchmail(
            "pop3s", port=self.srv.tls_port,
            ssl_opts=f"ssl sslproto 'tls1.2+' sslcertck sslcertfile \"{self.ca.ca}\" sslcommonname localhost")
        self.check_fetched(md, "fetchmail pop3s")

    def test_uidl_remembers(self):
        # With 'uidl' and without 'fetchall', a second poll finds nothing new (exit 1:
        # "no mail"), which needs stable UIDLs across sessions.
        home, md, _p = self.fetchmail("uidl", extra_poll="keep", server_opts="uidl")
        self.check_fetched(md, "fetchmail uidl first poll")
        self.fetchmail("uidl", extra_poll="keep", server_opts="uidl", home=home, maildir=md, expect=1)
        self.assertEqual(len(t.maildir_messages(md)), len(self.stored), "nothing fetched twice")


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=110)
