# mailnet interop: pop3d and a private Dovecot on one Maildir (DESIGN.md "On disk"):
# (a) pop3d serves a Maildir Dovecot has served (cur/ flags, dovecot-uidlist, indexes);
# (b) Dovecot serves a Maildir mailnet wrote (,S=,W= names, pop3d's seen flags).
# Both must give the same messages, UIDLs (Dovecot with pop3_uidl_format = %f), sizes and
# byte-identical RETR and TOP output.
import os
import poplib
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

POP3D = t.pop3d_binary()
t.require_programs("dovecot", "doveconf", "doveadm", "openssl")
t.require_root("Dovecot runs as root with a nobody-owned Maildir (PEERS.md)")
for _u in ("dovecot", "dovenull", "nobody"):
    try:
        import pwd
        pwd.getpwnam(_u)
    except KeyError:
        t.skip(f"system user {_u} missing (the dovecot package creates it)")


def dump(port, user="alice", password="secret", retr=True):
    """One POP3 session: {uid: {size, retr (raw wire, still dot-stuffed), top0}}, the LAST
    reply and the message count; QUITs at the end (RETR marks messages seen)."""
    r = t.RawPop3(port, timeout=20)
    try:
        assert r.read_greeting().startswith(b"+OK")
        r.login(user, password)
        r.send(b"UIDL\r\n")
        assert r.readline().startswith(b"+OK")
        uids = {int(n): u.decode() for n, u in
                (ln.split(b" ", 1) for ln in r.read_multiline().split(b"\r\n") if ln)}
        r.send(b"LIST\r\n")
        assert r.readline().startswith(b"+OK")
        sizes = {int(n): int(s) for n, s in
                 (ln.split(b" ", 1) for ln in r.read_multiline().split(b"\r\n") if ln)}
        last = r.cmd("LAST")
        out = {}
        for n, uid in uids.items():
            m = {"msn": n, "size": sizes[n]}
            r.send(f"TOP {n} 0\r\n".encode())
            st = r.readline()
            assert st.startswith(b"+OK"), st
            m["top0"] = r.read_multiline(raw=True)
            if retr:
                r.send(f"RETR {n}\r\n".encode())
                st = r.readline()
                assert st.startswith(b"+OK"), st
                m["retr"] = r.read_multiline(raw=True)
            out[uid] = m
        q = r.cmd("QUIT")
        assert q.startswith(b"+OK"), q
        return out, last, len(uids)
    finally:
        r.close()


