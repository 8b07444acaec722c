# mailnet interop: the real pop3c program against two real servers: a private Dovecot (a POP3
# server no one here wrote) and our own pop3d. Each one-command form is compared with what
# Python's poplib sees on the same server; fetch into a Maildir and an mbox is compared with
# the source messages; TLS (implicit and STLS, CA file, host name, fingerprint), the three
# retrieval modes, --new-only with a state file, deleting, a kill -9 in the middle of a fetch
# and the exit codes are checked against both servers.
import collections
import os
import poplib
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

POP3C = t.pop3c_binary()
POP3D = t.program_binary("pop3d")
PW_ENV = "MAILNET_POP3C_TEST_PASSWORD"
# One account per test, so that a test that deletes or marks messages seen changes no other.
USERS = ["forms", "words", "tls", "modes", "keep", "newonly", "newonly2", "nokeep", "crash", "crash2", "crashmbox", "cutmbox", "codes"]
CRASH_MESSAGES = 2000


def have_dovecot():
    """Why a Dovecot cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (Dovecot runs as root with a nobody-owned Maildir, PEERS.md)"
    import shutil
    import pwd
    for p in ("dovecot", "doveconf"):
        if not shutil.which(p):
            return f"{p} not installed"
    for u in ("dovecot", "dovenull", "nobody"):
        try:
            pwd.getpwnam(u)
        except KeyError:
            return f"system user {u} missing (the dovecot package creates it)"
    return None


def lf(data: bytes) -> bytes:
    """A message as pop3c prints and stores it: LF line ends, a final LF (POP3 sends whole
    lines)."""
    return t.normalise(data)


def poplib_bytes(lines) -> bytes:
    """poplib's lines of a RETR or TOP joined as pop3c prints them: with LF, a final LF."""
    return b"".join(ln + b"\n" for ln in lines)


def small_messages(n, tag="m"):
    """n small distinct messages (LF line ends), one with a dot line and a From_ line."""
    out = []
    for i in range(n):
        out.append((f"{tag}{i}",
                    b"From: sender%d@example.org\nTo: alice@example.org\nSubject: %s number %d\n"
                    b"Message-ID: <%s.%d@interop.test>\n\n"
                    b"body of %s %d\n.dot line\nFrom the middle\n" %
                    (i, tag.encode(), i, tag.encode(), i, tag.encode(), i)))
    return out


def parse_mboxrd(data: bytes):
    """The messages of an mboxrd file: split at its From_ lines (every 'From ' at a line
    start in a message is quoted, so each one starts a message), the empty line before the
    next From_ removed, one '>' taken off each line matching ^>+From ."""
    if not data:
        return []
    if not data.startswith(b"From "):
        raise AssertionError(f"an mbox starts with a From_ line: {data[:80]!r}")
    parts = re.split(rb"(?m)^From [^\n]*\n", data)
    assert parts[0] == b"", parts[0][:80]
    out = []
    for p in parts[1:]:
        if not p.endswith(b"\n\n") and p != b"\n":
            raise AssertionError(f"a message in the mbox does not end with an empty line: {p[-80:]!r}")
        p = p[:-1]
        out.append(re.sub(rb"(?m)^>(>*From )", rb"\1", p))
    return out


def mbox_from_lines(data: bytes):
    return re.findall(rb"(?m)^From [^\n]*$", data)


