# mailnet interop tests: shared helpers (temp dirs, users file, Maildir fixtures, pop3d
# process control, a throw-away CA, a raw POP3 client, line-end normalisation).
"""Helpers shared by the interop scripts in tests/interop.

Each script is run by ctest as `run.sh SCRIPT POP3D_BINARY` and exits 0 (pass),
1 (fail) or SKIP (125: a peer is missing; never 77, which our programs use for
"permission denied"). Every subprocess and socket has a timeout; every server a
script starts is stopped by its PID in a `finally`.
"""

import atexit
import base64
import ctypes
import os
import pwd
import grp
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

SKIP = 125

HOST = "127.0.0.1"
USER = "alice"
PASSWORD = "secret"
SMTPD_HOSTNAME = "mx.interop.test"  # smtpd --hostname: the Received: header's `by`


# --------------------------------------------------------------------------------------
# Skipping and running


_running_tests = False  # run_tests() is running the unittest cases


def skip(reason):
    """Skips the script (exit SKIP); called inside a test case, that case (run_tests() then
    exits SKIP too, after the other cases ran: a SystemExit there would count as an error)."""
    if _running_tests:
        raise unittest.SkipTest(reason)
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP)


def require_programs(*names):
    """Skip the whole script unless every program is on PATH; returns their paths."""
    paths = []
    for n in names:
        p = shutil.which(n) or (os.path.exists(n) and n)
        if not p:
            skip(f"{n} not installed")
        paths.append(p)
    return paths


def require_root(why):
    if os.geteuid() != 0:
        skip(f"needs root: {why}")


def program_binary(name="pop3d"):
    """The path of program NAME. The program under test is the first argument, which ctest
    passes ($<TARGET_FILE:pop3d>, smtpd or pop3c: mailnet_interop_test's PROGRAM). A script
    that needs a second program (the pop3c script also runs pop3d) gets it from
    $MAILNET_<NAME>_BINARY (ctest sets MAILNET_POP3D_BINARY for every script), else from
    BUILD/<name>/<name> beside the first argument's BUILD/<program>/<program>. An absolute path,
    also when the argument was relative."""
    if len(sys.argv) < 2:
        print(f"usage: SCRIPT {name.upper()}_BINARY", file=sys.stderr)
        sys.exit(64)
    b = sys.argv[1]
    if os.path.basename(b) != name:
        env = os.environ.get(f"MAILNET_{name.upper()}_BINARY")
        sibling = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(b))), name, name)
        if env:
            b = env
        elif os.access(sibling, os.X_OK):
            b = sibling
        # else: the first argument itself, under another file name
    if not os.access(b, os.X_OK):
        print(f"FAIL: {name} binary {b!r} is not executable", file=sys.stderr)
        sys.exit(1)
    return os.path.abspath(b)  # usable from a test's own working directory


def pop3d_binary():
    return program_binary("pop3d")


def smtpd_binary():
    return program_binary("smtpd")


def pop3c_binary():
    return program_binary("pop3c")


def deliver_with_mailnet(store, mailbox, messages, workdir):
    """Delivers [(label, bytes)] into STORE/<mailbox> with libmailnet's own Maildir writer (the
    mailnet-test-deliver tool ctest names in MAILNET_TEST_DELIVER); returns [(label, base
    name, bytes)] in delivery order, base names read back from the Maildir."""
    tool = os.environ.get("MAILNET_TEST_DELIVER", "")
    if not os.access(tool, os.X_OK):
        print(f"FAIL: MAILNET_TEST_DELIVER={tool!r} is not an executable", file=sys.stderr)
        sys.exit(1)
    paths = []
    for i, (_label, data) in enumerate(messages):
        p = os.path.join(workdir, f"deliver-{i}.eml")
        with open(p, "wb") as f:
            f.write(data)
        paths.append(p)
    subprocess.run([tool, store, mailbox, *paths], check=True, timeout=60)
    mdir = os.path.join(store, mailbox)
    names = sorted(os.listdir(os.path.join(mdir, "new")),
                   key=lambda n: tuple(int(x) for x in re.match(r"(\d+)\.M(\d+)P\d+Q(\d+)", n).groups()))
    if len(names) != len(messages):
        raise AssertionError(f"{len(messages)} delivered, {len(names)} in {mdir}/new")
    out = []
    for (label, data), name in zip(messages, names):
        with open(os.path.join(mdir, "new", name), "rb") as f:
            got = f.read()
        if got != data:
            raise AssertionError(f"{label}: the delivered file differs from what was given")
        out.append((label, name, data))
    return out


def run_tests(watchdog_seconds=None):
    """Runs the unittest cases of __main__; exit 0 pass, 1 fail, SKIP if any were skipped.

    A watchdog (SIGALRM) turns a hang into a failure while the finally blocks still run,
    so no server outlives the script even if ctest's own TIMEOUT would have hit.
    """
    if watchdog_seconds:
        def on_alarm(signum, frame):
            raise TimeoutError(f"watchdog: script exceeded {watchdog_seconds} s")
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(watchdog_seconds)
    argv = [sys.argv[0]] + sys.argv[2:]
    global _running_tests
    _running_tests = True
    try:
        prog = unittest.main(module="__main__", argv=argv, exit=False, verbosity=2)
    finally:
        _running_tests = False
    r = prog.result
    signal.alarm(0)
    if r.failures or r.errors or r.unexpectedSuccesses:
        sys.exit(1)
    if r.skipped:
        print(f"SKIP: {len(r.skipped)} test(s) skipped", flush=True)
        sys.exit(SKIP)
    if r.testsRun == 0:
        sys.exit(1)
    sys.exit(0)


# --------------------------------------------------------------------------------------
# Files


class TempDir:
    """A temporary directory, mode 0755 (Dovecot's and nobody's processes must search it).

    Kept when MAILNET_KEEP_TMP is set, for post-mortems."""

    def __init__(self, prefix="mailnet-interop-"):
        self.path = tempfile.mkdtemp(prefix=prefix)
        os.chmod(self.path, 0o755)
        # Also at exit: a setUpClass that skips or fails after making one never reaches its
        # tearDownClass.
        atexit.register(self.cleanup)

    def __enter__(self):
        return self.path

    def __exit__(self, *exc):
        self.cleanup()

    def cleanup(self):
        if getattr(self, "cleaned", False):
            return
        self.cleaned = True
        if os.environ.get("MAILNET_KEEP_TMP"):
            print(f"kept {self.path}", file=sys.stderr)
            return
        shutil.rmtree(self.path, ignore_errors=True)