class DovecotCompat(unittest.TestCase):
    def setUp(self):
        self.tmp = t.TempDir()
        self.d = self.tmp.path
        self.users = t.write_users(os.path.join(self.d, "users"), {"alice": "secret"})
        self.store = os.path.join(self.d, "store")
        os.makedirs(self.store)
        os.chmod(self.store, 0o755)
        self.mdir = os.path.join(self.store, "alice")
        self.dovecot = t.Dovecot(self.d, self.store, self.users)
        self.srv = None

    def tearDown(self):
        failed = not getattr(self._outcome, "success", True)
        try:
            self.dovecot.stop()
            if self.srv:
                self.srv.stop()
        finally:
            if failed:
                print(f"--- dovecot logs ---\n{self.dovecot.logs()}", file=sys.stderr)
                if self.srv:
                    print(f"--- pop3d stderr ---\n{self.srv.stderr()}", file=sys.stderr)
            self.tmp.cleanup()

    def start_pop3d(self):
        self.srv = t.Pop3d(POP3D, self.store, self.users, workdir=self.d)
        return self.srv.start()

    def assert_same(self, ours, theirs, what):
        self.assertEqual(sorted(ours), sorted(theirs), f"{what}: same UIDLs")
        for uid in theirs:
            o, d = ours[uid], theirs[uid]
            self.assertEqual(o["size"], d["size"], f"{what}: LIST size of {uid}")
            self.assertEqual(o["top0"], d["top0"], f"{what}: TOP 0 of {uid}")
            if "retr" in o and "retr" in d:
                self.assertEqual(o["retr"], d["retr"], f"{what}: RETR of {uid} byte-identical")

    def test_a_pop3d_serves_a_maildir_dovecot_served(self):
        stored = t.fill_maildir(self.mdir, t.test_messages(big=True), with_sizes=False)
        by_name = {n: dat for _l, n, dat in stored}
        t.chown_tree(self.mdir, "nobody")
        self.dovecot.start()
        theirs, _last, count = dump(self.dovecot.port)
        self.assertEqual(count, len(stored))
        self.dovecot.stop()
        # What Dovecot left behind: its files, and every message in cur/ with :2,S.
        names = os.listdir(self.mdir)
        self.assertIn("dovecot-uidlist", names)
        self.assertTrue(any(n.startswith("dovecot.index") for n in names), names)
        files = t.maildir_files(self.mdir)
        for uid, (sub, fn) in files.items():
            self.assertEqual(sub, "cur", fn)
            self.assertIn("S", fn.split(":2,", 1)[1], fn)
        # Dovecot's own RETR matches the store (sanity check of the comparison itself).
        for uid, m in theirs.items():
            self.assertEqual(t.unstuff(m["retr"]) if m["retr"] else b"",
                             t.wire_form(by_name[uid]), f"Dovecot RETR {uid}")

        self.start_pop3d()
        ours, last, count = dump(self.srv.port)
        self.assertEqual(count, len(stored), "dovecot* files are not messages")
        self.assert_same(ours, theirs, "pop3d after Dovecot")
        self.assertEqual(last, b"+OK %d" % count, "every message was seen by Dovecot")
        # pop3d deletes a flagged cur/ file by its base name; Dovecot agrees afterwards.
        victim = next(iter(ours))
        p = t.RawPop3(self.srv.port, timeout=10)
        try:
            p.read_greeting()
            p.login()
            self.assertTrue(p.cmd(f"DELE {ours[victim]['msn']}").startswith(b"+OK"))
            self.assertTrue(p.cmd("QUIT").startswith(b"+OK"))
        finally:
            p.close()
        self.assertNotIn(victim, t.maildir_files(self.mdir))
        self.dovecot.start()
        theirs2, _l, count2 = dump(self.dovecot.port, retr=False)
        self.assertEqual(count2, len(stored) - 1)
        self.assertNotIn(victim, theirs2)

    def test_b_dovecot_serves_a_maildir_mailnet_wrote(self):
        # Written by libmailnet's own delivery (tmp/, fsync, link into new/): names carry
        # ,S=<octets on disk>,W=<octets with CRLF>, which Dovecot trusts for LIST; half the
        # messages are then marked seen by a pop3d session.
        stored = t.deliver_with_mailnet(self.store, "alice", t.test_messages(big=True), self.d)
        for _label, name, _data in stored:
            self.assertRegex(name, r"^\d+\.M\d+P\d+Q\d+\.testhost,S=\d+,W=\d+$")
        by_name = {n: dat for _l, n, dat in stored}
        self.start_pop3d()
        r = t.RawPop3(self.srv.port, timeout=20)
        try:
            r.read_greeting()
            r.login()
            r.send(b"UIDL\r\n")
            r.readline()
            uids = {int(n): u.decode() for n, u in
                    (ln.split(b" ", 1) for ln in r.read_multiline().split(b"\r\n") if ln)}
            for n in uids:
                if n % 2:
                    self.assertTrue(r.cmd(f"RETR {n}").startswith(b"+OK"))
                    r.read_multiline()
            self.assertTrue(r.cmd("QUIT").startswith(b"+OK"))
        finally:
            r.close()
        seen = {uids[n] for n in uids if n % 2}
        files = t.maildir_files(self.mdir)
        self.assertEqual({u for u, (sub, _fn) in files.items() if sub == "cur"}, seen)
        # Dovecot reads pop3d's seen flags: its LAST is the highest seen message (TOP only,
        # so this session changes no flag).
        t.chown_tree(self.mdir, "nobody")
        self.dovecot.start()
        _top_only, dlast, _count = dump(self.dovecot.port, retr=False)
        self.dovecot.stop()
        ours, last, _count = dump(self.srv.port, retr=True)
        self.srv.stop()
        self.assertEqual(last, b"+OK %d" % max(n for n in uids if n % 2))
        self.assertEqual(dlast, last, "Dovecot and pop3d agree on LAST")
        t.chown_tree(self.mdir, "nobody")
        self.dovecot.start()
        theirs, dlast, count = dump(self.dovecot.port)
        self.assertEqual(count, len(stored))
        for uid, m in theirs.items():
            self.assertEqual(t.unstuff(m["retr"]) if m["retr"] else b"",
                             t.wire_form(by_name[uid]), f"Dovecot RETR {uid}")
        self.assert_same(ours, theirs, "Dovecot on mailnet's Maildir")
        self.assertEqual(dlast, b"+OK %d" % count)