class Pop3cTests:
    """The tests, run against each server (the concrete classes below say which)."""

    server_name = None

    # ----------------------------------------------------------------------------------------
    # Per class: a temp dir, a CA whose server certificate names only localhost, the users
    # file, the store (one Maildir per user) and the server.

    @classmethod
    def setUpClass(cls):
        why = cls.cannot_run()
        if why:
            raise unittest.SkipTest(why)
        cls.tmp = t.TempDir()
        cls.d = cls.tmp.path
        # Only DNS:localhost: pop3c must refuse it at 127.0.0.1 (a host name check that can fail).
        cls.ca = t.TestCA(cls.d, san="DNS:localhost")
        cls.users = t.write_users(os.path.join(cls.d, "users"), {u: t.PASSWORD for u in USERS})
        cls.store = os.path.join(cls.d, "store")
        os.makedirs(cls.store)
        os.chmod(cls.store, 0o755)
        cls.state_home = os.path.join(cls.d, "xdg-state")
        cls.n = 0
        cls.srv = None
        cls.start_server()

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.srv:
                cls.srv.stop()
        finally:
            cls.tmp.cleanup()

    def tearDown(self):
        if not getattr(self._outcome, "success", True):
            print(f"--- {self.server_name} logs ---\n{self.server_logs()[-6000:]}", file=sys.stderr)

    # ----------------------------------------------------------------------------------------
    # Helpers

    def mailbox(self, user, messages):
        """Fills user's Maildir with messages; returns [(label, name, bytes)]."""
        mdir = os.path.join(self.store, user)
        stored = t.fill_maildir(mdir, messages, with_sizes=self.with_sizes)
        self.prepare(mdir)
        return stored

    def deliver_one(self, user, data, n):
        """One more message into user's Maildir (new/), as an MTA would put it."""
        mdir = os.path.join(self.store, user)
        name = t.maildir_name(n, data, host="late", with_sizes=self.with_sizes)
        tmp = os.path.join(mdir, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(mdir, "new", name))
        self.prepare(mdir)
        return name

    def fresh(self, name):
        type(self).n += 1
        return os.path.join(self.d, f"{name}.{self.n}")

    def pop3c(self, *args, user, tls=False, starttls=False, host="127.0.0.1", port=None,
              password=t.PASSWORD, timeout=120, expect=0):
        """Runs pop3c COMMAND... against the server; returns the CompletedProcess after checking
        its exit status is `expect` (None: not checked)."""
        if port is None:
            port = self.srv.tls_port if tls else self.srv.port
        cmd = [POP3C, *args, "--host", host, "--port", str(port), "--user", user,
               "--password-env", PW_ENV, "--timeout", "30"]
        if tls:
            cmd.append("--tls")
        if starttls:
            cmd.append("--starttls")
        env = dict(os.environ, XDG_STATE_HOME=self.state_home)
        env[PW_ENV] = password
        p = t.run(cmd, timeout=timeout, env=env)
        if expect is not None and p.returncode != expect:
            self.fail(f"{' '.join(cmd[1:])}: exit {p.returncode}, want {expect}\n"
                      f"stderr: {p.stderr.decode('utf-8', 'replace')[-3000:]}")
        return p

    def poplib(self, user):
        p = poplib.POP3(t.HOST, self.srv.port, timeout=30)
        p.user(user)
        p.pass_(t.PASSWORD)
        return p

    def server_stat(self, user):
        p = self.poplib(user)
        try:
            return p.stat()
        finally:
            p.quit()

    def server_last(self, user):
        """LAST (RFC 1725; Dovecot: pop3_enable_last): the highest message seen."""
        p = self.poplib(user)
        try:
            return int(p._shortcmd("LAST").split()[1])
        finally:
            p.quit()

    def server_uidls(self, user):
        """{uid: number} on the server now."""
        p = self.poplib(user)
        try:
            _resp, lines, _ = p.uidl()
            return {ln.split(b" ", 1)[1].decode(): int(ln.split(b" ", 1)[0]) for ln in lines}
        finally:
            p.quit()

    def server_messages(self, user):
        """[bytes] of every message as poplib retrieves it, lines joined with LF (RETR marks
        them seen: call it last)."""
        p = self.poplib(user)
        try:
            count, _ = p.stat()
            return [poplib_bytes(p.retr(i)[1]) for i in range(1, count + 1)]
        finally:
            p.quit()

    def assert_same_messages(self, got, want, what):
        """Multisets of messages equal (bytes exact); says what is missing or extra."""
        if sorted(got) == sorted(want):
            return
        left = list(want)
        extra = []
        for g in got:
            if g in left:
                left.remove(g)
            else:
                extra.append(g)
        self.fail(f"{what}: {len(got)} got, {len(want)} wanted; {len(left)} missing "
                  f"(heads {[m[:120] for m in left[:3]]!r}), {len(extra)} unexpected "
                  f"(heads {[m[:120] for m in extra[:3]]!r})")

    # ----------------------------------------------------------------------------------------
    # 1. One-command forms against poplib on the same server.

    def test_1a_listings_capa_top_delete(self):
        user = "forms"
        stored = self.mailbox(user, t.test_messages(big=True))
        p = poplib.POP3(t.HOST, self.srv.port, timeout=30)
        capa = p.capa()  # before login, as pop3c reads it
        p.user(user)
        p.pass_(t.PASSWORD)
        count, octets = p.stat()
        lst = [ln.decode() for ln in p.list()[1]]
        uidl = [ln.decode() for ln in p.uidl()[1]]
        one_list = {n: p.list(n).decode().split(" ", 1)[1] for n in range(1, count + 1)}
        one_uidl = {n: p.uidl(n).decode().split(" ", 1)[1] for n in range(1, count + 1)}
        tops = {n: poplib_bytes(p.top(n, 0)[1]) for n in range(1, count + 1)}
        top3 = poplib_bytes(p.top(2, 3)[1])
        whole2 = poplib_bytes(p.retr(2)[1])
        p.quit()
        self.assertEqual(count, len(stored))

        out = self.pop3c("stat", user=user).stdout.decode()
        self.assertEqual(out, f"{count} {octets}\n", "stat: COUNT OCTETS as STAT says")
        out = self.pop3c("list", user=user).stdout.decode()
        self.assertEqual(out.splitlines(), lst, "list: N OCTETS lines as LIST says")
        out = self.pop3c("uidl", user=user).stdout.decode()
        self.assertEqual(out.splitlines(), uidl, "uidl: N UID lines as UIDL says")
        self.assertEqual(sorted(u.split(" ", 1)[1] for u in uidl), sorted(n for _l, n, _d in stored),
                         "UIDL %f: the Maildir base names")
        for n in (1, count // 2, count):
            with self.subTest(n=n):
                self.assertEqual(self.pop3c("list", str(n), user=user).stdout.decode(),
                                 f"{one_list[n]}\n", f"list {n}")
                self.assertEqual(self.pop3c("uidl", str(n), user=user).stdout.decode(),
                                 f"{one_uidl[n]}\n", f"uidl {n}")
        for n in range(1, count + 1):
            with self.subTest(top=n):
                got = self.pop3c("top", str(n), "0", user=user).stdout
                self.assertEqual(got, tops[n], f"top {n} 0: the header and the empty line")
        self.assertEqual(self.pop3c("top", "2", "3", user=user).stdout, top3, "top 2 3")
        for huge in ("4294967295", "4294967296", "99999999999"):
            with self.subTest(top_lines=huge):
                # More lines than the body has: the whole message (RFC 1939 7), never a count
                # cut down to 32 bits (4294967296 was TOP 2 0).
                self.assertEqual(self.pop3c("top", "2", huge, user=user).stdout, whole2, f"top 2 {huge}")
        for bad in ("-1", "3x", "+1"):
            with self.subTest(top_lines=bad):
                self.pop3c("top", "2", bad, user=user, expect=64)
        out = self.pop3c("capa", user=user).stdout.decode()
        want = sorted(" ".join([name.upper(), *args]) for name, args in capa.items())
        self.assertEqual(sorted(out.splitlines()), want, "capa: one capability per line")
        self.assertIn("UIDL", out.splitlines())

        # delete N, then a fresh stat shows one fewer and the UID is gone.
        victim_uid = uidl[2].split(" ", 1)[1]
        self.assertEqual(self.pop3c("delete", "3", user=user).stdout, b"")
        out = self.pop3c("stat", user=user).stdout.decode()
        deleted_size = int(lst[2].split()[1])
        self.assertEqual(out, f"{count - 1} {octets - deleted_size}\n", "stat after delete 3")
        self.assertNotIn(victim_uid, self.server_uidls(user))
        self.assertEqual(len(os.listdir(os.path.join(self.store, user, "new"))) +
                         len(os.listdir(os.path.join(self.store, user, "cur"))), count - 1)

    def test_1b_retrieve_numbers_and_words(self):
        user = "words"
        stored = self.mailbox(user, t.test_messages(big=True))
        count = len(stored)
        got = {}  # what pop3c printed: (args, [numbers expected])

        def retrieve(*args):
            p = self.pop3c("retrieve", *args, user=user)
            return p.stdout

        self.assertEqual(self.server_last(user), 0, "nothing seen yet")
        # next: the message after LAST; LAST moves as messages are retrieved.
        for _ in range(2):
            last = self.server_last(user)
            got[("next", last)] = (retrieve("next"), [last + 1])
        last = self.server_last(user)
        self.assertEqual(last, 2, "two RETRs in two sessions: LAST is 2")
        got[("start", "last")] = (retrieve("start", "last"), list(range(1, last + 1)))
        got[("3",)] = (retrieve("3"), [3])
        got[("2", "4")] = (retrieve("2", "4"), [2, 3, 4])
        got[("start",)] = (retrieve("start"), [1])
        last = self.server_last(user)
        self.assertEqual(last, 4, "LAST is the highest message seen, not the last one retrieved")
        got[("next", "end")] = (retrieve("next", "end"), list(range(last + 1, count + 1)))
        got[("end",)] = (retrieve("end"), [count])
        got[("start", "end")] = (retrieve("start", "end"), list(range(1, count + 1)))
        self.assertEqual(self.server_last(user), count)
        got[("next", "none")] = (retrieve("next"), [])  # nothing new: no message, exit 0
        got[("next", "end", "none")] = (retrieve("next", "end"), [])
        got[("1", "last")] = (retrieve("1", "last"), list(range(1, count + 1)))

        ref = self.server_messages(user)
        self.assertEqual(len(ref), count)
        # poplib's view of each message is the stored one with LF (sanity of the comparison).
        self.assert_same_messages(ref, [lf(d) for _l, _n, d in stored], "poplib RETR vs the Maildir")
        for args, (out, numbers) in got.items():
            with self.subTest(retrieve=args):
                want = b"".join(ref[n - 1] for n in numbers)
                self.assertEqual(len(out), len(want), f"retrieve {args}: octets")
                self.assertEqual(out, want, f"retrieve {args}: messages {numbers}")

    # ----------------------------------------------------------------------------------------
    # 2. TLS with the test CA: implicit TLS and STLS, host name, fingerprint.

    def test_2_tls(self):
        user = "tls"
        stored = self.mailbox(user, small_messages(3, "tls"))
        want_stat = "%d %d\n" % self.server_stat(user)
        want_all = b"".join(lf(d) for _l, _n, d in stored)
        ca = ["--ca-file", self.ca.ca]
        with self.subTest("implicit TLS, CA file, host localhost"):
            p = self.pop3c("stat", *ca, user=user, tls=True, host="localhost")
            self.assertEqual(p.stdout.decode(), want_stat)
            p = self.pop3c("retrieve", "start", "end", *ca, user=user, tls=True, host="localhost")
            self.assertEqual(p.stdout, want_all)
        with self.subTest("STLS, CA file, host localhost"):
            p = self.pop3c("stat", *ca, user=user, starttls=True, host="localhost")
            self.assertEqual(p.stdout.decode(), want_stat)
            p = self.pop3c("retrieve", "start", "end", *ca, user=user, starttls=True, host="localhost")
            self.assertEqual(p.stdout, want_all)
            p = self.pop3c("capa", *ca, user=user, starttls=True, host="localhost")
            self.assertNotIn("STLS", p.stdout.decode().split(), "CAPA asked again after STLS")
        with self.subTest("the certificate names only localhost: 127.0.0.1 refused"):
            for mode in ({"tls": True}, {"starttls": True}):
                p = self.pop3c("stat", *ca, user=user, host="127.0.0.1", expect=77, **mode)
                self.assertEqual(p.stdout, b"")
                self.assertIn(b"127.0.0.1", p.stderr)
        with self.subTest("not signed by a CA the system trusts: refused"):
            self.pop3c("stat", user=user, tls=True, host="localhost", expect=77)
        with self.subTest("a --ca-file that cannot be read: a usage error, before connecting"):
            p = self.pop3c("stat", "--ca-file", os.path.join(self.ca.ca + ".missing"), user=user, tls=True,
                           host="localhost", expect=64)
            self.assertIn(b"--ca-file", p.stderr)
        fp = self.ca.fingerprint()
        wrong = fp[:-2] + ("00" if fp[-2:] != "00" else "11")
        with self.subTest("a wrong --fingerprint: refused"):
            for mode in ({"tls": True}, {"starttls": True}):
                p = self.pop3c("stat", "--fingerprint", wrong, user=user, host="localhost", expect=77, **mode)
                self.assertIn(b"fingerprint", p.stderr)
        with self.subTest("the right --fingerprint: accepted (it replaces the CA and name checks)"):
            colons = ":".join(fp[i:i + 2] for i in range(0, len(fp), 2)).upper()
            for mode in ({"tls": True}, {"starttls": True}):
                for pin in (fp, colons):
                    p = self.pop3c("stat", "--fingerprint", pin, user=user, host="127.0.0.1", **mode)
                    self.assertEqual(p.stdout.decode(), want_stat)

    # ----------------------------------------------------------------------------------------
    # 3. --retr-mode retr|list|slow fetch the same bytes.

    def test_3_retr_modes(self):
        user = "modes"
        stored = self.mailbox(user, t.test_messages(big=True))
        want = [lf(d) for _l, _n, d in stored]
        outs = {}
        for mode in ("retr", "list", "slow"):
            with self.subTest(mode=mode):
                out = self.pop3c("retrieve", "start", "end", "--retr-mode", mode, user=user).stdout
                outs[mode] = out
                maildir = self.fresh(f"modes-{mode}")
                self.pop3c("fetch", "--maildir", maildir, "--keep", "--retr-mode", mode, user=user)
                self.assert_same_messages(t.maildir_messages(maildir), want, f"fetch --retr-mode {mode}")
        self.assertEqual(outs["retr"], outs["list"], "retrieve: retr and list modes give the same bytes")
        self.assertEqual(outs["retr"], outs["slow"], "retrieve: retr and slow modes give the same bytes")
        self.assertEqual(outs["retr"], b"".join(self.server_messages(user)))

    # ----------------------------------------------------------------------------------------
    # 4. fetch --keep into a Maildir and an mbox.

    def test_4_fetch_keep_maildir_and_mbox(self):
        user = "keep"
        stored = self.mailbox(user, t.test_messages(big=True))
        want = [lf(d) for _l, _n, d in stored]
        before = self.server_stat(user)
        maildir = self.fresh("keep-maildir")
        self.pop3c("fetch", "--maildir", maildir, "--keep", user=user)
        self.assertEqual(os.listdir(os.path.join(maildir, "tmp")), [])
        self.assertEqual(os.listdir(os.path.join(maildir, "cur")), [])
        self.assert_same_messages(t.maildir_messages(maildir), want, "fetch --maildir --keep")
        mbox = self.fresh("keep.mbox")
        self.pop3c("fetch", "--mbox", mbox, "--keep", user=user)
        with open(mbox, "rb") as f:
            data = f.read()
        self.assertEqual(os.stat(mbox).st_mode & 0o777, 0o600)
        froms = mbox_from_lines(data)
        self.assertEqual(len(froms), len(stored), "one From_ line per message")
        self.assertTrue(any(f.startswith(b"From bob@example.org ") for f in froms),
                        f"the sender from Return-Path: {froms!r}")
        self.assertIn(b"\n>From here on the body", data, "a From_ in a body is quoted")
        self.assert_same_messages(parse_mboxrd(data), want, "fetch --mbox --keep (mboxrd)")
        # A second fetch appends.
        self.pop3c("fetch", "--mbox", mbox, "--keep", user=user)
        with open(mbox, "rb") as f:
            self.assert_same_messages(parse_mboxrd(f.read()), want * 2, "a second fetch appends")
        self.assertEqual(self.server_stat(user), before, "--keep: the server keeps everything")

    # ----------------------------------------------------------------------------------------
    # 5. --new-only --state: nothing twice, then exactly the new one.

    def test_5_new_only_state(self):
        user = "newonly"
        stored = self.mailbox(user, small_messages(5, "new"))
        maildir = self.fresh("newonly-maildir")
        state = self.fresh("newonly.state")
        args = ("fetch", "--maildir", maildir, "--keep", "--new-only", "--state", state)
        self.pop3c(*args, user=user)
        first = t.maildir_messages(maildir)
        self.assert_same_messages(first, [lf(d) for _l, _n, d in stored], "first run: all")
        self.pop3c(*args, user=user)
        self.assertEqual(len(t.maildir_messages(maildir)), len(stored), "second run: 0 new files")
        late = (b"From: late@example.org\nTo: alice@example.org\nSubject: delivered later\n\n"
                b"late body\n..\n")
        self.deliver_one(user, late, 99)
        self.pop3c(*args, user=user)
        got = t.maildir_messages(maildir)
        self.assert_same_messages(got, [lf(d) for _l, _n, d in stored] + [late],
                                  "third run: exactly the new message")
        self.assertEqual(self.server_stat(user)[0], len(stored) + 1, "--keep: nothing deleted")
        # The state file is bound to its account: another account's run with it is refused
        # (exit 64) before anything is fetched, and the file is left as it was.
        other = "newonly2"
        self.mailbox(other, small_messages(2, "other"))
        before = open(state, "rb").read()
        self.assertIn(b"\n# account newonly@127.0.0.1:", before)
        other_dir = self.fresh("newonly2-maildir")
        p = self.pop3c("fetch", "--maildir", other_dir, "--new-only", "--state", state, user=other, expect=64)
        self.assertIn(b"kept for newonly@127.0.0.1:", p.stderr)
        self.assertEqual(open(state, "rb").read(), before, "the other account's state is untouched")
        self.assertFalse(os.path.exists(other_dir), "checked before the Maildir is made")
        # Before the login: a wrong password makes no difference to the answer.
        self.pop3c("fetch", "--maildir", other_dir, "--state", state, user=other, password="wrong", expect=64)
        self.assertEqual(self.server_stat(other)[0], 2, "nothing deleted")

    # ----------------------------------------------------------------------------------------
    # 6. Without --keep: deleted on the server, all in the Maildir.

    def test_6_fetch_deletes(self):
        user = "nokeep"
        stored = self.mailbox(user, t.test_messages(big=True))
        maildir = self.fresh("nokeep-maildir")
        self.pop3c("fetch", "--maildir", maildir, user=user)  # the default state file
        self.assert_same_messages(t.maildir_messages(maildir), [lf(d) for _l, _n, d in stored],
                                  "fetch without --keep")
        self.assertEqual(self.server_stat(user), (0, 0), "every fetched message deleted")
        state = os.path.join(self.state_home, "mailnet-pop3c", f"{user}@127.0.0.1_{self.srv.port}.state")
        self.assertTrue(os.path.exists(state), f"the default state file {state}")
        # A second run finds nothing and changes nothing.
        self.pop3c("fetch", "--maildir", maildir, user=user)
        self.assertEqual(len(t.maildir_messages(maildir)), len(stored))

    # ----------------------------------------------------------------------------------------
    # 7. kill -9 in the middle of a fetch, then a rerun: nothing lost, nothing twice.

    # Where the kill falls: within the first batch (no state yet), or in the second batch
    # (--batch 500: the first one is in the state file, as pending while its flush runs beside
    # the second batch's retrieval, never QUIT). A batch's messages wait in DIR/tmp until its
    # flush moves them into DIR/new, so the kill point counts the messages in both.
    KILL_AT = {"first-batch": ("crash", 20), "second-batch": ("crash2", 600)}
    BATCH = 500
    _crash = None  # {kill point: the scenario's outcome}, per server class

    @staticmethod
    def run_and_kill(cmd, env, ready, interval, then=0.0):
        """Starts cmd, SIGKILLs it `then` seconds after ready() holds; its exit status if it
        ended before (None once killed)."""
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, preexec_fn=t._set_pdeathsig)
        try:
            t.wait_until(lambda: proc.poll() is not None or ready(), timeout=60, interval=interval)
            time.sleep(then)
            finished_early = proc.poll()
            if finished_early is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            return finished_early
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)

    def crash_scenario(self, point):
        """Fills a mailbox with CRASH_MESSAGES small messages, starts `pop3c fetch --maildir DIR
        --state S` (deleting), SIGKILLs it once DIR/new has enough files, looks at the server
        and DIR, then reruns it to completion. Once per server class and kill point."""
        cls = type(self)
        if cls._crash is None:
            cls._crash = {}
        if point in cls._crash:
            return cls._crash[point]
        user, kill_at = self.KILL_AT[point]
        stored = self.mailbox(user, small_messages(CRASH_MESSAGES, user))
        want = [lf(d) for _l, _n, d in stored]
        assert len(set(want)) == len(want), "the fixture messages are distinct"
        maildir = self.fresh(f"{user}-maildir")
        state = self.fresh(f"{user}.state")
        args = ["fetch", "--maildir", maildir, "--state", state, "--batch", str(self.BATCH)]
        cmd = [POP3C, *args, "--host", "127.0.0.1", "--port", str(self.srv.port), "--user", user,
               "--password-env", PW_ENV, "--timeout", "30"]
        env = dict(os.environ, XDG_STATE_HOME=self.state_home)
        env[PW_ENV] = t.PASSWORD
        new = os.path.join(maildir, "new")
        tmp = os.path.join(maildir, "tmp")

        def written():
            # Messages, not names: while a batch is committed a message is linked into new/
            # before its tmp/ name goes, so both names count once (by inode).
            inodes = set()
            for d in (new, tmp):
                if not os.path.isdir(d):
                    continue
                for name in os.listdir(d):
                    try:
                        inodes.add(os.stat(os.path.join(d, name)).st_ino)
                    except FileNotFoundError:
                        pass  # gone since the listing: its other name counts
            return len(inodes)

        started = time.monotonic()
        finished_early = self.run_and_kill(cmd, env, lambda: written() >= kill_at, interval=0.002)
        killed_after = time.monotonic() - started
        at_kill = t.maildir_messages(maildir)
        # The UIDLs in the state file when killed: stored, and pending ("? UIDL LOCATOR": written,
        # its flush not yet confirmed; the rerun looks for it in DIR).
        stored_at_kill, pending_at_kill = [], []
        if os.path.exists(state):
            with open(state, "rb") as f:
                for ln in f.read().split(b"\n"):
                    if not ln or ln.startswith(b"#"):
                        continue
                    if ln.startswith(b"? "):
                        pending_at_kill.append(ln.decode().split(" ")[1])
                    else:
                        stored_at_kill.append(ln.decode())
        in_state = stored_at_kill + pending_at_kill
        on_server = self.server_uidls(user)
        gone = [lf(d) for _l, n, d in stored if n not in on_server]
        rerun = self.pop3c(*args, user=user, timeout=180, expect=None)
        got = t.maildir_messages(maildir)
        c = dict(want=want, by_uid={n: lf(d) for _l, n, d in stored}, finished_early=finished_early, at_kill=at_kill, gone=gone,
                 in_state=in_state, stored_at_kill=stored_at_kill, rerun=rerun, got=got,
                 stat_after=self.server_stat(user))
        cls._crash[point] = c
        print(f"\n[{self.server_name}, {point}] kill -9 after {killed_after:.2f} s: {len(at_kill)} of "
              f"{len(want)} messages in DIR/new, {len(in_state)} UIDLs in the state file, {len(gone)} gone "
              f"from the server; after the rerun {len(got)} files, {len(got) - len(set(got))} duplicates",
              file=sys.stderr)
        return c

    def check_crash(self, point):
        c = self.crash_scenario(point)
        self.assertIsNone(c["finished_early"], "pop3c finished before it could be killed")
        self.assertLess(len(c["at_kill"]), len(c["want"]), f"{len(c['at_kill'])} stored when killed")
        at_kill = set(c["at_kill"])
        for m in c["gone"]:
            self.assertIn(m, at_kill, f"deleted on the server but not stored locally: {m[:100]!r}")
        self.assertEqual(c["gone"], [], "no QUIT, so the server deleted nothing")
        # Recorded as stored only once durable in DIR (a batch's flush ends before its record).
        for uid in c["stored_at_kill"]:
            self.assertIn(c["by_uid"][uid], at_kill, f"{uid}: recorded as stored, yet not in DIR when killed")
        self.assertEqual(c["rerun"].returncode, 0, c["rerun"].stderr.decode("utf-8", "replace"))
        self.assertEqual(c["stat_after"], (0, 0), "the server mailbox ends empty")
        got = set(c["got"])
        missing = [m for m in c["want"] if m not in got]
        self.assertEqual(len(missing), 0, f"{len(missing)} messages lost, e.g. {missing[:2]!r}")
        wanted = set(c["want"])
        foreign = [m for m in got if m not in wanted]
        self.assertEqual(foreign, [], "no partial or foreign message in the Maildir")
        return c

    def test_7a_kill_in_first_batch_then_rerun(self):
        c = self.check_crash("first-batch")
        self.assertEqual(c["in_state"], [], "no batch finished: nothing in the state file")

    def test_7b_kill_in_second_batch_then_rerun(self):
        c = self.check_crash("second-batch")
        # The first batch at least, pending while its flush runs beside the second batch's
        # retrieval or stored after it; the second too if the kill came after its retrieval.
        self.assertIn(len(c["in_state"]), (self.BATCH, 2 * self.BATCH), "the first batch is in the state file")
        # The rerun DELEs the first batch without fetching it again: each of it is there once.
        times = collections.Counter(c["got"])
        for uid in c["in_state"]:
            self.assertIn(uid, c["by_uid"], "the state file holds the server's UIDLs")
            self.assertEqual(times[c["by_uid"][uid]], 1, f"{uid}: in the state file, yet fetched again")

    def test_7c_no_duplicates_after_kill(self):
        """A kill -9 anywhere in a batch leaves no duplicate after the rerun: nothing of a batch
        reaches DIR/new before its UIDLs are in the state file as pending, and the rerun finds
        what a pending record names (docs/pop3c.md "What fetch guarantees")."""
        for point in self.KILL_AT:
            with self.subTest(kill=point):
                c = self.crash_scenario(point)
                dups = len(c["got"]) - len(set(c["got"]))
                self.assertEqual(dups, 0, f"{dups} duplicates after kill -9 with {len(c['at_kill'])} messages "
                                          f"in DIR/new and {len(c['in_state'])} UIDLs in the state file")

    def test_7d_kill_during_an_mbox_fetch_then_rerun(self):
        """The same into an mbox: a batch waits in the sink's spool until its records are saved
        as pending, so the file never holds a message no record names; the rerun cuts off a
        message the kill left half appended and finds the rest by its record."""
        user = "crashmbox"
        stored = self.mailbox(user, small_messages(CRASH_MESSAGES, user))
        want = [lf(d) for _l, _n, d in stored]
        mbox = self.fresh(f"{user}.mbox")
        state = self.fresh(f"{user}.state")
        args = ["fetch", "--mbox", mbox, "--state", state, "--batch", "50"]
        cmd = [POP3C, *args, "--host", "127.0.0.1", "--port", str(self.srv.port), "--user", user,
               "--password-env", PW_ENV, "--timeout", "30"]
        env = dict(os.environ, XDG_STATE_HOME=self.state_home)
        env[PW_ENV] = t.PASSWORD
        size = lambda: os.path.getsize(mbox) if os.path.exists(mbox) else 0
        # The first batch appended: the kill falls in a later batch's retrieval or append.
        finished_early = self.run_and_kill(cmd, env, lambda: size() > 0, interval=0.001, then=0.01)
        self.assertIsNone(finished_early, "pop3c finished before it could be killed")
        with open(mbox, "rb") as f:
            at_kill = len(mbox_from_lines(f.read()))
        in_state = 0
        with open(state, "rb") as f:
            in_state = sum(1 for ln in f.read().split(b"\n") if ln and not ln.startswith(b"#"))
        self.assertLessEqual(at_kill, in_state, "every message in the mbox has a record (stored or pending)")
        self.assertEqual(len(self.server_uidls(user)), len(want), "no QUIT: the server deleted nothing")
        self.pop3c(*args, user=user, timeout=180)
        with open(mbox, "rb") as f:
            got = parse_mboxrd(f.read())
        print(f"\n[{self.server_name}, mbox] kill -9: {at_kill} messages in the mbox, {in_state} records; "
              f"after the rerun {len(got)} messages", file=sys.stderr)
        self.assertEqual(collections.Counter(got), collections.Counter(want), "each message exactly once")
        self.assertEqual(self.server_stat(user), (0, 0), "the server mailbox ends empty")

    def test_7e_a_batch_cut_off_in_the_mbox_is_removed_and_fetched_again(self):
        """The rerun's recovery, step by step: a run killed while it appended a batch left the
        batch's records pending in the state file, its spool beside it (STATE.spool: a header
        naming the mbox and where in it the batch begins, then the batch), and the mbox ending part way
        into the batch. The rerun cuts the file back to where the batch began (its octets are
        the spool's first ones) and fetches the batch again: each message once."""
        user = "cutmbox"
        stored = self.mailbox(user, small_messages(12, user))
        want = [lf(d) for _l, _n, d in stored]
        mbox, state = self.fresh(f"{user}.mbox"), self.fresh(f"{user}.state")
        args = ["fetch", "--mbox", mbox, "--state", state, "--keep", "--new-only"]
        self.pop3c(*args, user=user)
        with open(mbox, "rb") as f:
            full = f.read()
        with open(state, "rb") as f:
            lines = f.read().decode().split("\n")
        records = [ln for ln in lines if ln and not ln.startswith("#")]
        self.assertEqual(len(records), 12)
        starts = [m.start() for m in re.finditer(rb"(?m)^From ", full)] + [len(full)]
        self.assertEqual(len(starts), 13)

        def fnv1a(data):
            h = 14695981039346656037
            for b in data:
                h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
            return h

        # The order of the records is the order of the messages in the file (one batch).
        # The last 6 become the killed run's pending batch; the file ends 40 octets into the
        # third of them.
        first, cut_at = 6, 8
        pending = []
        for i in range(first, 12):
            uid, size = records[i].split(" ")
            octets = full[starts[i]:starts[i + 1]]
            pending.append(f"? {uid} mbox:{starts[i]}:{starts[i + 1]}:{fnv1a(octets):016x} {size}")
        with open(state, "w") as f:
            f.write("\n".join([ln for ln in lines if ln.startswith("#")] + records[:first] + pending) + "\n")
        batch = full[starts[first]:]
        with open(mbox, "wb") as f:
            f.write(full[:starts[cut_at] + 40])
        st = os.stat(mbox)
        header = f"mailnet-spool {st.st_dev} {st.st_ino} {starts[first]} 0 {len(batch)}\n".encode().ljust(127) + b"\n"
        with open(state + ".spool", "wb") as f:
            f.write(header + batch)
        p = self.pop3c(*args, user=user)
        self.assertIn(b"0 messages of an interrupted run were already stored", p.stderr)
        self.assertIn(b"the part of a batch an interrupted run was appending", p.stderr)
        with open(mbox, "rb") as f:
            got = parse_mboxrd(f.read())
        self.assertEqual(collections.Counter(got), collections.Counter(want), "each message exactly once")
        self.assertFalse(os.path.exists(state + ".spool"), "the empty spool is removed")

    # ----------------------------------------------------------------------------------------
    # 8. Exit codes.

    def test_8_exit_codes(self):
        user = "codes"
        self.mailbox(user, small_messages(2, "codes"))
        with self.subTest("wrong password: 77"):
            p = self.pop3c("stat", user=user, password="wrong", expect=77)
            self.assertNotIn(b"wrong", p.stderr, "the password is never shown")
        with self.subTest("retrieve 999: 64"):
            p = self.pop3c("retrieve", "999", user=user, expect=64)
            self.assertEqual(p.stdout, b"")
        with self.subTest("list 3 of 2: 64"):
            self.pop3c("list", "3", user=user, expect=64)
        with self.subTest("connection refused: 69"):
            self.pop3c("stat", user=user, port=t.free_port(), expect=69)
        self.assertEqual(self.server_stat(user)[0], 2)