def write_users(path, entries):
    """Writes a Dovecot passwd-file: entries is {name: secret} (secrets get {PLAIN})
    or a list of complete lines."""
    if isinstance(entries, dict):
        lines = [f"{n}:{{PLAIN}}{s}" for n, s in entries.items()]
    else:
        lines = list(entries)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o644)
    return path


def make_maildir(path):
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    return path


def to_crlf(data: bytes) -> bytes:
    """Each LF not preceded by CR becomes CRLF (DESIGN.md "On disk": the one transform)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def wire_form(data: bytes) -> bytes:
    """What a POP3 client reassembles from RETR (after dot-unstuffing, lines joined with
    CRLF): the stored bytes with LF -> CRLF, plus a final CRLF if the file lacked one
    (RFC 1939 3: the terminating line is CRLF.CRLF, so the last line needs its CRLF)."""
    w = to_crlf(data)
    if w and not w.endswith(b"\r\n"):
        w += b"\r\n"
    return w


def normalise(data: bytes) -> bytes:
    """For comparing with peers that rewrite line ends (mpop, Dovecot, fetchmail's MDA):
    CRLF -> LF, and a final LF added when missing (a message without one comes back with one,
    since POP3 transfers whole lines)."""
    d = data.replace(b"\r\n", b"\n")
    if d and not d.endswith(b"\n"):
        d += b"\n"
    return d


def maildir_name(n, data, host="testhost", with_sizes=True, secs=1700000000):
    """A Maildir base name as mailnet writes it: <secs>.M<usecs>P<pid>Q<n>.<host>,S=,W=."""
    base = f"{secs + n}.M{100000 + n}P4242Q{n}.{host}"
    if with_sizes:
        base += f",S={len(data)},W={len(to_crlf(data))}"
    return base


def one_mib_message():
    head = (b"From: Big Sender <big@example.org>\n"
            b"To: alice@example.org\n"
            b"Subject: one mebibyte\n"
            b"Message-ID: <big@example.org>\n"
            b"Date: Tue, 14 Nov 2023 22:13:20 +0000\n"
            b"\n")
    body = bytearray()
    i = 0
    size = 1 << 20
    while len(head) + len(body) < size:
        if i % 97 == 0:
            line = b".dot-leading line %d\n" % i
        else:
            line = (b"%08d " % i) + bytes(b"abcdefghijklmnopqrstuvwxyz0123456789"[(i % 36):] +
                                          b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")[:60] + b"\n"
        body += line
        i += 1
    msg = head + bytes(body)
    msg = msg[:size - 1] + b"\n"
    assert len(msg) == size
    return msg


def test_messages(big=True):
    """The fixture messages: (label, bytes) in the order they are stored.

    Stored with LF line ends except the 'crlf' one (a foreign file). Varied content:
    dot-leading lines (including a lone '.'), 8-bit bytes, an empty body, a line of
    1000 octets, no final newline, a 'From ' line, and (big=True) a 1 MiB message."""
    msgs = [
        ("plain",
         b"Return-Path: <bob@example.org>\n"
         b"From: Bob <bob@example.org>\n"
         b"To: Alice <alice@example.org>\n"
         b"Subject: plain message\n"
         b"Message-ID: <plain@example.org>\n"
         b"Date: Tue, 14 Nov 2023 22:13:20 +0000\n"
         b"\n"
         b"Hello Alice,\n"
         b"\n"
         b"From here on the body has a line that mbox would escape.\n"
         b"Bye.\n"),
        ("dots",
         b"From: dots@example.org\n"
         b"To: alice@example.org\n"
         b"Subject: dot-leading lines\n"
         b"Message-ID: <dots@example.org>\n"
         b"\n"
         b".\n"
         b"..\n"
         b"...\n"
         b".leading dot\n"
         b"..two leading dots\n"
         b"middle . dot\n"
         b"\n"
         b".\n"
         b"not the end\n"
         b" .space then dot\n"
         b".\n"),
        ("crlf",
         b"From: crlf@example.org\r\n"
         b"To: alice@example.org\r\n"
         b"Subject: stored with CRLF line ends\r\n"
         b"Message-ID: <crlf@example.org>\r\n"
         b"\r\n"
         b"This file was written by a foreign tool with CRLF.\r\n"
         b".dot after CRLF\r\n"
         b"end\r\n"),
        ("8bit",
         "From: =?utf-8?q?J=C3=BCrgen?= <juergen@example.org>\n"
         "To: alice@example.org\n"
         "Subject: 8-bit body\n"
         "Message-ID: <8bit@example.org>\n"
         "MIME-Version: 1.0\n"
         "Content-Type: text/plain; charset=utf-8\n"
         "Content-Transfer-Encoding: 8bit\n"
         "\n"
         "Grüße aus Köln, naïve café, 日本語, emoji 😀\n".encode("utf-8")
         + b"Latin-1 bytes: caf\xe9 na\xefve \xa9\xae\n"
         + b"high bytes: " + bytes(range(0x80, 0x100)) + b"\n"
         + b"tab\there, escape \x1b[0m, del \x7f\n"),
        ("empty-body",
         b"From: empty@example.org\n"
         b"To: alice@example.org\n"
         b"Subject: empty body\n"
         b"Message-ID: <empty@example.org>\n"
         b"\n"),
        ("long-line",
         b"From: long@example.org\n"
         b"To: alice@example.org\n"
         b"Subject: a line of 1000 octets\n"
         b"Message-ID: <long@example.org>\n"
         b"\n"
         + b"x" * 998 + b"\n"
         + b"short line after it\n"),
        ("no-final-newline",
         b"From: nofinal@example.org\n"
         b"To: alice@example.org\n"
         b"Subject: no final newline\n"
         b"Message-ID: <nofinal@example.org>\n"
         b"\n"
         b"first line\n"
         b"the last line has no newline"),
    ]
    if big:
        msgs.append(("1mib", one_mib_message()))
    return msgs


def fill_maildir(mdir, messages, sub="new", with_sizes=True, start=1):
    """Writes the messages into mdir/<sub>/ with mailnet-style names; returns
    [(label, base name, bytes)] in the same order."""
    make_maildir(mdir)
    out = []
    for i, (label, data) in enumerate(messages, start):
        name = maildir_name(i, data, with_sizes=with_sizes)
        with open(os.path.join(mdir, sub, name), "wb") as f:
            f.write(data)
        out.append((label, name, data))
    return out


def maildir_files(mdir):
    """{base name: (sub, file name)} for every message file in new/ and cur/."""
    out = {}
    for sub in ("new", "cur"):
        d = os.path.join(mdir, sub)
        if not os.path.isdir(d):
            continue
        for fn in os.listdir(d):
            out[fn.split(":", 1)[0]] = (sub, fn)
    return out


def maildir_messages(mdir):
    """The bytes of every message in mdir/{new,cur}, sorted by name."""
    out = []
    for sub in ("new", "cur"):
        d = os.path.join(mdir, sub)
        for fn in sorted(os.listdir(d)):
            with open(os.path.join(d, fn), "rb") as f:
                out.append(f.read())
    return out


def chown_tree(path, user="nobody"):
    pw = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for n in dirs + files:
            os.lchown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)


def nobody_group():
    pw = pwd.getpwnam("nobody")
    return grp.getgrgid(pw.pw_gid).gr_name


def read_to_close(sock):
    """Everything a socket (plain or TLS) gives until the peer closes it."""
    got = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return got
        got += chunk


def retr_all_and_quit(p):
    """Every message of the logged-in poplib session `p` as RETR gives it (CRLF, dot-unstuffed),
    then QUIT; on any failure the connection is closed without QUIT (nothing is deleted)."""
    try:
        count, _ = p.stat()
        out = [b"\r\n".join(p.retr(i)[1]) + b"\r\n" for i in range(1, count + 1)]
        p.quit()
        return out
    except BaseException:
        p.close()
        raise


def compare_message_sets(tc, stored, fetched, what):
    """Asserts that `fetched` (list of bytes) holds exactly the `stored` messages
    ([(label, name, bytes)]), after normalising line ends; names the ones that differ."""
    want = {}
    for label, _name, data in stored:
        want.setdefault(normalise(data), []).append(label)
    got = [normalise(d) for d in fetched]
    unmatched = []
    for g in got:
        if g in want and want[g]:
            want[g].pop()
        else:
            unmatched.append(g)
    missing = [lbl for lbls in want.values() for lbl in lbls]
    if missing or unmatched:
        lines = [f"{what}: {len(fetched)} fetched, {len(stored)} stored"]
        for m in missing:
            lines.append(f"  stored message {m!r} not found unchanged")
        for u in unmatched:
            lines.append(f"  fetched message not among the stored ones: "
                         f"{len(u)} octets, head {u[:300]!r}")
            # Say which stored message it looks like and where it first differs.
            best = None
            for label, _n, data in stored:
                s = normalise(data)
                k = next((i for i in range(min(len(s), len(u))) if s[i] != u[i]), min(len(s), len(u)))
                if best is None or k > best[1]:
                    best = (label, k, s)
            if best:
                label, k, s = best
                lines.append(f"    closest: {label!r}, first difference at octet {k}: "
                             f"stored {s[max(0, k - 40):k + 40]!r} vs fetched {u[max(0, k - 40):k + 40]!r}")
        tc.fail("\n".join(lines))


# --------------------------------------------------------------------------------------
# Processes


def _set_pdeathsig():
    # If this script dies (ctest timeout, SIGKILL), the kernel kills the child too.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run(cmd, timeout=30, check=False, **kw):
    """subprocess.run with a time limit and captured output (bytes)."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    if kw.get("input") is None:
        kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.run(cmd, timeout=timeout, preexec_fn=_set_pdeathsig, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd!r} exited {p.returncode}\nstdout: {p.stdout!r}\nstderr: {p.stderr!r}")
    return p


def free_port():
    """A port that was free a moment ago (for peers that cannot take port 0, e.g. Dovecot)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def stop_pid(proc, term_wait=5.0):
    """Stops a Popen by its PID: SIGTERM, then SIGKILL after term_wait seconds.
    Returns the exit status (negative: killed by that signal)."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=term_wait)
    except subprocess.TimeoutExpired:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return proc.wait(timeout=10)


def store_workdir(store):
    """Where a server whose --store is `store` runs by default: the Maildir root's parent. A
    database's URI names no directory: such a server needs workdir= given."""
    if "://" in store:
        raise ValueError(f"a server on {store} needs workdir= (a URI names no directory)")
    return os.path.dirname(os.path.abspath(store))


class ListeningServer:
    """A mailnet server process on 127.0.0.1 port 0 (Pop3d, Smtpd): started with `args`, ready
    once it printed `listening KIND ADDR:PORT` for every kind in `want` (DESIGN.md); .port and
    .tls_port are then the real ports of `plain_kind` and `tls_kind`. Stopped by its PID."""

    name = "server"
    plain_kind = tls_kind = None

    @classmethod
    def listener_args(cls, listen, implicit_tls, tls, addr, extra):
        """The --listen/--tls-listen/--tls-cert/--tls-key arguments and `extra`, with the kinds
        of listening line to wait for."""
        args = []
        if listen:
            args += ["--listen", f"{addr}:0"]
        if implicit_tls:
            args += ["--tls-listen", f"{addr}:0"]
        if tls is not None:
            args += ["--tls-cert", tls.cert, "--tls-key", tls.key]
        args += list(extra)
        want = ([cls.plain_kind] if listen else []) + ([cls.tls_kind] if implicit_tls else [])
        return args, want

    def __init__(self, args, want, workdir, start_timeout=10.0):
        self.args = list(args)
        self.want = list(want)
        self.workdir = workdir
        self.start_timeout = start_timeout
        self.port = None
        self.tls_port = None
        self.proc = None
        n = 0
        while True:
            self.out_path = os.path.join(self.workdir, f"{self.name}.{n}.out")
            if not os.path.exists(self.out_path):
                break
            n += 1
        self.err_path = os.path.join(self.workdir, f"{self.name}.{n}.err")

    def start(self):
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(self.args, stdout=self._out, stderr=self._err,
                                     stdin=subprocess.DEVNULL, preexec_fn=_set_pdeathsig)
        deadline = time.monotonic() + self.start_timeout
        found = {}
        while time.monotonic() < deadline:
            found = parse_listening(self.stdout())
            if all(k in found for k in self.want):
                self.port = found.get(self.plain_kind)
                self.tls_port = found.get(self.tls_kind)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        status = self.proc.poll()
        self.stop()
        raise AssertionError(f"{self.name} did not print its listening lines {self.want} "
                             f"(exit status {status}); stdout {self.stdout()!r}, stderr {self.stderr()!r}")

    def stop(self, term_wait=5.0):
        try:
            return stop_pid(self.proc, term_wait)
        finally:
            for f in (getattr(self, "_out", None), getattr(self, "_err", None)):
                if f:
                    f.close()

    def stdout(self):
        with open(self.out_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr(self):
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def parse_listening(text):
    """{kind: port} from a server's `listening KIND ADDR:PORT` lines (the first per kind)."""
    found = {}
    for m in re.finditer(r"^listening (pop3s?|smtps?|http) ([0-9.]+|\[[0-9a-f:]+\]):(\d+)\s*$", text, re.M):
        found.setdefault(m.group(1), int(m.group(3)))
    return found


class Pop3d(ListeningServer):
    """A pop3d process on 127.0.0.1 port 0; .port (and .tls_port) once it said so.

        with Pop3d(binary, store, users, tls=ca) as srv:
            poplib.POP3(HOST, srv.port, timeout=10)
    """

    name, plain_kind, tls_kind = "pop3d", "pop3", "pop3s"

    def __init__(self, binary, store, users, extra=(), tls=None, implicit_tls=False,
                 listen=True, workdir=None, start_timeout=10.0, addr=HOST):
        self.binary = binary
        self.store = store
        self.users = users
        more, want = self.listener_args(listen, implicit_tls, tls, addr, extra)
        args = [binary, "--store", store, "--users", users] + more
        super().__init__(args, want, workdir or store_workdir(store), start_timeout)


class Smtpd(ListeningServer):
    """An smtpd process on 127.0.0.1 port 0 delivering into the Maildir root `store` (created
    here); .port (smtp, STARTTLS when `tls` is given) and .tls_port (smtps, with
    implicit_tls). users=None is open mode (every recipient accepted). The --hostname is
    SMTPD_HOSTNAME, so the Received: header's `by` is known.

        with Smtpd(binary, store, tls=cert) as srv:
            smtplib.SMTP(HOST, srv.port, timeout=10)
    """

    name, plain_kind, tls_kind = "smtpd", "smtp", "smtps"

    def __init__(self, binary, store, users=None, extra=(), tls=None, implicit_tls=False,
                 listen=True, workdir=None, start_timeout=10.0, addr=HOST):
        self.binary = binary
        self.store = store
        if "://" not in store:  # a Maildir root, not a database's URI
            os.makedirs(store, exist_ok=True)
            os.chmod(store, 0o755)
        args = [binary, "--store", store, "--hostname", SMTPD_HOSTNAME]
        if users is not None:
            args += ["--users", users]
        more, want = self.listener_args(listen, implicit_tls, tls, addr, extra)
        super().__init__(args + more, want, workdir or store_workdir(store), start_timeout)


class Mailnetd(ListeningServer):
    """A mailnetd process: SMTP and POP3 on 127.0.0.1 port 0 over the Maildir root `store`
    (open mode unless `users`); with implicit_tls also smtps and pop3s, with tls_self_signed a
    certificate made at start, with http the HTTP API on port 0 too (--no-http without).
    .ports {kind: port} and .fingerprint (the printed `tls-fingerprint sha256 HEX`, or None) once
    it is up; .port/.tls_port are SMTP's, .pop3_port POP3's, .http_port the API's (or None).

        with Mailnetd(binary, store) as srv:
            smtplib.SMTP(HOST, srv.port, timeout=10)
            poplib.POP3(HOST, srv.pop3_port, timeout=10)
    """

    name, plain_kind, tls_kind = "mailnetd", "smtp", "smtps"

    def __init__(self, binary, store, users=None, extra=(), implicit_tls=False, tls_self_signed=False,
                 workdir=None, start_timeout=10.0, addr=HOST, http=False):
        self.binary = binary
        self.store = store
        args = [binary, "--store", store, "--smtp", f"{addr}:0", "--pop3", f"{addr}:0"]
        want = ["smtp", "pop3"]
        if http:
            args += ["--http", f"{addr}:0"]
            want.append("http")
        else:
            args.append("--no-http")
        if implicit_tls:
            args += ["--smtps", f"{addr}:0", "--pop3s", f"{addr}:0"]
            want += ["smtps", "pop3s"]
        if tls_self_signed:
            args.append("--tls-self-signed")
        if users is not None:
            args += ["--users", users]
        args += list(extra)
        self.ports = {}
        self.fingerprint = None
        super().__init__(args, want, workdir or store_workdir(store), start_timeout)

    def start(self):
        super().start()
        out = self.stdout()
        self.ports = parse_listening(out)
        self.pop3_port = self.ports.get("pop3")
        self.pop3s_port = self.ports.get("pop3s")
        self.http_port = self.ports.get("http")
        if self.http_port:
            self.wait_ready()
        m = re.search(r"^tls-fingerprint sha256 ([0-9a-f]{64})$", out, re.M)
        self.fingerprint = m.group(1) if m else None
        return self

    def wait_ready(self, timeout=10.0):
        """Waits until GET /healthz answers 200: the index holds what the store had at start."""
        import http.client
        deadline = time.monotonic() + timeout
        while True:
            conn = http.client.HTTPConnection(HOST, self.http_port, timeout=5)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
            if time.monotonic() > deadline:
                raise AssertionError("mailnetd's /healthz did not say ok")
            time.sleep(0.02)


def pinned_context():
    """A client TLS context that checks nothing by itself: the caller compares the peer
    certificate's SHA-256 with a pin (assert_pinned), as `pop3c --fingerprint` does."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def assert_pinned(tc, sock, fingerprint):
    """The TLS peer of `sock` presented the certificate whose SHA-256 is `fingerprint`."""
    import hashlib
    der = sock.getpeercert(binary_form=True)
    tc.assertIsNotNone(der, "no peer certificate")
    tc.assertEqual(hashlib.sha256(der).hexdigest(), fingerprint, "the certificate is the one printed")


def save_peer_certificate(tc, port, fingerprint, path):
    """Connects to an implicit-TLS listener with pinned_context(), checks that the certificate
    it presents is the one whose SHA-256 is `fingerprint` (mailnetd's printed
    `tls-fingerprint`) and writes it to `path` as PEM: the trust file for a client that cannot
    pin a SHA-256 itself. Returns the DER bytes."""
    import hashlib
    with socket.create_connection((HOST, port), timeout=10) as raw:
        with pinned_context().wrap_socket(raw) as s:
            der = s.getpeercert(binary_form=True)
    tc.assertIsNotNone(der, "no peer certificate")
    tc.assertEqual(hashlib.sha256(der).hexdigest(), fingerprint, "the certificate is the one printed")
    with open(path, "w") as f:
        f.write(ssl.DER_cert_to_PEM_cert(der))
    return der


def colon_hex(digest_hex):
    """`0123ab...` -> `01:23:AB:...` (the form mpop's --tls-fingerprint and fetchmail's
    sslfingerprint take)."""
    return ":".join(digest_hex[i:i + 2] for i in range(0, len(digest_hex), 2)).upper()


def spki_sha256_b64(pem_path):
    """curl's --pinnedpubkey form of a certificate's key: `sha256//` + base64 of the SHA-256 of
    its DER SubjectPublicKeyInfo (openssl CLI)."""
    import hashlib
    openssl = shutil.which("openssl")
    if not openssl:
        skip("openssl not installed")
    pub = run([openssl, "x509", "-in", pem_path, "-noout", "-pubkey"], check=True).stdout
    der = run([openssl, "pkey", "-pubin", "-outform", "DER"], input=pub, check=True).stdout
    return "sha256//" + base64.b64encode(hashlib.sha256(der).digest()).decode()


# --------------------------------------------------------------------------------------
# Fetcher peers' quirks, shared by their pop3d scripts and interop_mailnetd_clients

# fetchmail has no Maildir writer: this MDA (argument: the Maildir) writes tmp/ then renames
# into new/.
FETCHMAIL_MDA = """#!/bin/sh
set -e
d=$1
n="$(date +%s.%N).$$"
cat > "$d/tmp/$n"
mv "$d/tmp/$n" "$d/new/$n"
"""

# getmail6 always writes a Return-Path: first (taken from the message's Return-Path:, or
# Sender:, or "<unknown>"), moving any existing one there; removing an added "<unknown>" one
# restores a message that had none.
GETMAIL_ADDED_RETURN_PATH = b"Return-Path: <unknown>\n"

# getmail6 6.18 delivers each message in a forked child and installs its SIGCHLD handler
# only after fork() returns (baseclasses.py forkchild/_prepare_child): when the child exits
# first, the parent waits out its socket timeout and fails with "waiting child pid N timed
# out". That race is getmail's, not the server's: such a run is retried into a fresh Maildir.
GETMAIL_FORK_RACE = b"waiting child pid"


def swaks_has_tls():
    """swaks's --tls/--tlsc need Perl's Net::SSLeay (Debian libnet-ssleay-perl, only
    recommended)."""
    return run(["perl", "-MNet::SSLeay", "-e", "1"], timeout=20).returncode == 0


def swaks_send(swaks, port, sender, to, message, path, *args, helo=None, timeout=60):
    """Runs swaks against HOST:port with `message` (CRLF, ending in CRLF) as its --data, written
    to `path`. swaks itself dot-stuffs the data and appends CRLF.CRLF: it is given the message
    without its last CRLF (with it, it would send one more empty line). Returns the
    CompletedProcess (the caller checks the exit code)."""
    assert message.endswith(b"\r\n")
    with open(path, "wb") as f:
        f.write(message[:-2])
    cmd = [swaks, "--server", f"{HOST}:{port}", "--from", sender, "--to", ",".join(to),
           "--data", "@" + path, "--timeout", "20", *(["--helo", helo] if helo else []), *args]
    p = run(cmd, timeout=timeout)
    p.cmd = cmd
    return p


# --------------------------------------------------------------------------------------
# TLS


class TestCA:
    """A throw-away CA and a server certificate for 127.0.0.1 and localhost (openssl CLI).
    .ca (PEM to trust), .cert (leaf + nothing else), .key. `san` names the server otherwise
    (e.g. "DNS:localhost" alone, for a host name check that must fail at 127.0.0.1)."""

    def __init__(self, d, san="DNS:localhost, IP:127.0.0.1"):
        openssl = shutil.which("openssl")
        if not openssl:
            skip("openssl not installed")
        self.dir = os.path.join(d, "ca")
        os.makedirs(self.dir, exist_ok=True)
        self.ca = os.path.join(self.dir, "ca.pem")
        self.ca_key = os.path.join(self.dir, "ca.key")
        self.cert = os.path.join(self.dir, "server.pem")
        self.key = os.path.join(self.dir, "server.key")
        csr = os.path.join(self.dir, "server.csr")
        ext = os.path.join(self.dir, "server.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints = critical, CA:FALSE\n"
                    "keyUsage = critical, digitalSignature, keyEncipherment\n"
                    "extendedKeyUsage = serverAuth\n"
                    f"subjectAltName = {san}\n"
                    "subjectKeyIdentifier = hash\n"
                    "authorityKeyIdentifier = keyid:always\n")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run([openssl, "req", "-x509", *ec, "-days", "2", "-subj", "/CN=mailnet interop test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", self.ca_key, "-out", self.ca], check=True)
        run([openssl, "req", *ec, "-subj", "/CN=localhost", "-keyout", self.key, "-out", csr], check=True)
        run([openssl, "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
             "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", self.cert], check=True)
        os.chmod(self.key, 0o600)

    def client_context(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def fingerprint(self):
        """The server certificate's SHA-256 (of its DER form), lowercase hex."""
        return cert_sha256(self.cert)


def cert_sha256(pem_path):
    """SHA-256 of the first certificate in a PEM file (its DER form), lowercase hex."""
    import hashlib
    with open(pem_path) as f:
        pem = f.read()
    m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S)
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(m.group(0))).hexdigest()


