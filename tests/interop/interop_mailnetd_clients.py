# mailnetd end to end with real fetchers: mail sent with smtplib, curl and swaks to several
# recipients of the real mailnetd (port 0), fetched with mpop, fetchmail, getmail6, curl and our
# pop3c over plain POP3, STLS and pop3s (--tls-self-signed, clients pinned to the printed
# fingerprint where they can).
"""Each test sends the same few messages (dot lines, 8-bit, 300 KiB, an empty body) to three
fresh recipients, then fetches each recipient's mailbox with one client: the first mailbox with
the client's keep option (the store still holds every copy afterwards), the others with its
delete (the mailbox is empty afterwards). Every fetched message, after the Return-Path:/
Received: mailnetd prepended, equals one sent message (line ends normalised: these clients
write LF), and each mailbox gives each sent message exactly once.

TLS: mpop pins the printed SHA-256 (--tls-fingerprint, colon form); getmail6 too
(ssl_fingerprints); fetchmail can pin only an MD5 (sslfingerprint): it gets the MD5 of the
certificate saved from a pinned handshake plus that certificate as its trust file; curl pins
the key (--pinnedpubkey of the saved certificate) and trusts the saved certificate (--cacert);
pop3c pins the printed SHA-256 (--fingerprint). getmail6 has no STLS for POP3: its STLS test is
not there (pop3s only). swaks sends over STARTTLS (--tls) and SMTPS (--tlsc, --protocol SSMTP);
it cannot pin: it verifies against the saved certificate (--tls-verify --tls-ca-path)."""
import hashlib
import os
import re
import smtplib
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mailnet_testlib as t  # noqa: E402

MAILNETD = t.program_binary("mailnetd")
POP3C = t.pop3c_binary()  # ctest: MAILNET_POP3C_BINARY; else BUILD/pop3c/pop3c beside mailnetd
SENDER = "sender@example.org"
PW_ENV = "MAILNET_POP3C_TEST_PASSWORD"


def messages(label):
    """The messages each test sends (CRLF, before dot-stuffing), distinct per test."""
    big = [b"%06d big message line, with a .dot and some padding to make it longer" % i for i in range(4200)]
    big[100] = b".dot-leading line in the big message"
    return [
        t.smtp_message(f"{label} dots", t.DOT_LINES),
        t.smtp_message(f"{label} 8bit", t.EIGHT_BIT_LINES,
                       headers=[b"MIME-Version: 1.0", b"Content-Type: text/plain; charset=utf-8",
                                b"Content-Transfer-Encoding: 8bit"]),
        t.smtp_message(f"{label} big", big),
        t.smtp_message(f"{label} empty body", []),
    ]