class DovecotServer(Pop3cTests, unittest.TestCase):
    server_name = "dovecot"
    with_sizes = False  # Dovecot trusts ,S=/W= in names: let it count for itself

    @classmethod
    def cannot_run(cls):
        return have_dovecot()

    @classmethod
    def start_server(cls):
        cls.srv = t.Dovecot(cls.d, cls.store, cls.users, tls=cls.ca, implicit_tls=True)
        cls.srv.start()

    @classmethod
    def prepare(cls, mdir):
        t.chown_tree(mdir, "nobody")

    def server_logs(self):
        return self.srv.logs()


class Pop3dServer(Pop3cTests, unittest.TestCase):
    server_name = "pop3d"
    with_sizes = True

    @classmethod
    def cannot_run(cls):
        return None

    @classmethod
    def start_server(cls):
        cls.srv = t.Pop3d(POP3D, cls.store, cls.users, tls=cls.ca, implicit_tls=True, workdir=cls.d)
        cls.srv.start()

    @classmethod
    def prepare(cls, mdir):
        pass

    def server_logs(self):
        return self.srv.stderr()


class ScriptedPop3:
    """A POP3 server of a few lines on 127.0.0.1 that records what each read from the client
    held: to see which commands pop3c sends, and which of them it sends together."""

    def __init__(self, messages, before_retr=None):
        import socket
        import threading
        self.messages = messages
        self.before_retr = before_retr  # called with N before RETR N is answered
        self.stat_count = None  # STAT's count, if not the messages'
        self.answer_twice = None  # RETR N answered twice (a broken server)
        self.uidls = None  # UIDL's ids, if not uid1, uid2, ...
        self.list_twice = False  # LIST names message 1 twice (a broken server)
        self.after_quit = b""  # sent after QUIT's answer, before the close
        self.greeting = b"+OK scripted ready"  # an APOP timestamp may be added
        self.stat_error = None  # STAT answered "-ERR " + this
        self.stat_answer = None  # STAT answered with these octets instead (b"": the connection closed)
        self.user_error = None  # USER answered "-ERR " + this (PASS still +OK: a broken server)
        self.dele_error = None  # every DELE answered "-ERR " + this
        self.uidl_error = None  # UIDL answered "-ERR " + this
        self.list_crlf = False  # LIST gives CRLF octets (Dovecot's size once cached), not LF
        self.capa = b"USER\r\nUIDL\r\nPIPELINING\r\n"
        self.reads = []  # the commands of each read, in order
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def commands(self):
        return [c for r in self.reads for c in r]

    def serve(self):
        conn, _ = self.sock.accept()
        self.sock.close()
        with conn:
            conn.sendall(self.greeting + b"\r\n")
            buf = b""
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                lines = buf.split(b"\r\n")
                buf = lines.pop()
                self.reads.append([ln.decode() for ln in lines])
                out = b""
                for ln in lines:
                    verb, _, arg = ln.decode().partition(" ")
                    verb = verb.upper()
                    if verb == "CAPA":
                        out += b"+OK\r\n" + self.capa + b".\r\n"
                    elif verb == "APOP":
                        out += b"-ERR [AUTH] APOP is not for you\r\n"
                    elif verb == "USER" and self.user_error:
                        out += b"-ERR " + self.user_error + b"\r\n"
                    elif verb == "DELE" and self.dele_error:
                        out += b"-ERR " + self.dele_error + b"\r\n"
                    elif verb in ("USER", "PASS", "NOOP", "DELE"):
                        out += b"+OK\r\n"
                    elif verb == "STAT" and self.stat_answer is not None:
                        if not self.stat_answer:
                            conn.sendall(out)
                            return
                        out += self.stat_answer
                    elif verb == "STAT" and self.stat_error:
                        out += b"-ERR " + self.stat_error + b"\r\n"
                    elif verb == "STAT":
                        out += b"+OK %d %d\r\n" % (self.stat_count or len(self.messages), sum(len(m) for m in self.messages))
                    elif verb == "LIST":
                        out += b"+OK\r\n" + b"".join(b"%d %d\r\n" % (i + 1, len(m) + (m.count(b"\n") if self.list_crlf else 0))
                                                     for i, m in enumerate(self.messages)) + (
                            b"1 %d\r\n" % len(self.messages[0]) if self.list_twice else b"") + b".\r\n"
                    elif verb == "UIDL" and self.uidl_error:
                        out += b"-ERR " + self.uidl_error + b"\r\n"
                    elif verb == "UIDL":
                        ids = self.uidls or [b"uid%d" % (i + 1) for i in range(len(self.messages))]
                        out += b"+OK\r\n" + b"".join(b"%d %s\r\n" % (i + 1, u) for i, u in enumerate(ids)) + b".\r\n"
                    elif verb == "RETR":
                        if self.before_retr:
                            if out:  # the answers before it are sent first
                                conn.sendall(out)
                                out = b""
                            self.before_retr(int(arg))
                        m = self.messages[int(arg) - 1]
                        out += (b"+OK %d octets\r\n" % len(m) + m.replace(b"\n", b"\r\n") + b".\r\n") * (
                            2 if self.answer_twice == int(arg) else 1)
                    elif verb == "QUIT":
                        conn.sendall(out + b"+OK bye\r\n")
                        if self.after_quit:
                            time.sleep(0.1)  # a late answer, in a segment of its own
                            conn.sendall(self.after_quit)
                        return
                    else:
                        out += b"-ERR unknown\r\n"
                if out:
                    conn.sendall(out)