class SelfSignedCert:
    """A self-signed server certificate for 127.0.0.1 and localhost, made with `openssl req
    -x509` in `d`/selfsigned: .cert and .key for the server, .ca (the same file) to trust."""

    def __init__(self, d):
        openssl = shutil.which("openssl")
        if not openssl:
            skip("openssl not installed")
        self.dir = os.path.join(d, "selfsigned")
        os.makedirs(self.dir, exist_ok=True)
        self.cert = self.ca = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-addext", "extendedKeyUsage=serverAuth",
             "-keyout", self.key, "-out", self.cert], check=True)
        os.chmod(self.key, 0o600)

    def client_context(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


# --------------------------------------------------------------------------------------
# A raw POP3 client (for pipelining, long lines, exact bytes)


class RawPop3:
    """Line-level POP3 over a socket, every read bounded by `timeout`."""

    def __init__(self, port, timeout=10.0, host=HOST, sock=None):
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.greeting = None

    @classmethod
    def from_bytes(cls, data: bytes):
        """Parses replies already captured (e.g. openssl s_client's output)."""
        class _Closed:
            def settimeout(self, _t):
                pass

            def recv(self, _n):
                return b""

            def close(self):
                pass
        r = cls(None, sock=_Closed())
        r.buf = data
        return r

    def read_greeting(self):
        self.greeting = self.readline()
        return self.greeting

    def send(self, data: bytes):
        self.sock.sendall(data)

    def cmd(self, line: str):
        self.send(line.encode() + b"\r\n")
        return self.readline()

    def readline(self) -> bytes:
        """One line without its CRLF; raises EOFError if the server closed."""
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; pending {self.buf[:200]!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_multiline(self, raw=False) -> bytes:
        """The body of a multi-line reply, dot-unstuffed (unless raw), lines joined with
        CRLF (each line keeps its CRLF), up to and excluding the terminating '.'."""
        # Fast path: find the terminator in the buffer.
        while True:
            if self.buf.startswith(b".\r\n"):
                self.buf = self.buf[3:]
                return b""
            i = self.buf.find(b"\r\n.\r\n")
            if i >= 0:
                body = self.buf[:i + 2]
                self.buf = self.buf[i + 5:]
                return body if raw else unstuff(body)
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed inside a multi-line reply")
            self.buf += chunk

    def login(self, user=USER, password=PASSWORD):
        r = self.cmd(f"USER {user}")
        assert r.startswith(b"+OK"), r
        r = self.cmd(f"PASS {password}")
        assert r.startswith(b"+OK"), r
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def unstuff(raw: bytes) -> bytes:
    """Removes POP3 dot-stuffing from CRLF-joined lines (RFC 1939 3)."""
    if raw.startswith(b"."):
        raw = raw[1:]
    return raw.replace(b"\r\n.", b"\r\n")


def auth_plain_b64(user=USER, password=PASSWORD, authzid=""):
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def wait_until(pred, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


class Dovecot:
    """A private Dovecot POP3 server (PEERS.md): run as root with base_dir, state_dir and
    log in `workdir`/`name`, userdb static uid nobody, plaintext auth allowed, Maildirs at
    `mail_root`/<user>, UIDL %f (the Maildir base name, as pop3d's). Needs root.

    Without `tls` no TLS at all (`ssl = no`). With `tls` (an object with .cert and .key PEM
    paths: TestCA, SelfSignedCert) the pop3 listener offers STLS, and with implicit_tls a
    pop3s listener too (.tls_port). Dovecot cannot take port 0: free ports are chosen first
    (and the start is retried if one was taken meanwhile)."""

    def __init__(self, workdir, mail_root, users, extra_conf="", tls=None, implicit_tls=False,
                 name="dovecot"):
        self.workdir = os.path.join(workdir, name)
        os.makedirs(self.workdir, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self.mail_root = mail_root
        self.users = users
        self.extra_conf = extra_conf
        self.tls = tls
        self.implicit_tls = implicit_tls
        self.proc = None
        self.port = None
        self.tls_port = None
        self.conf = os.path.join(self.workdir, "dovecot.conf")
        self.log = os.path.join(self.workdir, "dovecot.log")

    def write_conf(self, port, tls_port=None):
        grp_name = nobody_group()
        if self.tls is None:
            ssl_conf = "ssl = no"
        else:
            ssl_conf = f"ssl = yes\nssl_cert = <{self.tls.cert}\nssl_key = <{self.tls.key}"
        pop3s = ""
        if tls_port is not None:
            pop3s = f"""  inet_listener pop3s {{
    address = {HOST}
    port = {tls_port}
    ssl = yes
  }}
"""
        with open(self.conf, "w") as f:
            f.write(f"""# mailnet interop: a private Dovecot POP3 server
base_dir = {self.workdir}/run
state_dir = {self.workdir}/state
log_path = {self.log}
info_log_path = {self.log}
listen = {HOST}
protocols = pop3
{ssl_conf}
disable_plaintext_auth = no
auth_failure_delay = 0
first_valid_uid = 1
mail_location = maildir:{self.mail_root}/%u
pop3_uidl_format = %f
pop3_enable_last = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.users}
}}
userdb {{
  driver = static
  args = uid=nobody gid={grp_name}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {HOST}
    port = {port}
  }}
{pop3s}}}
{self.extra_conf}
""")

    def start(self, timeout=15.0):
        for _attempt in range(3):
            port = free_port()
            tls_port = free_port() if self.implicit_tls else None
            while tls_port == port:
                tls_port = free_port()
            self.write_conf(port, tls_port)
            p = run(["doveconf", "-c", self.conf, "-n"], timeout=20)
            if p.returncode != 0:
                raise AssertionError(f"doveconf rejects {self.conf}: {p.stderr!r}")
            self._out = open(os.path.join(self.workdir, "dovecot.stderr"), "ab")
            self.proc = subprocess.Popen(["dovecot", "-F", "-c", self.conf], stdout=self._out,
                                         stderr=self._out, stdin=subprocess.DEVNULL,
                                         preexec_fn=_set_pdeathsig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with socket.create_connection((HOST, port), timeout=2) as s:
                        s.settimeout(5)
                        if s.recv(512).startswith(b"+OK") and self._tls_ready(tls_port):
                            self.port = port
                            self.tls_port = tls_port
                            return self
                except OSError:
                    pass
                time.sleep(0.05)
            self.stop()
        raise AssertionError(f"dovecot did not start: {self.logs()}")

    def _tls_ready(self, tls_port):
        """The pop3s listener answers a TLS handshake with a greeting (not verified here)."""
        if tls_port is None:
            return True
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((HOST, tls_port), timeout=2) as raw:
                with ctx.wrap_socket(raw) as s:
                    s.settimeout(5)
                    return s.recv(512).startswith(b"+OK")
        except OSError:
            return False

    def stop(self):
        try:
            return stop_pid(self.proc, term_wait=10)
        finally:
            if getattr(self, "_out", None):
                self._out.close()

    def logs(self):
        out = []
        for fn in ("dovecot.log", "dovecot.stderr"):
            p = os.path.join(self.workdir, fn)
            if os.path.exists(p):
                with open(p, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace")[-4000:])
        return "\n".join(out)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class FetcherCase(unittest.TestCase):
    """Base for fetcher peers (fetchmail, mpop, getmail6): one pop3d per class with STLS
    and pop3s, alice's mailbox filled with test_messages(); each test fetches into a fresh
    Maildir and compares with check_fetched()."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.d = cls.tmp.path
        cls.ca = TestCA(cls.d)
        cls.users = write_users(os.path.join(cls.d, "users"), {USER: PASSWORD})
        cls.store = os.path.join(cls.d, "store")
        cls.mdir = os.path.join(cls.store, USER)
        cls.stored = fill_maildir(cls.mdir, test_messages(big=True))
        cls.srv = Pop3d(cls.binary, cls.store, cls.users, tls=cls.ca, implicit_tls=True,
                        workdir=cls.d)
        cls.srv.start()
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop()
        finally:
            cls.tmp.cleanup()

    def tearDown(self):
        if not getattr(self._outcome, "success", True):
            print(f"--- pop3d stderr ---\n{self.srv.stderr()}", file=sys.stderr)

    def fresh_dir(self, name):
        type(self).n += 1
        p = os.path.join(self.d, f"{name}.{self.n}")
        os.makedirs(p)
        return p

    def assert_store_untouched(self):
        """keep: nothing deleted, nothing marked (RETR marks seen: cur/ is allowed)."""
        files = maildir_files(self.mdir)
        self.assertEqual(sorted(files), sorted(n for _l, n, _d in self.stored),
                         "every stored message is still on the server")

    def check_fetched(self, maildir, what):
        fetched = maildir_messages(maildir)
        compare_message_sets(self, self.stored, fetched, what)
        self.assert_store_untouched()


# --------------------------------------------------------------------------------------
# smtpd: what it delivered, and a raw SMTP client


def mailbox_dir(store, address):
    """STORE/<mailbox> of a recipient in open mode, or of a users-file account named by its
    address (DESIGN.md "On disk"): the address with its ASCII letters lowercased, UTF-8 bytes
    untouched (names needing no %XX escape only)."""
    return os.path.join(os.fsencode(store), address.encode("utf-8").lower()).decode(
        "utf-8", "surrogateescape")


def delivered(store, address, wait_for=None, timeout=10.0):
    """[(path, bytes)] of the messages in a recipient's new/ and cur/, in delivery order (the
    Maildir name's seconds, microseconds, Q counter). With wait_for=N, waits (bounded) until N
    are there: a client may see its 250 before this script looks, never the other way round."""
    mdir = mailbox_dir(store, address)

    def key(path):
        m = re.match(r"(\d+)\.M(\d+)P\d+Q(\d+)", os.path.basename(path))
        return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)

    def scan():
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(mdir, sub)
            if os.path.isdir(d):
                out += [os.path.join(d, fn) for fn in os.listdir(d)]
        return sorted(out, key=key)

    if wait_for is not None:
        wait_until(lambda: len(scan()) >= wait_for, timeout=timeout)
    out = []
    for path in scan():
        with open(path, "rb") as f:
            out.append((path, f.read()))
    return out


# How long the Maildir store keeps a tmp/ file made ahead for a busy mailbox when no delivery
# takes it (store::prepared_lifetime, 2 s, and the committer's sweep after it), with a margin.
PREPARED_LIFETIME = 5


def tmp_files(store, address, settle=False):
    """The names in a mailbox's tmp/. settle: after waiting (up to PREPARED_LIFETIME) for it to
    empty, as a file made ahead for the next delivery goes once no delivery comes."""
    d = os.path.join(mailbox_dir(store, address), "tmp")
    deadline = time.monotonic() + (PREPARED_LIFETIME if settle else 0)
    while True:
        names = os.listdir(d) if os.path.isdir(d) else []
        if not names or time.monotonic() >= deadline:
            return names
        time.sleep(0.1)


def sent_form(message: bytes) -> bytes:
    """What smtpd stores for a message sent with CRLF line ends (after the trace headers):
    the message with CRLF -> LF (DESIGN.md "On disk")."""
    return message.replace(b"\r\n", b"\n")


_DATE_RE = re.compile(r"^(?:(Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?\d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                      r"\d{4} \d{2}:\d{2}:\d{2} [+-]\d{4}$")


def split_trace(stored: bytes):
    """Splits the two trace headers smtpd prepends off a stored message: returns
    (Return-Path value, Received value unfolded, the rest). Raises AssertionError when the
    file does not start with exactly Return-Path then Received (each possibly folded)."""
    fields = []
    rest = stored
    for want in (b"Return-Path", b"Received"):
        m = re.match(rb"([!-9;-~]+):[ \t]?((?:[^\n]*\n)(?:[ \t][^\n]*\n)*)", rest)
        if not m or m.group(1) != want:
            raise AssertionError(f"expected a {want.decode()}: header, found {rest[:120]!r}")
        fields.append(m.group(2))
        rest = rest[m.end():]
    unfold = lambda v: re.sub(rb"\n[ \t]+", b" ", v).rstrip(b"\n").decode("utf-8")
    return unfold(fields[0]), unfold(fields[1]), rest


def strip_trace(stored: bytes) -> bytes:
    """The stored message without the Return-Path: and Received: smtpd prepended."""
    return split_trace(stored)[2]


def check_trace(tc, stored, sender, recipients=None, protocol="ESMTP", helo=None):
    """Asserts smtpd's trace headers are there and well formed (RFC 5321 4.4, RFC 3848):
    `Return-Path: <sender>`, then `Received: from HELO ([IP]) by SMTPD_HOSTNAME (mailnet) with
    PROTOCOL id ID[ for <rcpt>]; DATE` with `for` only for a single recipient and a date
    within a day of now. Returns (the rest of the message, the Received dict)."""
    from email.utils import parsedate_to_datetime
    import datetime
    rp, rcvd, rest = split_trace(stored)
    tc.assertEqual(rp, f"<{sender}>", "Return-Path: <envelope sender>")
    m = re.fullmatch(r"from (?P<helo>\S+) \((?P<ip>\[[0-9.]+\]|\[IPv6:[0-9a-fA-F:.]+\])\)"
                     r" by (?P<by>\S+) \(mailnet\) with (?P<with>[A-Z0-9]+) id (?P<id>[!-~]+?)"
                     r"(?: for <(?P<for>[^>]*)>)?; (?P<date>.+)", rcvd)
    tc.assertIsNotNone(m, f"Received: not well formed: {rcvd!r}")
    tc.assertEqual(m["ip"], f"[{HOST}]", rcvd)
    tc.assertEqual(m["by"], SMTPD_HOSTNAME, rcvd)
    if helo is not None:
        tc.assertEqual(m["helo"], helo, rcvd)
    tc.assertEqual(m["with"], protocol, rcvd)
    if recipients is not None:
        tc.assertEqual(m["for"], recipients[0] if len(recipients) == 1 else None,
                       f"`for` only with one recipient: {rcvd!r}")
    tc.assertRegex(m["date"], _DATE_RE, rcvd)
    when = parsedate_to_datetime(m["date"])
    now = datetime.datetime.now(datetime.timezone.utc)
    tc.assertLess(abs((now - when).total_seconds()), 86400, f"Received: date {m['date']!r}")
    return rest, m.groupdict()


def assert_delivered(tc, store, recipients, sender, message, protocol="ESMTP", count=1, helo=None):
    """The common check of a delivery: each recipient's mailbox holds `count` messages, the
    newest one (the others are not looked at) equal to `message` (CRLF -> LF) after its trace
    headers, which are well formed; with several recipients the copies are one file (same
    inode). Returns the stored bytes."""
    inodes = set()
    stored = None
    for r in recipients:
        got = delivered(store, r, wait_for=count)
        tc.assertEqual(len(got), count, f"{r}: {count} message(s) in its mailbox")
        path, data = got[-1]
        inodes.add((os.stat(path).st_dev, os.stat(path).st_ino))
        rest, _ = check_trace(tc, data, sender, recipients, protocol, helo)
        tc.assertEqual(rest, sent_form(message), f"{r}: stored message == sent message (CRLF -> LF)")
        stored = data
    tc.assertEqual(len(inodes), 1, "one file hard-linked into every recipient's mailbox")
    return stored


class RawSmtp:
    """Line-level SMTP over a socket, every read bounded by `timeout` (for BDAT, smuggling,
    pipelining by hand, a client that vanishes mid-DATA)."""

    def __init__(self, port, timeout=10.0, host=HOST, sock=None):
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data: bytes):
        self.sock.sendall(data)

    def reply(self):
        """One reply: (code, [text lines]); raises EOFError if the server closed."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise EOFError(f"connection closed; pending {self.buf[:200]!r}, lines {lines!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines

    def cmd(self, line):
        self.send((line if isinstance(line, bytes) else line.encode()) + b"\r\n")
        return self.reply()

    def expect(self, line, code):
        got = self.cmd(line)
        if got[0] != code:
            raise AssertionError(f"{line!r}: expected {code}, got {got}")
        return got

    def greet(self, helo="raw.interop.test"):
        code, lines = self.reply()
        if code != 220:
            raise AssertionError(f"greeting {lines}")
        return self.expect(f"EHLO {helo}", 250)

    def pending(self, wait=0.5):
        """Whatever else the server sends within `wait` seconds (b"" if nothing; EOF too)."""
        self.sock.settimeout(wait)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
        except (socket.timeout, TimeoutError):
            pass
        finally:
            self.sock.settimeout(10.0)
        out, self.buf = self.buf, b""
        return out

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class SmtpdCase(unittest.TestCase):
    """Base for the smtpd interop scripts: one temp dir, self-signed certificate and users
    file (SMTP_USERS: full addresses) per class; each test starts the smtpd servers it needs
    with start(), each on a fresh store, stopped by PID (and their stderr shown on failure)
    in tearDown."""

    binary = None  # set by the script: smtpd_binary()

    @classmethod
    def setUpClass(cls):
        cls.tmp = TempDir()
        cls.d = cls.tmp.path
        cls.cert = SelfSignedCert(cls.d)
        cls.users = write_users(os.path.join(cls.d, "users"), SMTP_USERS)
        cls.n = 0

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def setUp(self):
        self.servers = []

    def tearDown(self):
        failed = not getattr(self._outcome, "success", True)
        for srv in self.servers:
            srv.stop()
            if failed:
                print(f"--- smtpd stderr ({' '.join(srv.args[1:])}) ---\n{srv.stderr()}", file=sys.stderr)

    def start(self, users=False, tls=True, implicit_tls=False, extra=(), store=None):
        """A running smtpd on a fresh store (self.store): open mode, or --users SMTP_USERS;
        STARTTLS with the self-signed certificate unless tls=False."""
        type(self).n += 1
        self.store = store or os.path.join(self.d, f"store.{self.n}")
        srv = Smtpd(self.binary, self.store, users=self.users if users else None, extra=extra,
                    tls=self.cert if tls or implicit_tls else None, implicit_tls=implicit_tls,
                    workdir=self.d)
        self.servers.append(srv)
        return srv.start()

    def message_file(self, data, name="msg"):
        type(self).n += 1
        p = os.path.join(self.d, f"{name}.{self.n}.eml")
        with open(p, "wb") as f:
            f.write(data)
        return p


# Accounts for --users (names are full addresses, DESIGN.md "On disk").
SMTP_USERS = {"alice@example.org": "alice-secret", "bob@example.org": "bob-secret",
              "carol@example.org": "carol-secret"}


def smtp_message(subject, body_lines, headers=(), sender="sender@example.org", to="rcpt@example.org"):
    """A CRLF message as a client sends it (before dot-stuffing): a few headers, then the body
    lines (bytes) each ended with CRLF."""
    h = [b"From: " + sender.encode(), b"To: " + to.encode(), b"Subject: " + subject.encode(),
         b"Message-ID: <" + subject.replace(" ", "-").encode() + b"@interop.test>",
         b"Date: Tue, 14 Nov 2023 22:13:20 +0000", *headers]
    return b"\r\n".join(h) + b"\r\n\r\n" + b"".join(line + b"\r\n" for line in body_lines)


# Body lines the smtpd tests send: lines that start with dots (a line that is only `..`, one
# that is only `.`, a `.` followed by text; never the last line), and a dot inside a line.
DOT_LINES = [b"first line", b".leading dot", b"..", b".", b"...three", b". space after dot",
             b"middle . dot", b"..two leading dots", b"last line"]
EIGHT_BIT_LINES = ["Grüße aus Köln, naïve café, 日本語, emoji 😀".encode("utf-8"),
                   b"Latin-1 bytes: caf\xe9 na\xefve \xa9\xae",
                   b"high bytes: " + bytes(range(0x80, 0x100)),
                   b"last line"]