class Clients(unittest.TestCase):
    """One mailnetd (SMTP+STARTTLS, smtps, POP3+STLS, pop3s, --tls-self-signed) for the class;
    each test uses mailboxes of its own."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = t.TempDir()
        cls.d = cls.tmp.path
        cls.store = os.path.join(cls.d, "store")
        cls.srv = t.Mailnetd(MAILNETD, cls.store, implicit_tls=True, tls_self_signed=True, workdir=cls.d)
        cls.srv.start()
        cls.n = 0
        try:
            if cls.srv.fingerprint is None:
                raise AssertionError(f"no tls-fingerprint line: {cls.srv.stdout()!r}")
            cls.cert = os.path.join(cls.d, "saved-cert.pem")
            der = t.save_peer_certificate(unittest.TestCase(), cls.srv.pop3s_port, cls.srv.fingerprint, cls.cert)
            cls.md5 = t.colon_hex(hashlib.md5(der).hexdigest())
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop()
        finally:
            cls.tmp.cleanup()

    def tearDown(self):
        if not getattr(self._outcome, "success", True):
            print(f"--- mailnetd stderr ---\n{self.srv.stderr()[-6000:]}", file=sys.stderr)

    def fresh_dir(self, name):
        type(self).n += 1
        p = os.path.join(self.d, f"{name}.{self.n}")
        os.makedirs(p)
        return p

    # --- sending

    def send(self, label, how="smtplib", count=3):
        """Sends messages(label) to `count` fresh recipients; returns (recipients, messages)."""
        rcpts = [f"{label}.{i}@example.org" for i in range(1, count + 1)]
        msgs = messages(label)
        if how == "smtplib":
            with smtplib.SMTP(t.HOST, self.srv.port, timeout=20) as s:
                for m in msgs:
                    self.assertEqual(s.sendmail(SENDER, rcpts, m), {})
        elif how == "curl":
            (curl,) = t.require_programs("curl")
            for m in msgs:
                path = os.path.join(self.fresh_dir("curl-send"), "msg.eml")
                with open(path, "wb") as f:
                    f.write(m)
                cmd = [curl, "-sS", "--max-time", "20", f"smtp://{t.HOST}:{self.srv.port}/curl.interop.test",
                       "--mail-from", SENDER, *[a for r in rcpts for a in ("--mail-rcpt", r)], "--upload-file", path]
                p = t.run(cmd, timeout=40)
                self.assertEqual(p.returncode, 0, f"{cmd} -> {p.returncode}: {p.stderr!r}")
        for r in rcpts:  # one copy per recipient, in its own mailbox, before anything fetches
            self.assertEqual(len(t.delivered(self.store, r)), len(msgs), f"{r}: one copy of each message")
        return rcpts, msgs

    # --- checking

    def check(self, fetched, msgs, what, transform=lambda m: m):
        """Each fetched message, without mailnetd's trace headers, is one sent message (line ends
        normalised), and each sent message comes exactly once."""
        got = []
        for m in fetched:
            rp, _rcvd, rest = t.split_trace(t.normalise(transform(m)))
            self.assertEqual(rp, f"<{SENDER}>", what)
            got.append(rest)
        want = sorted(t.normalise(m) for m in msgs)
        if sorted(got) != want:
            subjects = sorted(re.findall(rb"^Subject: (.*)$", g, re.M)[:1] for g in got)
            self.fail(f"{what}: {len(got)} fetched, {len(msgs)} sent; fetched subjects {subjects}; "
                      f"first fetched not sent: {next((g[:300] for g in got if g not in want), None)!r}")

    def fetch_each(self, label, rcpts, msgs, fetch):
        """fetch(rcpt, maildir, keep) for each recipient: keep for the first, delete for the
        others; checks what each stored and what the server kept."""
        for i, r in enumerate(rcpts):
            keep = i == 0
            md = t.make_maildir(os.path.join(self.fresh_dir(label), "Maildir"))
            fetched = fetch(r, md, keep)
            self.check(fetched, msgs, f"{label} {r}")
            left = t.delivered(self.store, r)
            self.assertEqual(len(left), len(msgs) if keep else 0,
                             f"{r}: {'keep: every copy still on the server' if keep else 'fetched and deleted'}")

    # --- mpop

    def mpop(self, rcpt, md, keep, *opts, port=None):
        (mpop,) = t.require_programs("mpop")
        d = os.path.dirname(md)
        cmd = [mpop, f"--host={t.HOST}", f"--port={port or self.srv.pop3_port}", "--timeout=20",
               f"--user={rcpt}", f"--passwordeval=echo {rcpt}", f"--keep={'on' if keep else 'off'}",
               "--received-header=off", f"--delivery=maildir,{md}",
               f"--uidls-file={os.path.join(d, 'uidls')}", "--half-quiet", *opts]
        p = t.run(cmd, timeout=60, cwd=d)
        self.assertEqual(p.returncode, 0, f"{cmd} -> {p.returncode}\nstdout {p.stdout!r}\nstderr {p.stderr!r}")
        return t.maildir_messages(md)

    def test_mpop_plain(self):
        rcpts, msgs = self.send("mpop-plain")
        self.fetch_each("mpop-plain", rcpts, msgs,
                        lambda r, md, keep: self.mpop(r, md, keep, "--tls=off", "--auth=user"))

    def test_mpop_stls_pinned(self):
        rcpts, msgs = self.send("mpop-stls")
        pin = t.colon_hex(self.srv.fingerprint)
        self.fetch_each("mpop-stls", rcpts, msgs,
                        lambda r, md, keep: self.mpop(r, md, keep, "--tls=on", "--tls-starttls=on",
                                                      f"--tls-fingerprint={pin}", "--auth=user"))

    def test_mpop_pop3s_pinned(self):
        rcpts, msgs = self.send("mpop-pop3s")
        pin = t.colon_hex(self.srv.fingerprint)
        self.fetch_each("mpop-pop3s", rcpts, msgs,
                        lambda r, md, keep: self.mpop(r, md, keep, "--tls=on", "--tls-starttls=off",
                                                      f"--tls-fingerprint={pin}", port=self.srv.pop3s_port))

    def test_mpop_refuses_a_wrong_pin(self):
        # The pin means something: one wrong octet and mpop refuses the server (nothing fetched).
        rcpts, _msgs = self.send("mpop-wrongpin", count=1)
        (mpop,) = t.require_programs("mpop")
        wrong = t.colon_hex(("00" if not self.srv.fingerprint.startswith("00") else "11") + self.srv.fingerprint[2:])
        md = t.make_maildir(os.path.join(self.fresh_dir("mpop-wrongpin"), "Maildir"))
        p = t.run([mpop, f"--host={t.HOST}", f"--port={self.srv.pop3s_port}", "--timeout=20", f"--user={rcpts[0]}",
                   f"--passwordeval=echo {rcpts[0]}", "--tls=on", "--tls-starttls=off", f"--tls-fingerprint={wrong}",
                   f"--delivery=maildir,{md}", f"--uidls-file={md}/../uidls"], timeout=60)
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertEqual(t.maildir_messages(md), [])

    # --- fetchmail

    def fetchmail(self, rcpt, md, keep, ssl_opts="sslproto ''", port=None):
        (fetchmail,) = t.require_programs("fetchmail")
        home = os.path.dirname(md)
        mda = os.path.join(home, "mda.sh")
        with open(mda, "w") as f:
            f.write(t.FETCHMAIL_MDA)
        os.chmod(mda, 0o755)
        rc = os.path.join(home, "fetchmailrc")
        # invisible: no Received: header; no rewrite: address headers untouched; sslproto '': no
        # opportunistic STLS on the plain runs; fetchall: the keep run's messages are not "new".
        with open(rc, "w") as f:
            f.write("set no syslog\n"
                    "set invisible\n"
                    f"poll {t.HOST} service {port or self.srv.pop3_port} protocol POP3 timeout 20:\n"
                    f"  user \"{rcpt}\" there with password \"{rcpt}\" is \"root\" here\n"
                    f"  {'keep' if keep else 'nokeep'} fetchall no rewrite {ssl_opts}\n"
                    f"  mda \"{mda} {md}\"\n")
        os.chmod(rc, 0o600)
        env = dict(os.environ, FETCHMAILHOME=home, HOME=home)
        cmd = [fetchmail, "-f", rc, "--idfile", os.path.join(home, "fetchids"),
               "--pidfile", os.path.join(home, "fetchmail.pid"), "--nodetach", "-v"]
        p = t.run(cmd, timeout=90, env=env, cwd=home)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, f"{cmd} -> {p.returncode}\n{out[-4000:]}")
        self.last_fetchmail_output = out
        return t.maildir_messages(md)

    def tls_opts(self):
        # fetchmail pins only MD5s: the MD5 of the certificate saved from a handshake pinned to
        # the printed SHA-256, which is also its trust file; it does not match IP SANs.
        return (f"sslproto 'tls1.2+' sslcertck sslcertfile \"{self.cert}\" sslcommonname localhost "
                f"sslfingerprint \"{self.md5}\"")

    def test_fetchmail_plain(self):
        rcpts, msgs = self.send("fetchmail-plain")
        self.fetch_each("fetchmail-plain", rcpts, msgs, lambda r, md, keep: self.fetchmail(r, md, keep))

    def test_fetchmail_stls_pinned(self):
        rcpts, msgs = self.send("fetchmail-stls")
        self.fetch_each("fetchmail-stls", rcpts, msgs,
                        lambda r, md, keep: self.fetchmail(r, md, keep, ssl_opts=self.tls_opts()))
        self.assertIn("STLS", self.last_fetchmail_output)
        self.assertIn(self.md5, self.last_fetchmail_output)

    def test_fetchmail_pop3s_pinned(self):
        rcpts, msgs = self.send("fetchmail-pop3s")
        self.fetch_each("fetchmail-pop3s", rcpts, msgs,
                        lambda r, md, keep: self.fetchmail(r, md, keep, ssl_opts="ssl " + self.tls_opts(),
                                                           port=self.srv.pop3s_port))
        self.assertIn(self.md5, self.last_fetchmail_output)

    # --- getmail6

    def getmail(self, rcpt, md, keep, retriever="SimplePOP3Retriever", port=None, extra=""):
        (getmail,) = t.require_programs("getmail")
        for attempt in range(3):
            home = self.fresh_dir("getmail-run")
            run_md = t.make_maildir(os.path.join(home, "Maildir"))
            gmhome = os.path.join(home, "getmail")
            os.makedirs(gmhome)
            user_line = ""
            if os.geteuid() == 0:  # getmail run as root delivers only as another user
                t.chown_tree(run_md, "nobody")
                user_line = "user = nobody\n"
            rc = os.path.join(home, "getmailrc")
            with open(rc, "w") as f:
                f.write("[retriever]\n"
                        f"type = {retriever}\n"
                        f"server = {t.HOST}\n"
                        f"port = {port or self.srv.pop3_port}\n"
                        f"username = {rcpt}\n"
                        f"password = {rcpt}\n"
                        "timeout = 8\n"  # also how long getmail waits out its fork race
                        f"{extra}"
                        "\n[destination]\n"
                        "type = Maildir\n"
                        f"path = {run_md}/\n"
                        f"{user_line}"
                        "\n[options]\n"
                        "read_all = true\n"
                        f"delete = {'false' if keep else 'true'}\n"
                        "delivered_to = false\n"
                        "received = false\n"
                        "verbose = 1\n")
            p = t.run([getmail, "--getmaildir", gmhome, "--rcfile", rc], timeout=60, cwd=home)
            if p.returncode == 0 or t.GETMAIL_FORK_RACE not in p.stdout + p.stderr:
                break
            # A raced run may have fetched (and, without keep, deleted) some: nothing to retry
            # then; only a run that stored nothing is retried.
            if t.maildir_messages(run_md):
                break
            print(f"getmail: its fork/SIGCHLD race hit, retrying ({attempt + 1})", file=sys.stderr)
        self.assertEqual(p.returncode, 0, (p.stdout + p.stderr).decode("utf-8", "replace")[-4000:])
        # getmail6 writes Return-Path: first, taken from the message's own: mailnetd's, unchanged.
        return t.maildir_messages(run_md)

    def test_getmail6_plain(self):
        rcpts, msgs = self.send("getmail-plain")
        self.fetch_each("getmail-plain", rcpts, msgs, lambda r, md, keep: self.getmail(r, md, keep))

    def test_getmail6_pop3s_pinned(self):
        rcpts, msgs = self.send("getmail-pop3s")
        self.fetch_each("getmail-pop3s", rcpts, msgs,
                        lambda r, md, keep: self.getmail(r, md, keep, "SimplePOP3SSLRetriever", self.srv.pop3s_port,
                                                         f"ssl_fingerprints = ('{self.srv.fingerprint}',)\n"))

    # --- pop3c (ours)

    def pop3c(self, rcpt, md, keep, *opts, port=None):
        """pop3c fetch --maildir MD [--keep] as rcpt (open mode: the password is the address,
        given through the environment; its state file in the run's own XDG_STATE_HOME). Each
        file it stores is byte for byte a file of the store (the copies of all recipients are one
        hard-linked file), read before the fetch."""
        home = os.path.dirname(md)
        stored = sorted(data for _p, data in t.delivered(self.store, rcpt))
        cmd = [POP3C, "fetch", "--maildir", md, *(["--keep"] if keep else []), "--host", t.HOST,
               "--port", str(port or self.srv.pop3_port), "--user", rcpt, "--password-env", PW_ENV,
               "--timeout", "20", "--quiet", *opts]
        env = dict(os.environ, XDG_STATE_HOME=os.path.join(home, "state"), **{PW_ENV: rcpt})
        p = t.run(cmd, timeout=60, env=env, cwd=home)
        self.assertEqual(p.returncode, 0, f"{cmd} -> {p.returncode}\nstdout {p.stdout!r}\nstderr {p.stderr!r}")
        fetched = t.maildir_messages(md)
        self.assertEqual(sorted(fetched), stored, f"{rcpt}: pop3c stored each message as mailnetd stored it")
        return fetched

    def test_pop3c_plain(self):
        rcpts, msgs = self.send("pop3c-plain")
        self.fetch_each("pop3c-plain", rcpts, msgs, lambda r, md, keep: self.pop3c(r, md, keep))

    def test_pop3c_stls_pinned(self):
        rcpts, msgs = self.send("pop3c-stls")
        pin = t.colon_hex(self.srv.fingerprint)  # pop3c takes colons and upper case too
        self.fetch_each("pop3c-stls", rcpts, msgs,
                        lambda r, md, keep: self.pop3c(r, md, keep, "--starttls", "--fingerprint", pin))

    def test_pop3c_pop3s_pinned(self):
        rcpts, msgs = self.send("pop3c-pop3s")
        self.fetch_each("pop3c-pop3s", rcpts, msgs,
                        lambda r, md, keep: self.pop3c(r, md, keep, "--tls", "--fingerprint", self.srv.fingerprint,
                                                       port=self.srv.pop3s_port))

    def test_pop3c_refuses_a_wrong_pin(self):
        # One wrong octet: pop3c refuses the server (77, "denied") before logging in, over STLS
        # and pop3s; nothing is fetched and the store is untouched (nothing even read: new/).
        rcpts, msgs = self.send("pop3c-wrongpin", count=1)
        wrong = ("00" if not self.srv.fingerprint.startswith("00") else "11") + self.srv.fingerprint[2:]
        before = sorted(p for p, _d in t.delivered(self.store, rcpts[0]))
        for how, port in (("--starttls", self.srv.pop3_port), ("--tls", self.srv.pop3s_port)):
            home = self.fresh_dir("pop3c-wrongpin")
            md = os.path.join(home, "Maildir")
            cmd = [POP3C, "fetch", "--maildir", md, "--host", t.HOST, "--port", str(port), "--user", rcpts[0],
                   "--password-env", PW_ENV, "--timeout", "20", how, "--fingerprint", wrong]
            env = dict(os.environ, XDG_STATE_HOME=os.path.join(home, "state"), **{PW_ENV: rcpts[0]})
            p = t.run(cmd, timeout=60, env=env, cwd=home)
            self.assertEqual(p.returncode, 77, f"{cmd} -> {p.returncode}: {p.stderr!r}")
            self.assertIn(b"fingerprint mismatch", p.stderr)
            self.assertEqual(t.maildir_messages(md) if os.path.isdir(os.path.join(md, "new")) else [], [], how)
            self.assertEqual(sorted(p for p, _d in t.delivered(self.store, rcpts[0])), before,
                             f"{how}: every message still on the server, unread")
        self.assertEqual(len(before), len(msgs))
        self.assertTrue(all("/new/" in p for p in before), before)

    # --- swaks (send over STARTTLS and SMTPS)

    def test_swaks_starttls_and_smtps_verified_against_the_saved_certificate(self):
        (swaks,) = t.require_programs("swaks")
        if not t.swaks_has_tls():
            self.skipTest("swaks --tls needs Net::SSLeay (libnet-ssleay-perl)")
        rcpts = ["swaks-tls.1@example.org", "swaks-tls.2@example.org"]
        # Not the empty-body message: swaks adds a blank line to data without a header/body
        # separator, so it cannot send a message with no body.
        msgs = messages("swaks-tls")[:3]
        verify = ["--tls-verify", "--tls-ca-path", self.cert]
        ways = [(self.srv.port, ["--tls"]), (self.srv.ports["smtps"], ["--tlsc"]),
                (self.srv.ports["smtps"], ["--protocol", "SSMTP"])]
        for m, (port, how) in zip(msgs, ways):
            p = t.swaks_send(swaks, port, SENDER, rcpts, m, os.path.join(self.fresh_dir("swaks"), "msg.eml"),
                             *how, *verify)
            out = (p.stdout + p.stderr).decode("utf-8", "replace")
            self.assertEqual(p.returncode, 0, f"{p.cmd} -> {p.returncode}\n{out[-3000:]}")
            self.assertIn("=== TLS started", out, how)
        for r in rcpts:
            got = t.delivered(self.store, r)
            self.assertEqual(len(got), len(msgs), f"{r}: one copy of each message")
            for _p, data in got:
                self.assertRegex(t.split_trace(data)[1], r" with ESMTPS id ", "the trace says TLS")
            md = t.make_maildir(os.path.join(self.fresh_dir("swaks-fetch"), "Maildir"))
            self.check(self.pop3c(r, md, False), msgs, f"swaks TLS send {r}")
            self.assertEqual(t.delivered(self.store, r), [], r)
        # The verification is real: another self-signed certificate (same names) as the CA file,
        # and swaks refuses mailnetd's, over STARTTLS and SMTPS; nothing is delivered.
        other = t.SelfSignedCert(self.fresh_dir("other-cert"))
        for port, how in ways[:2]:
            p = t.swaks_send(swaks, port, SENDER, ["swaks-tls.refused@example.org"], msgs[0],
                             os.path.join(self.fresh_dir("swaks"), "msg.eml"), *how, "--tls-verify",
                             "--tls-ca-path", other.cert)
            out = (p.stdout + p.stderr).decode("utf-8", "replace")
            self.assertNotEqual(p.returncode, 0, f"{p.cmd} succeeded with the wrong CA\n{out[-3000:]}")
            self.assertIn("certificate verify failed", out, how)
        self.assertEqual(t.delivered(self.store, "swaks-tls.refused@example.org"), [])

    # --- curl (send and fetch)

    def curl_fetch(self, rcpt, keep, *opts, scheme="pop3", port=None):
        """LIST, then RETR each with curl; without keep, DELE each (curl -X DELE: one session
        per command, QUIT commits it). Returns the exact RETR bytes (CRLF)."""
        (curl,) = t.require_programs("curl")
        port = port or self.srv.pop3_port

        def curl_run(path, *more):
            cmd = [curl, "-sS", "--max-time", "20", "-u", f"{rcpt}:{rcpt}", *opts, *more,
                   f"{scheme}://{t.HOST}:{port}{path}"]
            p = t.run(cmd, timeout=30)
            self.assertEqual(p.returncode, 0, f"{cmd} -> {p.returncode}: {p.stderr!r}")
            return p.stdout

        listing = [ln for ln in curl_run("/").split(b"\r\n") if ln]
        out = [curl_run(f"/{int(ln.split()[0])}") for ln in listing]
        if not keep:  # one session per DELE: each deletes what is then message 1
            for _ln in listing:
                curl_run("/", "-X", "DELE 1", "-I")
        return out

    def curl_each(self, label, rcpts, msgs, *opts, **kw):
        for i, r in enumerate(rcpts):
            keep = i == 0
            fetched = self.curl_fetch(r, keep, *opts, **kw)
            # curl writes the RETR bytes as they came: exactly the stored message's wire form.
            stored = sorted(t.wire_form(data) for _p, data in t.delivered(self.store, r)) if keep else None
            self.check(fetched, msgs, f"{label} {r}")
            if keep:
                self.assertEqual(sorted(fetched), stored, f"{r}: RETR == the stored file with CRLF")
            self.assertEqual(len(t.delivered(self.store, r)), len(msgs) if keep else 0, r)

    def test_curl_send_and_fetch_plain(self):
        rcpts, msgs = self.send("curl-plain", how="curl")
        self.curl_each("curl-plain", rcpts, msgs)

    def test_curl_stls_pinned(self):
        rcpts, msgs = self.send("curl-stls")
        self.curl_each("curl-stls", rcpts, msgs, "--ssl-reqd", "--cacert", self.cert,
                       "--pinnedpubkey", t.spki_sha256_b64(self.cert))

    def test_curl_pop3s_pinned(self):
        rcpts, msgs = self.send("curl-pop3s")
        self.curl_each("curl-pop3s", rcpts, msgs, "--cacert", self.cert,
                       "--pinnedpubkey", t.spki_sha256_b64(self.cert), scheme="pop3s", port=self.srv.pop3s_port)

    def test_curl_smtps_and_starttls_send(self):
        rcpts = ["curl-smtps.1@example.org", "curl-smtps.2@example.org"]
        (curl,) = t.require_programs("curl")
        msgs = messages("curl-tls-send")[:2]
        for m, url, more in ((msgs[0], f"smtp://{t.HOST}:{self.srv.port}/curl.interop.test", ["--ssl-reqd"]),
                             (msgs[1], f"smtps://{t.HOST}:{self.srv.ports['smtps']}/curl.interop.test", [])):
            path = os.path.join(self.fresh_dir("curl-send"), "msg.eml")
            with open(path, "wb") as f:
                f.write(m)
            cmd = [curl, "-sS", "--max-time", "20", url, *more, "--cacert", self.cert,
                   "--pinnedpubkey", t.spki_sha256_b64(self.cert), "--mail-from", SENDER,
                   *[a for r in rcpts for a in ("--mail-rcpt", r)], "--upload-file", path]
            p = t.run(cmd, timeout=40)
            self.assertEqual(p.returncode, 0, f"{cmd} -> {p.returncode}: {p.stderr!r}")
        for r in rcpts:
            got = self.curl_fetch(r, False)
            self.check(got, msgs, f"curl TLS send {r}")
            for m in got:
                self.assertRegex(t.split_trace(t.normalise(m))[1], r" with ESMTPS id ", "the trace says TLS")


if __name__ == "__main__":
    t.run_tests(watchdog_seconds=240)