class PasswordFile(unittest.TestCase):
    """--password-file: the first line of a file, a pipe or a FIFO, read within --timeout and at
    most 4096 octets, so a FIFO no one writes or /dev/zero is a clear error, not a hang."""

    def stat(self, path, timeout="30", port=None, srv=None):
        cmd = [POP3C, "stat", "--host", "127.0.0.1", "--port", str(srv.port if srv else port or t.free_port()),
               "--user", "u", "--password-file", path, "--timeout", timeout]
        p = t.run(cmd, timeout=60)
        if srv:
            srv.thread.join(10)
        return p

    def test_a_file_or_a_fifo_written_later_gives_its_first_line(self):
        with t.TempDir() as d:
            f = os.path.join(d, "pw")
            with open(f, "wb") as out:
                out.write(b"pw\r\nsecond line\n")
            srv = ScriptedPop3([b"Subject: a\n\nbody\n"])
            p = self.stat(f, srv=srv)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("PASS pw", srv.commands())
            fifo = os.path.join(d, "fifo")
            os.mkfifo(fifo)
            # The writer comes half a second after pop3c opened the FIFO (a password manager).
            writer = subprocess.Popen(["sh", "-c", f"sleep 0.5; printf 'pw\\n' > {fifo}"])
            srv = ScriptedPop3([b"Subject: a\n\nbody\n"])
            p = self.stat(fifo, srv=srv)
            writer.wait(10)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("PASS pw", srv.commands())

    def test_a_fifo_no_one_writes_ends_at_the_timeout_and_dev_zero_at_once(self):
        with t.TempDir() as d:
            fifo = os.path.join(d, "fifo")
            os.mkfifo(fifo)
            started = time.monotonic()
            p = self.stat(fifo, timeout="1")
            self.assertEqual(p.returncode, 75, p.stderr)  # a timeout: try again later
            self.assertIn(b"nothing to read from " + fifo.encode() + b" within 1 s", p.stderr)
            self.assertLess(time.monotonic() - started, 10)
            empty = os.path.join(d, "empty")
            open(empty, "wb").close()
            p = self.stat(empty)
            self.assertEqual(p.returncode, 64, p.stderr)
            self.assertIn(b"it is empty", p.stderr)
        p = self.stat("/dev/zero")
        self.assertEqual(p.returncode, 64, p.stderr)
        self.assertIn(b"the first line of /dev/zero is longer than 4096 octets", p.stderr)
        with t.TempDir() as d:
            longest = os.path.join(d, "longest")  # 4096 octets and CR LF: taken (no server: 69)
            with open(longest, "wb") as out:
                out.write(b"p" * 4096 + b"\r\n")
            p = self.stat(longest)
            self.assertEqual(p.returncode, 69, p.stderr)
            with open(longest, "wb") as out:
                out.write(b"p" * 4097 + b"\n")
            self.assertEqual(self.stat(longest).returncode, 64)


