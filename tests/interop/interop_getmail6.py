# mailnet interop: getmail6 fetches alice's whole mailbox from pop3d (read_all, no delete)
# into a Maildir owned by nobody (getmail run as root delivers only as another user).
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

POP3D = t.pop3d_binary()
(GETMAIL,) = t.require_programs("getmail")

# getmail6's quirks (mailnet_testlib): the Return-Path: it adds, its fork/SIGCHLD race.
ADDED_RETURN_PATH = t.GETMAIL_ADDED_RETURN_PATH
GETMAIL_FORK_RACE = t.GETMAIL_FORK_RACE


class Getmail6(t.FetcherCase):
    binary = POP3D

    def getmail(self, label, retriever, port, extra_retriever="", read_all=True, home=None,
                maildir=None):
        for attempt in range(3):
            p = self._getmail(label, retriever, port, extra_retriever, read_all, home, maildir)
            if p[2].returncode == 0 or GETMAIL_FORK_RACE not in p[2].stdout + p[2].stderr \
                    or home is not None:
                break
            print(f"getmail {label}: its fork/SIGCHLD race hit, retrying ({attempt + 1})",
                  file=sys.stderr)
        if p[2].returncode != 0:
            self.fail(f"getmail {label} -> {p[2].returncode}\n"
                      f"{(p[2].stdout + p[2].stderr).decode('utf-8', 'replace')[-4000:]}")
        return p

    def _getmail(self, label, retriever, port, extra_retriever, read_all, home, maildir):
        home = home or self.fresh_dir(label)
        md = maildir or t.make_maildir(os.path.join(home, "Maildir"))
        gmhome = os.path.join(home, "getmail")
        os.makedirs(gmhome, exist_ok=True)
        if os.geteuid() == 0:
            t.chown_tree(md, "nobody")
            user_line = "user = nobody\n"
        else:
            user_line = ""
        rc = os.path.join(home, "getmailrc")
        with open(rc, "w") as f:
            f.write("[retriever]\n"
                    f"type = {retriever}\n"
                    f"server = {t.HOST}\n"
                    f"port = {port}\n"
                    f"username = {t.USER}\n"
                    f"password = {t.PASSWORD}\n"
                    "timeout = 8\n"  # also how long getmail waits out its fork race
                    f"{extra_retriever}"
                    "\n[destination]\n"
                    "type = Maildir\n"
                    f"path = {md}/\n"
                    f"{user_line}"
                    "\n[options]\n"
                    f"read_all = {'true' if read_all else 'false'}\n"
                    "delete = false\n"
                    "delivered_to = false\n"
                    "received = false\n"
                    "verbose = 1\n")
        p = t.run([GETMAIL, "--getmaildir", gmhome, "--rcfile", rc], timeout=60, cwd=home)
        return home, md, p

    def fetched(self, md):
        out = []
        for m in t.maildir_messages(md):
            if m.startswith(ADDED_RETURN_PATH):
                m = m[len(ADDED_RETURN_PATH):]
            out.append(m)
        return out

    def check(self, md, what):
        t.compare_message_sets(self, self.stored, self.fetched(md), what)
        self.assert_store_untouched()

    def test_pop3(self):
        _h, md, _p = self.getmail("pop3", "SimplePOP3Retriever", self.srv.port)
        self.check(md, "getmail6 SimplePOP3Retriever")

    def test_pop3s(self):
        _h, md, _p = self.getmail("pop3s", "SimplePOP3SSLRetriever", self.srv.tls_port,
                                  extra_retriever=f"ca_certs = {self.ca.ca}\n")
        self.check(md, "getmail6 SimplePOP3SSLRetriever")

    def test_second_run_fetches_nothing_new(self):
        # read_all = false: getmail remembers UIDLs in its oldmail file; needs stable UIDLs.
        home, md, _p = self.getmail("oldmail", "SimplePOP3Retriever", self.srv.port, read_all=False)
        self.check(md, "getmail6 first run")
        _h, _md, p = self.getmail("oldmail", "SimplePOP3Retriever", self.srv.port, read_all=False,
                                  home=home, maildir=md)
        self.assertEqual(len(t.maildir_messages(md)), len(self.stored),
                         f"nothing fetched twice: {p.stdout!r}")


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=110)