def try_login(port, user, password):
    """True if USER/PASS succeeds, False on -ERR [AUTH]; QUITs either way."""
    p = poplib.POP3(t.HOST, port, timeout=20)
    try:
        p.user(user)
        try:
            p.pass_(password)
        except poplib.error_proto as e:
            assert e.args[0].startswith(b"-ERR [AUTH]"), e.args
            return False
        p.quit()
        return True
    finally:
        p.close()


class SamePasswdFile(unittest.TestCase):
    """One Dovecot passwd-file, hashes made by Dovecot's own doveadm pw, serves both."""

    def test_c_hashes_from_doveadm(self):
        tmp = t.TempDir()
        d = tmp.path
        dovecot = srv = None
        try:
            def pw(scheme, secret):
                p = t.run(["doveadm", "pw", "-s", scheme, "-p", secret], timeout=30, check=True)
                return p.stdout.decode().strip()
            good = {  # user: (passwd-file secret field, password)
                "sha512": (pw("SHA512-CRYPT", "pw-sha512"), "pw-sha512"),
                "sha256": (pw("SHA256-CRYPT", "pw-sha256"), "pw-sha256"),
                "blf": (pw("BLF-CRYPT", "pw-blf"), "pw-blf"),
                "crypt": (pw("CRYPT", "pw-crypt"), "pw-crypt"),
                "plain": ("{PLAIN}pw plain with spaces", "pw plain with spaces"),
            }
            noscheme = t.run(["openssl", "passwd", "-6", "pw-noscheme"], timeout=30,
                             check=True).stdout.decode().strip()
            lines = ["# mailnet interop: one passwd-file for Dovecot and pop3d", ""]
            lines += [f"{u}:{sec}:65534:65534::/nonexistent::" if u == "sha512" else f"{u}:{sec}"
                      for u, (sec, _pw) in good.items()]
            lines += [f"noscheme:{noscheme}",            # no {SCHEME}: crypt(3) by prefix
                      "plaintext:secret",                # no {SCHEME}: never PLAIN for pop3d
                      f"unknown:{pw('SSHA512', 'pw-unknown')}"]  # a scheme pop3d lacks
            users = t.write_users(os.path.join(d, "users"), lines)
            store = os.path.join(d, "store")
            for u in list(good) + ["noscheme", "plaintext", "unknown"]:
                t.make_maildir(os.path.join(store, u))
            os.chmod(store, 0o755)
            t.chown_tree(store, "nobody")
            srv = t.Pop3d(POP3D, store, users, workdir=d).start()
            dovecot = t.Dovecot(d, store, users).start()
            for u, (_sec, password) in good.items():
                self.assertTrue(try_login(dovecot.port, u, password), f"Dovecot accepts {u}")
                self.assertTrue(try_login(srv.port, u, password), f"pop3d accepts {u} like Dovecot")
            self.assertTrue(try_login(srv.port, "noscheme", "pw-noscheme"),
                            "no {SCHEME}: the hash prefix picks the crypt(3) scheme")
            # Refusals cost pop3d a failed-login delay each: run them side by side.
            refused = {("sha512", "wrong"): None, ("plaintext", "secret"): None,
                       ("unknown", "pw-unknown"): None}

            def attempt(key):
                refused[key] = try_login(srv.port, *key)
            threads = [threading.Thread(target=attempt, args=(k,)) for k in refused]
            for th in threads:
                th.start()
            for th in threads:
                th.join(30)
            self.assertEqual(refused, {k: False for k in refused},
                             "wrong password, a scheme-less plain text, an unknown scheme: refused")
        finally:
            if dovecot:
                dovecot.stop()
            if srv:
                srv.stop()
            tmp.cleanup()


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=100)