class LoginChoice(unittest.TestCase):
    """--auth: a server whose greeting offers APOP but which refuses it is usable with USER/PASS."""

    def run_stat(self, srv, *args):
        cmd = [POP3C, "stat", *args, "--host", "127.0.0.1", "--port", str(srv.port), "--user", "u",
               "--password-env", PW_ENV, "--timeout", "30"]
        p = t.run(cmd, timeout=60, env=dict(os.environ, **{PW_ENV: "pw"}))
        srv.thread.join(10)
        return p

    def test_auth_user_logs_in_where_the_offered_apop_is_refused(self):
        msgs = [b"Subject: a\n\nbody\n", b"Subject: b\n\nbody\n"]
        srv = ScriptedPop3(msgs)
        srv.greeting = b"+OK scripted ready <1896.697170952@scripted.example>"
        p = self.run_stat(srv)  # auto: APOP, offered on loopback without TLS
        self.assertEqual(p.returncode, 77, p.stderr)
        self.assertIn(b"APOP is not for you", p.stderr)
        self.assertTrue(any(c.startswith("APOP u ") for c in srv.commands()), srv.commands())
        srv = ScriptedPop3(msgs)
        srv.greeting = b"+OK scripted ready <1896.697170952@scripted.example>"
        p = self.run_stat(srv, "--auth", "user")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, b"2 %d\n" % sum(len(m) for m in msgs))  # the scripted STAT's
        cmds = srv.commands()
        self.assertIn("USER u", cmds)
        self.assertIn("PASS pw", cmds)
        self.assertFalse(any(c.startswith("APOP") for c in cmds), cmds)

    def test_a_stat_refused_after_the_login_is_not_called_a_refused_login(self):
        srv = ScriptedPop3([b"Subject: a\n\nbody\n"])
        srv.stat_error = b"maildrop damaged"
        p = self.run_stat(srv)
        self.assertEqual(p.returncode, 69, p.stderr)
        self.assertIn(b"cannot open the mailbox on 127.0.0.1", p.stderr)
        self.assertIn(b"maildrop damaged", p.stderr)
        self.assertNotIn(b"cannot log in", p.stderr)
        srv = ScriptedPop3([b"Subject: a\n\nbody\n"])
        srv.stat_error = b"[SYS/TEMP] try later"
        self.assertEqual(self.run_stat(srv).returncode, 75)

    def test_a_broken_or_closed_stat_after_the_login_is_not_called_a_refused_login(self):
        for answer in (b"+OK many octets\r\n", b""):
            with self.subTest(answer=answer):
                srv = ScriptedPop3([b"Subject: a\n\nbody\n"])
                srv.stat_answer = answer
                p = self.run_stat(srv)
                self.assertEqual(p.returncode, 76, p.stderr)
                self.assertIn(b"cannot open a session with 127.0.0.1:%d" % srv.port, p.stderr)
                self.assertNotIn(b"cannot log in", p.stderr)
                self.assertIn("PASS pw", srv.commands())

    def test_user_refused_is_a_refused_login_whatever_pass_says(self):
        srv = ScriptedPop3([b"Subject: a\n\nbody\n"])  # PIPELINING: USER and PASS go together
        srv.user_error = b"no such user"
        p = self.run_stat(srv, "--auth", "user")
        self.assertEqual(p.returncode, 77, p.stderr)
        self.assertIn(b"no such user", p.stderr)
        self.assertNotIn("STAT", srv.commands())
        srv = ScriptedPop3([b"Subject: a\n\nbody\n"])
        srv.capa = b"USER\r\nUIDL\r\n"  # no PIPELINING: no PASS after a refused USER
        srv.user_error = b"no such user"
        p = self.run_stat(srv, "--auth", "user")
        self.assertEqual(p.returncode, 77, p.stderr)
        self.assertFalse(any(c.startswith("PASS") for c in srv.commands()), srv.commands())

    def test_auth_plain_that_the_server_does_not_list_is_unavailable(self):
        srv = ScriptedPop3([b"Subject: a\n\nbody\n"])  # CAPA lists no SASL
        p = self.run_stat(srv, "--auth", "plain")
        self.assertEqual(p.returncode, 69, p.stderr)
        self.assertIn(b"offers no SASL PLAIN", p.stderr)
        self.assertFalse(any(c.startswith("AUTH") for c in srv.commands()), srv.commands())

    def test_auth_apop_without_a_timestamp_is_unavailable(self):
        srv = ScriptedPop3([b"Subject: a\n\nbody\n"])
        p = self.run_stat(srv, "--auth", "apop")
        self.assertEqual(p.returncode, 69, p.stderr)
        self.assertIn(b"offers no APOP", p.stderr)
        self.assertFalse(any(c.startswith(("USER", "PASS")) for c in srv.commands()), srv.commands())


class FetchBatches(unittest.TestCase):
    """How `fetch` groups its commands, seen by a scripted server: --batch bounds what is
    pipelined at once, with or without a state file; QUIT only once everything is durable."""

    def setUp(self):
        self.tmp = t.TempDir()
        self.msgs = [b"Subject: m%d\n\nbody %d\n" % (i, i) for i in range(5)]
        self.mdir = os.path.join(self.tmp.path, "md")

    def tearDown(self):
        self.tmp.cleanup()

    def new_removed_before(self, at):
        """A before_retr that renames DIR/new away before RETR `at` is answered (so the links
        of whatever is committed after fail). DIR/{tmp,new,cur} are made with the first message
        pop3c begins, by the first calls of its reading thread and of its thread that opens
        files ahead, which may run at once: the rename waits until the last (cur/) is there and
        a moment more, so that a second call still setting the folder up does not make new/
        again after it (seen once on a loaded machine: exit 0, nothing failed)."""
        def remove_new(n):
            if n == at:
                new, cur = os.path.join(self.mdir, "new"), os.path.join(self.mdir, "cur")
                deadline = time.monotonic() + 10
                while not (os.path.isdir(new) and os.path.isdir(cur)) and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.3)
                os.rename(new, os.path.join(self.tmp.path, "new-gone"))
        return remove_new

    def fetch(self, srv, *args, rc=0, keep=True, dest=None, exact=True):
        dest = dest or ["--maildir", self.mdir]
        cmd = [POP3C, "fetch", *dest, *(["--keep"] if keep else []), "--batch", "2", *args, "--quiet",
               "--host", "127.0.0.1", "--port", str(srv.port), "--user", "u", "--password-env", PW_ENV,
               "--timeout", "30"]
        p = t.run(cmd, timeout=60, env=dict(os.environ, **{PW_ENV: "pw"}))
        self.assertEqual(p.returncode, rc, p.stderr.decode("utf-8", "replace"))
        srv.thread.join(10)
        if rc == 0 and dest[0] == "--maildir" and exact:
            self.assertEqual(sorted(t.maildir_messages(self.mdir)), sorted(self.msgs))
        return srv.commands()

    def test_without_state_one_batch_and_quit_last(self):
        srv = ScriptedPop3(self.msgs)
        cmds = self.fetch(srv)
        self.assertIn("LIST", cmds, "the list is LIST's, not 1 to STAT's count")
        first = next(r for r in srv.reads if any(c.startswith("RETR") for c in r))
        self.assertEqual(first, [f"RETR {i}" for i in range(1, 6)], "all five RETRs in one write, not two per batch")
        self.assertEqual(cmds[-1], "QUIT")

    def test_a_stat_count_the_server_does_not_back_sizes_nothing(self):
        # "+OK 4000000000 0" with five messages listed: the five are fetched, in every mode
        # (list mode's sizes once filled a table of STAT's count: bad_alloc, or 2 GB for 3e8).
        for mode in ("retr", "list", "slow"):
            shutil.rmtree(self.mdir, ignore_errors=True)
            srv = ScriptedPop3(self.msgs)
            srv.stat_count = 4000000000
            self.fetch(srv, "--retr-mode", mode)

    def test_with_state_batches_of_two(self):
        srv = ScriptedPop3(self.msgs)
        cmds = self.fetch(srv, "--new-only", "--state", os.path.join(self.tmp.path, "state"))
        self.assertIn("LIST", cmds)
        retr_reads = [[c for c in r if c.startswith("RETR")] for r in srv.reads]
        self.assertEqual([r for r in retr_reads if r], [["RETR 1", "RETR 2"], ["RETR 3", "RETR 4"], ["RETR 5"]])
        self.assertEqual(cmds[-1], "QUIT")

    def test_deleting_into_a_maildir_a_batch_is_deleted_after_the_next_one_is_retrieved(self):
        # Its flush runs while the next batch is retrieved (docs/pop3c.md "What fetch
        # guarantees"); each DELE still comes after its own batch's RETRs, and QUIT last.
        srv = ScriptedPop3(self.msgs)
        cmds = self.fetch(srv, "--state", os.path.join(self.tmp.path, "state"), keep=False)
        work = [c for c in cmds if c.split(" ")[0] in ("RETR", "DELE", "QUIT")]
        self.assertEqual(work, ["RETR 1", "RETR 2", "RETR 3", "RETR 4", "DELE 1", "DELE 2", "RETR 5",
                                "DELE 3", "DELE 4", "DELE 5", "QUIT"])

    def test_a_failed_overlapped_flush_deletes_nothing_of_its_batch_and_sends_no_quit(self):
        # new/ goes before the second message is answered: the first batch's flush, running
        # beside the second batch's retrieval, fails. Nothing may be deleted or recorded as
        # stored: exit 74, no DELE, no QUIT, the first batch's records pending.
        srv = ScriptedPop3(self.msgs, before_retr=self.new_removed_before(2))
        state = os.path.join(self.tmp.path, "state")
        cmds = self.fetch(srv, "--state", state, keep=False, rc=74)
        self.assertIn("RETR 2", cmds)
        self.assertFalse([c for c in cmds if c.startswith("DELE")], cmds)
        self.assertNotIn("QUIT", cmds)
        with open(state, "rb") as f:
            records = [ln for ln in f.read().split(b"\n") if ln and not ln.startswith(b"#")]
        self.assertTrue(records, "the first batch is recorded")
        self.assertTrue(all(r.startswith(b"? ") for r in records), f"nothing recorded as stored: {records!r}")

    def fetch_all_at_descriptor_limit(self, limit, count, *args, before_retr=None):
        # COUNT messages fetched and deleted under `prlimit --nofile=LIMIT`: every one stored
        # once, every one deleted, nothing left in tmp/.
        msgs = [b"Subject: fd%d\n\nbody %d\n" % (i, i) for i in range(count)]
        srv = ScriptedPop3(msgs, before_retr)
        cmd = ["prlimit", "--nofile=%d:%d" % (limit, limit), "--", POP3C, "fetch", "--maildir", self.mdir, *args,
               "--state", os.path.join(self.tmp.path, "state"), "--quiet", "--host", "127.0.0.1",
               "--port", str(srv.port), "--user", "u", "--password-env", PW_ENV, "--timeout", "30"]
        p = t.run(cmd, timeout=60, env=dict(os.environ, **{PW_ENV: "pw"}))
        self.assertEqual(p.returncode, 0, p.stderr.decode("utf-8", "replace"))
        srv.thread.join(10)
        self.assertEqual(sorted(t.maildir_messages(self.mdir)), sorted(msgs))
        self.assertEqual(len([c for c in srv.commands() if c.startswith("DELE")]), count)
        self.assertEqual(os.listdir(os.path.join(self.mdir, "tmp")), [])

    def test_a_low_descriptor_limit_holds_two_batches_at_once(self):
        # With --maildir a batch's files stay open until its flush, which runs while the next
        # batch is retrieved: --batch is bounded by half the descriptor limit (less 64), or a
        # commit slower than the next retrieval runs out of descriptors (exit 74).
        self.fetch_all_at_descriptor_limit(256, 800, "--batch", "4096")

    def test_a_descriptor_limit_of_64_still_fetches_everything(self):
        # Batches of one, and no file opened ahead: what the limit leaves after the rest. (The
        # pause before RETR 2 lets files opened ahead without that bound fill the table before
        # the second batch's state save, which then failed: exit 74.)
        self.fetch_all_at_descriptor_limit(64, 100, before_retr=lambda n: time.sleep(0.3) if n == 2 else None)

    def test_deleting_into_an_mbox_each_batch_is_deleted_before_the_next_one(self):
        # The mbox sink flushes at once: a batch is settled before the next is retrieved, so a
        # cut run appends at most one batch again.
        srv = ScriptedPop3(self.msgs)
        mbox = os.path.join(self.tmp.path, "mbox")
        cmds = self.fetch(srv, "--state", os.path.join(self.tmp.path, "state"), keep=False, dest=["--mbox", mbox])
        work = [c for c in cmds if c.split(" ")[0] in ("RETR", "DELE", "QUIT")]
        self.assertEqual(work, ["RETR 1", "RETR 2", "DELE 1", "DELE 2", "RETR 3", "RETR 4", "DELE 3", "DELE 4",
                                "RETR 5", "DELE 5", "QUIT"])
        with open(mbox, "rb") as f:
            self.assertEqual(f.read().count(b"\nSubject: m"), 5)

    def records(self, state):
        with open(state, "rb") as f:
            return [ln for ln in f.read().split(b"\n") if ln and not ln.startswith(b"#")]

    def test_a_server_that_answers_a_retr_twice_has_nothing_deleted_on_the_strength_of_that_run(self):
        # Each answer after the doubled one is taken for the next RETR's: messages stored under
        # the wrong UIDL. pop3c sees the octets left over (exit 76) and must then trust nothing
        # the run recorded: no QUIT, and no record, so that the next run fetches all five again
        # instead of deleting one that is stored nowhere.
        state = os.path.join(self.tmp.path, "state")

        def rebind(srv):  # each scripted server has a port of its own: the same mailbox here
            if os.path.exists(state):
                with open(state, "rb") as f:
                    text = f.read()
                with open(state, "wb") as f:
                    f.write(re.sub(rb"(?m)^# account u@127\.0\.0\.1:\d+$", b"# account u@127.0.0.1:%d" % srv.port, text))
        for dest in (["--maildir", self.mdir], ["--mbox", os.path.join(self.tmp.path, "mbox")]):
            srv = ScriptedPop3(self.msgs)
            srv.answer_twice = 1
            rebind(srv)
            cmds = self.fetch(srv, "--state", state, keep=False, rc=76, dest=dest)
            self.assertNotIn("QUIT", cmds)
            self.assertEqual(self.records(state), [], dest)
        srv = ScriptedPop3(self.msgs)
        rebind(srv)
        cmds = self.fetch(srv, "--state", state, keep=False, exact=False)
        self.assertEqual(len([c for c in cmds if c.startswith("RETR")]), 5, "all five fetched again")
        got = t.maildir_messages(self.mdir)
        for m in self.msgs:
            self.assertIn(m, got)

    def test_octets_after_quits_answer_leave_nothing_recorded(self):
        # A RETR answered twice, the second late: the first fills the next RETR's place, and
        # the last answer arrives after QUIT was sent, so QUIT's "+OK" is that answer's and
        # its message follows. Nothing the run recorded may stay (a later run without --keep
        # would delete a message on the strength of a record filed under another's UIDL).
        state = os.path.join(self.tmp.path, "state")
        srv = ScriptedPop3(self.msgs)
        srv.after_quit = b"Subject: late\r\n\r\nbody\r\n.\r\n"
        cmds = self.fetch(srv, "--state", state, "--new-only", rc=76)
        self.assertEqual(cmds[-1], "QUIT")
        self.assertEqual(self.records(state), [])

    def test_a_uidl_shared_by_two_messages_is_no_proof_the_second_is_stored(self):
        # Messages 1 and 2 share a UIDL (RFC 1939 allows it for identical copies; these differ).
        # Run 1 is cut at RETR 2 after message 1 was stored: run 2 must fetch message 2, not
        # delete it because its UIDL is recorded. And no LIST may name a message twice.
        state = os.path.join(self.tmp.path, "state")
        # Long (a short string's octets lived inside the map entry and survived being freed).
        uidls = [b"shared-uidl-0123456789abcdef", b"shared-uidl-0123456789abcdef", b"uid3", b"uid4", b"uid5"]

        def drop(n):
            if n == 2:
                raise ConnectionAbortedError("dropped before RETR 2 is answered")
        srv = ScriptedPop3(self.msgs, before_retr=drop)
        srv.uidls = uidls
        self.fetch(srv, "--state", state, keep=False, rc=76)
        srv = ScriptedPop3(self.msgs)
        srv.uidls = uidls
        with open(state, "rb") as f:
            text = f.read()
        with open(state, "wb") as f:
            f.write(re.sub(rb"(?m)^# account u@127\.0\.0\.1:\d+$", b"# account u@127.0.0.1:%d" % srv.port, text))
        cmds = self.fetch(srv, "--state", state, keep=False, exact=False)
        self.assertIn("RETR 2", cmds)
        got = t.maildir_messages(self.mdir)
        for m in self.msgs:
            self.assertIn(m, got)

    def test_a_uidl_given_again_to_new_mail_of_another_size_is_fetched_not_deleted(self):
        # Run 1 (--keep) stores messages 1-5 and records their UIDLs with LIST's sizes. Then the
        # server (against RFC 1939 7) gives uid1 to a new message: run 2 (deleting) must fetch
        # it, not delete it unread on the strength of uid1's record; the others, whose sizes
        # match, are deleted without being fetched again.
        state = os.path.join(self.tmp.path, "state")
        self.fetch(ScriptedPop3(self.msgs), "--state", state, "--new-only", keep=True)
        newer = b"Subject: not the first message\n\nsame UIDL, other octets\n"
        srv = ScriptedPop3([newer] + self.msgs[1:])
        with open(state, "rb") as f:
            text = f.read()
        self.assertIn(b"\nuid1 %d\n" % len(self.msgs[0]), text)  # the scripted LIST counts LF octets
        with open(state, "wb") as f:
            f.write(re.sub(rb"(?m)^# account u@127\.0\.0\.1:\d+$", b"# account u@127.0.0.1:%d" % srv.port, text))
        cmds = self.fetch(srv, "--state", state, keep=False, exact=False)
        self.assertIn("RETR 1", cmds)
        self.assertFalse(any(c.startswith("RETR ") and c != "RETR 1" for c in cmds), cmds)
        self.assertEqual(sorted(c for c in cmds if c.startswith("DELE ")), ["DELE %d" % n for n in range(1, 6)])
        got = t.maildir_messages(self.mdir)
        self.assertEqual(sorted(got), sorted(self.msgs + [newer]))

    def rebind(self, state, srv):
        """Points the state file's account at `srv` (each scripted server has its own port)."""
        with open(state, "rb") as f:
            text = f.read()
        with open(state, "wb") as f:
            f.write(re.sub(rb"(?m)^# account u@127\.0\.0\.1:\d+$", b"# account u@127.0.0.1:%d" % srv.port, text))

    def test_a_refused_dele_of_an_earlier_runs_message_keeps_its_record(self):
        # Run 1 stores all five (--keep, recorded). Run 2 deletes them unread, but the server
        # refuses each DELE: their records must stay, so run 3 deletes them again rather than
        # fetching them a second time.
        state = os.path.join(self.tmp.path, "state")
        self.fetch(ScriptedPop3(self.msgs), "--state", state, "--new-only", keep=True)
        srv = ScriptedPop3(self.msgs)
        srv.dele_error = b"[SYS/TEMP] not now"
        self.rebind(state, srv)
        cmds = self.fetch(srv, "--state", state, keep=False, rc=75, exact=False)
        self.assertFalse(any(c.startswith("RETR") for c in cmds), cmds)
        srv = ScriptedPop3(self.msgs)
        self.rebind(state, srv)
        cmds = self.fetch(srv, "--state", state, keep=False, exact=False)
        self.assertFalse(any(c.startswith("RETR") for c in cmds), cmds)
        self.assertEqual(sorted(c for c in cmds if c.startswith("DELE ")), ["DELE %d" % n for n in range(1, 6)])
        self.assertEqual(sorted(t.maildir_messages(self.mdir)), sorted(self.msgs))  # each once

    def test_a_uidl_listing_that_leaves_out_a_message_stops_a_keep_run(self):
        state = os.path.join(self.tmp.path, "state")
        srv = ScriptedPop3(self.msgs)
        srv.uidls = [b"uid1", b"uid2", b"uid3", b"uid4"]  # five messages, four UIDLs
        cmds = self.fetch(srv, "--state", state, "--new-only", keep=True, rc=76, exact=False)
        self.assertFalse(any(c.startswith(("RETR", "DELE")) for c in cmds), cmds)
        # Without --keep the fifth is fetched and deleted without a record: no refetch loop.
        srv = ScriptedPop3(self.msgs)
        srv.uidls = [b"uid1", b"uid2", b"uid3", b"uid4"]
        self.rebind(state, srv)
        cmds = self.fetch(srv, "--state", state, keep=False)
        self.assertIn("RETR 5", cmds)
        self.assertIn("DELE 5", cmds)

    def test_a_uidl_refused_for_now_is_a_temporary_failure_and_one_refused_for_good_is_not(self):
        # A state needs UIDL: -ERR [SYS/TEMP] (or [IN-USE]) is to be tried again (75, what a
        # cron wrapper retries on), a plain -ERR means the server has none (69). Nothing is
        # retrieved or deleted either way.
        for error, rc in ((b"[SYS/TEMP] busy, try later", 75), (b"[IN-USE] locked", 75), (b"no UIDL here", 69)):
            with self.subTest(error=error):
                srv = ScriptedPop3(self.msgs)
                srv.uidl_error = error
                state = os.path.join(self.tmp.path, "state-%d" % rc + error[:4].decode().strip("[/ "))
                cmds = self.fetch(srv, "--state", state, keep=False, rc=rc)
                self.assertIn("UIDL", cmds)
                self.assertFalse(any(c.startswith(("RETR", "DELE")) for c in cmds), cmds)

    def test_state_and_mbox_naming_one_file_are_refused(self):
        mb = os.path.join(self.tmp.path, "mb")
        link = os.path.join(self.tmp.path, "link")
        os.symlink(mb, link)
        for state in (os.path.join(self.tmp.path, ".", "mb"), link):
            with self.subTest(state=state):
                # Refused before any connection: port 1 has no server.
                cmd = [POP3C, "fetch", "--mbox", mb, "--state", state, "--quiet", "--host", "127.0.0.1",
                       "--port", "1", "--user", "u", "--password-env", PW_ENV, "--timeout", "5"]
                p = t.run(cmd, timeout=30, env=dict(os.environ, **{PW_ENV: "pw"}))
                self.assertEqual(p.returncode, 64, p.stderr)
                self.assertIn(b"name the same file", p.stderr)
        # Nor a file the state keeps beside itself (STATE.spool, STATE.tmp that each save
        # truncates and renames over the state, STATE.lock; the state's links followed), as the
        # mbox or as stdout, before any connection: mail written there would be gone.
        real = os.path.join(self.tmp.path, "real-state")
        open(real, "w").close()
        os.symlink(real, os.path.join(self.tmp.path, "state-link"))
        st = os.path.join(self.tmp.path, "st")
        cases = [(st, st + ".spool"), (st, st + ".tmp"), (st, st + ".lock"),
                 (os.path.join(self.tmp.path, "state-link"), real + ".spool"),
                 (os.path.join(self.tmp.path, "state-link"), real + ".tmp")]
        for state, mbox in cases:
            for dest in ("--mbox", "--stdout"):
                with self.subTest(state=state, mbox=mbox, dest=dest):
                    base = [POP3C, "fetch", "--state", state, "--quiet", "--host", "127.0.0.1",
                            "--port", "1", "--user", "u", "--password-env", PW_ENV, "--timeout", "5"]
                    env = dict(os.environ, **{PW_ENV: "pw"})
                    if dest == "--mbox":
                        p = t.run(base + ["--mbox", mbox], timeout=30, env=env)
                    else:
                        with open(mbox, "ab") as out:  # stdout redirected there, as a shell would
                            p = subprocess.run(base + ["--stdout"], stdout=out, stderr=subprocess.PIPE, timeout=30, env=env)
                    self.assertEqual(p.returncode, 64, p.stderr)
                    self.assertIn(b"a file the state keeps beside itself", p.stderr)

    def keep_new_only_runs(self, make_server, runs):
        """Runs `fetch --keep --new-only` `runs` times against a fresh make_server(i) each;
        returns the RETRs of each run."""
        state = os.path.join(self.tmp.path, "state")
        retrs = []
        for i in range(runs):
            srv = make_server(i)
            if os.path.exists(state):
                with open(state, "rb") as f:
                    text = f.read()
                with open(state, "wb") as f:
                    f.write(re.sub(rb"(?m)^# account u@127\.0\.0\.1:\d+$", b"# account u@127.0.0.1:%d" % srv.port, text))
            cmds = self.fetch(srv, "--state", state, "--new-only", keep=True, exact=False)
            retrs.append([c for c in cmds if c.startswith("RETR ")])
        return retrs

    def test_keep_new_only_fetches_nothing_twice_when_sizes_change_or_a_uidl_is_shared(self):
        # LIST's sizes may change between runs for the same messages (Dovecot's fast size
        # lookups: LF octets, then CRLF once cached), and two messages of different sizes may
        # share a UIDL: with --keep the skip asks for the UIDL alone, so neither fetches
        # anything again, run after run.
        def changing(i):
            srv = ScriptedPop3(self.msgs)
            srv.list_crlf = i % 2 == 1
            return srv
        self.assertEqual(self.keep_new_only_runs(changing, 3), [["RETR %d" % n for n in range(1, 6)], [], []])
        self.assertEqual(sorted(t.maildir_messages(self.mdir)), sorted(self.msgs))

    def test_keep_new_only_with_a_shared_uidl_fetches_each_message_once(self):
        def shared(i):
            # The two messages sharing "same" differ in size (the second is longer).
            srv = ScriptedPop3([self.msgs[0], self.msgs[1] + b"longer\n", self.msgs[2]])
            srv.uidls = [b"same", b"same", b"uid3"]
            return srv
        self.assertEqual(self.keep_new_only_runs(shared, 3), [["RETR 1", "RETR 2", "RETR 3"], [], []])

    def test_a_maildir_named_through_a_symbolic_link_or_with_a_trailing_slash(self):
        real = os.path.join(self.tmp.path, "real")
        os.makedirs(real)
        os.symlink(real, os.path.join(self.tmp.path, "link"))
        self.fetch(ScriptedPop3(self.msgs), dest=["--maildir", os.path.join(self.tmp.path, "link")], exact=False)
        self.assertEqual(sorted(t.maildir_messages(real)), sorted(self.msgs))
        self.fetch(ScriptedPop3(self.msgs), dest=["--maildir", self.mdir + "/"])
        made = os.path.join(self.tmp.path, "made")  # a link to a folder still to be made
        os.symlink(made, os.path.join(self.tmp.path, "dangling"))
        self.fetch(ScriptedPop3(self.msgs), dest=["--maildir", os.path.join(self.tmp.path, "dangling") + "/"], exact=False)
        self.assertEqual(sorted(t.maildir_messages(made)), sorted(self.msgs))

    def test_a_list_naming_a_message_twice_is_refused(self):
        srv = ScriptedPop3(self.msgs)
        srv.list_twice = True
        cmds = self.fetch(srv, rc=76)
        self.assertFalse([c for c in cmds if c.startswith("RETR")], cmds)

    def test_no_quit_when_the_last_messages_cannot_be_made_durable(self):
        # A server may expire what was retrieved at QUIT (RFC 2449 EXPIRE, Gmail's setting),
        # --keep or not: a fetch whose flush fails must end without QUIT. Here new/ is removed
        # (renamed away: the commit thread may be linking into it) before the last message is
        # sent, so its link fails.
        srv = ScriptedPop3(self.msgs, before_retr=self.new_removed_before(5))
        cmds = self.fetch(srv, rc=74)
        self.assertIn("RETR 5", cmds)
        self.assertNotIn("QUIT", cmds)


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=280)
