#!/usr/bin/env python3
"""Helpers of bench/run for the SMTP benchmark (standard library only; pop3lib.py's too).

  smtpbench.py run SECS -- CMD...     runs CMD (killed after SECS); prints
                                      "rc=N secs=S client_cpu=C" (C: CMD's CPU / wall time)
  smtpbench.py cpusplit PID            user and system CPU seconds of PID
  smtpbench.py count DIR              files in every new/ below DIR (a Maildir or a root of them)
  smtpbench.py verify DIR N           every X-Bench-Seq 0..N-1 in DIR's new/ files exactly once:
                                      prints "files=F distinct=D missing=M duplicated=X"
  smtpbench.py report RAW DOC META    medians of RAW into DOC's block bench:smtp
"""
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pop3lib import fmt, read_raw, write_block  # noqa: E402


def run(secs, dash, *cmd):
    assert dash == "--"
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=float(secs))
        rc, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        rc, out = 124, e.stdout or b""
    t1 = time.monotonic()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    if rc != 0:
        sys.stderr.write(out.decode(errors="replace")[-2000:])
    print(f"rc={rc} secs={t1 - t0:.4f} client_cpu={cpu / (t1 - t0):.2f}")


def cpusplit(pid):
    """User and system CPU seconds of one process (its threads included)."""
    tck = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as f:
        st = f.read()
    fields = st[st.rfind(")") + 2:].split()
    print(f"{int(fields[11]) / tck:.2f} {int(fields[12]) / tck:.2f}")


def new_files(d):
    out = []
    for root, dirs, files in os.walk(d):
        if os.path.basename(root) == "new":
            out.extend(os.path.join(root, f) for f in files)
    return out


def count(d):
    print(len(new_files(d)))


def verify(d, n):
    n = int(n)
    seen = {}
    files = new_files(d)
    for path in files:
        with open(path, "rb") as f:
            head = f.read(4096)
        for line in head.split(b"\n"):
            if line.startswith(b"X-Bench-Seq:"):
                k = int(line.split(b":", 1)[1])
                seen[k] = seen.get(k, 0) + 1
                break
    missing = sum(1 for i in range(n) if i not in seen)
    dup = sum(c - 1 for c in seen.values() if c > 1)
    print(f"files={len(files)} distinct={len(seen)} missing={missing} duplicated={dup}")


# ---- report -------------------------------------------------------------------------------
MODES = [
    # key, label
    ("s20_new", "20 sessions, a new connection per message"),
    ("s20_reuse", "20 sessions, one connection each (`-d`)"),
    ("s1_new", "1 session, a new connection per message"),
    ("s1_reuse", "1 session, one connection (`-d`)"),
]
SERVERS = {
    "null": "mailnet, null deliver (`bench/smtpsink`)",
    "sink": "Postfix `smtp-sink`",
    "maildir": "mailnet `smtpd`, Maildir + fsync",
    "aiosmtpd": "aiosmtpd Maildir (no fsync)",
}


def report(raw, doc, meta):
    vals, by_run, extra = read_raw(raw, ("smtp_", "disk_", "hold_"))

    def med(fig, srv):
        v = vals.get((fig, srv))
        return statistics.median(v) if v else None

    def runs(fig, srv):
        return ", ".join(fmt(x) for x in vals.get((fig, srv), []))

    def ex(fig, srv, k):
        v = extra.get((fig, srv, k))
        return statistics.median(v) if v else None

    def cell(fig, srv):
        m = med(fig, srv)
        return "—" if m is None else f"{fmt(m)} ({runs(fig, srv)})"

    def cpu(fig, srv):
        s, c = ex(fig, srv, "server_cpu"), ex(fig, srv, "client_cpu")
        if s is None:
            return ""
        sy = ex(fig, srv, "server_sys")
        sys_part = f" ({sy * 100:.0f}% in the kernel)" if sy is not None else ""
        rates = vals.get((fig, srv), [])
        per = [x * 1e6 / r for x, r in zip(extra.get((fig, srv, "server_cpu"), []), rates) if r > 0]
        per_sys = [x * 1e6 / r for x, r in zip(extra.get((fig, srv, "server_sys"), []), rates) if r > 0]
        per_part = (f"; server CPU per message {statistics.median(per):.0f} µs"
                    + (f" ({statistics.median(per_sys):.0f} in the kernel)" if per_sys else "")) if per else ""
        return (f"{SERVERS[srv].split(' (')[0]}: server {s * 100:.0f}%{sys_part}, smtp-source {c * 100:.0f}% of a core"
                f"{per_part}")

    def whose(fig, srv):
        """Whose CPU was the limit: 2 cores for server + smtp-source; a side at ≥ 90% of a
        core is the limit; server + client ≥ 180% means both cores were full."""
        s, c = ex(fig, srv, "server_cpu"), ex(fig, srv, "client_cpu")
        if s is None:
            return ""
        if s + c >= 1.8:
            return "both cores full (server + smtp-source)"
        if s >= 0.9:
            return "server CPU"
        if s >= 0.75:
            return "server near a full core"
        if c >= 0.9:
            return "smtp-source CPU"
        return "neither side at a full core: round trips, the disk, or other work on the machine"

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    run_ids = sorted({run for (_f, _s, run) in by_run if run.isdigit()}, key=int)

    def disk_of(fig, run):
        """The disk's rate of RUN: the mean of its samples before and after the run's figures."""
        xs = [by_run[(fig, "disk", run + t)] for t in "ba" if (fig, "disk", run + t) in by_run]
        return sum(xs) / len(xs) if xs else None

    def paired(fig, a, b, disk=None):
        """Per run: A's figure over B's of the same run (B: a server, or the disk's rate DISK of
        that run); the median of those ratios, and the list."""
        rs = []
        for run in run_ids:
            x = by_run.get((fig, a, run))
            y = disk_of(disk, run) if disk else by_run.get((fig, b, run))
            if x is not None and y:
                rs.append(x / y)
        return (statistics.median(rs) if rs else None), rs

    def rfmt(r):
        return "—" if r is None else f"{r:.2f}×"

    # The disk's one-thread time per file for the steps that follow a message's last octet one
    # after the other (fsync, link, fsync of new/), by sample (1b, 1a, ...), in seconds.
    flush_s = {}
    with open(raw) as f:
        for line in f:
            p = line.split()
            if len(p) >= 4 and p[0] == "disk_fsync1":
                for kv in p[4:]:
                    k, _, x = kv.partition("=")
                    if k == "flush_us_per_file" and x:
                        flush_s[p[2]] = float(x) / 1e6

    def flush_of(run):
        """RUN's flush time per file: the mean of the samples before and after its figures (the
        whole steps' time, 1 / rate, where a sample has none: raw files of older runs)."""
        xs = []
        for t in "ba":
            if run + t in flush_s:
                xs.append(flush_s[run + t])
            elif by_run.get(("disk_fsync1", "disk", run + t), 0) > 0:
                xs.append(1 / by_run[("disk_fsync1", "disk", run + t)])
        return sum(xs) / len(xs) if xs else None

    def serial_floor(fig):
        """Per run, the most one session can take durably: its client sends a message only after
        the last one's 250, which comes only once the message is durable, so each message costs
        at least the round trips of the faster server that stores nothing (null deliver or
        smtp-sink) plus the disk's own one-thread time for the flushes that follow its last
        octet (flush_of). {run: msg/s}."""
        out = {}
        for run in run_ids:
            proto = max([x for x in (by_run.get((fig, "null", run)), by_run.get((fig, "sink", run))) if x] or [0])
            flush = flush_of(run)
            if proto and flush is not None:
                out[run] = 1 / (1 / proto + flush)
        return out

    def beyond(fig, floor, peer, factor):
        """The target of FACTOR × PEER's figure beside the serial floor, run by run."""
        if not floor:
            return ""
        asks = [(factor * by_run[(fig, peer, run)], f) for run, f in floor.items() if (fig, peer, run) in by_run]
        if not asks:
            return ""
        over = sum(1 for a, f in asks if a > f)
        text = "; ".join(f"{fmt(a)} asked, floor {fmt(f)}" for a, f in asks)
        return (f" (a session's floor, the faster null server's time per message plus the disk's one-thread flushes (fsync, link, fsync of new/), run by "
                f"run: {text}: above it in {over} of {len(asks)} runs)")

    rows, targets = [], []
    for key, label in MODES:
        fig = f"smtp_{key}"
        n = ex(fig, "null", "msgs")
        nm = ex(fig, "maildir", "msgs")
        na = ex(fig, "aiosmtpd", "msgs")
        # Ratios: the median of the per-run ratios (each server against the other of the same
        # run, minutes apart at most), which the machine's swings disturb less than a ratio of
        # medians; the ratio of the medians is given beside them.
        r_ns, l_ns = paired(fig, "null", "sink")
        r_ma, l_ma = paired(fig, "maildir", "aiosmtpd")
        r_msink, l_msink = paired(fig, "maildir", "sink")
        r_disk, l_disk = paired(fig, "maildir", None, "disk_fsync20" if key.startswith("s20") else "disk_fsync1")
        lst = lambda rs: ", ".join(f"{x:.2f}" for x in rs)  # noqa: E731
        m_ns = ratio(med(fig, "null"), med(fig, "sink"))
        m_ma = ratio(med(fig, "maildir"), med(fig, "aiosmtpd"))
        rows.append(f"| {label}: null deliver against smtp-sink ({fmt(n)} messages each) | msg/s | "
                    f"{cell(fig, 'null')} | {cell(fig, 'sink')} | **{rfmt(r_ns)}** (runs {lst(l_ns)}; of the medians {rfmt(m_ns)}) | "
                    f"{cpu(fig, 'null')} ({whose(fig, 'null')}); {cpu(fig, 'sink')} ({whose(fig, 'sink')}) |")
        rows.append(f"| {label}: Maildir with fsync against aiosmtpd's Maildir ({fmt(nm)} / {fmt(na)} messages) | msg/s | "
                    f"{cell(fig, 'maildir')} | {cell(fig, 'aiosmtpd')} | **{rfmt(r_ma)}** (runs {lst(l_ma)}; of the medians {rfmt(m_ma)}); "
                    f"{rfmt(r_msink)} of smtp-sink (runs {lst(l_msink)}); {'—' if r_disk is None else f'{r_disk * 100:.0f}%'} of the disk's "
                    f"{'20-thread' if key.startswith('s20') else 'one-thread'} fsync'd rate of the same run | "
                    f"{cpu(fig, 'maildir')} ({whose(fig, 'maildir')}); {cpu(fig, 'aiosmtpd')} ({whose(fig, 'aiosmtpd')}) |")
        if True:
            mode = ("new connection per message" if key.endswith("new") else "one connection per session")
            mode = ("20 sessions, " if key.startswith("s20") else "1 session, ") + mode
            ok = r_ns is not None and r_ns >= 1.0
            targets.append(f"| null deliver ≥ 1.0× smtp-sink, {mode} (is {rfmt(r_ns)}) | "
                           f"{'met' if ok else '**not met**'} |")
            floor = serial_floor(fig) if key.startswith("s1") else None
            ok = r_ma is not None and r_ma >= 3.0
            targets.append(f"| Maildir + fsync ≥ 3× aiosmtpd, {mode} (is {rfmt(r_ma)}) | "
                           f"{'met' if ok else '**not met**'}{beyond(fig, floor, 'aiosmtpd', 3.0) if not ok else ''} |")
            ok = r_msink is not None and r_msink >= 0.5
            targets.append(f"| Maildir + fsync ≥ ½ smtp-sink, {mode} (is {rfmt(r_msink)}) | "
                           f"{'met' if ok else '**not met**'}{beyond(fig, floor, 'sink', 0.5) if not ok else ''} |")
            targets.append(f"| Maildir + fsync as a fraction of the disk's fsync'd write rate "
                           f"({'20' if key.startswith('s20') else 'one'} thread{'s' if key.startswith('s20') else ''}), {mode} | "
                           f"{'—' if r_disk is None else f'{r_disk * 100:.0f}%'} (reported, no target) |")
    def ksys(fig):
        v = ex(fig, "disk", "sys_us_per_file")
        return "" if v is None else f"its own CPU per file: {v:.0f} µs in the kernel (median)"
    rows.append(f"| the disk: fsync'd 4 KiB Maildir writes, one thread ({fmt(ex('disk_fsync1', 'disk', 'files'))} files; "
                f"before and after each run's figures) | files/s | {cell('disk_fsync1', 'disk')} | | | `smtpload fsync`: open tmp/, "
                f"write, fsync, close, link into new/, fsync new/, unlink tmp/ (the store's steps, without its shared new/ fsync); "
                f"{ksys('disk_fsync1')} |")
    rows.append(f"| the disk: the same from 8 threads ({fmt(ex('disk_fsync8', 'disk', 'files'))} files; smtpd's blocking pool has 8) | "
                f"files/s | {cell('disk_fsync8', 'disk')} | | | {ksys('disk_fsync8')} |")
    rows.append(f"| the disk: the same from 20 threads ({fmt(ex('disk_fsync20', 'disk', 'files'))} files) | "
                f"files/s | {cell('disk_fsync20', 'disk')} | | | {ksys('disk_fsync20')} |")
    if rows and ("smtp_s20_new", "null") in vals:
        write_block(doc, "smtp", "\n".join([
            meta.replace("\\n", "\n"),
            "",
            "| figure | unit | mailnet: median (runs) | peer: median (runs) | mailnet vs peer | CPU (of one core) and whose was the limit |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "| target | result |",
            "|---|---|",
            *targets,
        ]))
    rows, targets = [], []
    if ("hold_rate", "maildir") in vals:
        hwm = med("hold_hwm", "maildir")
        n = ex("hold_rate", "maildir", "sessions")
        rows.append(f"| {fmt(n)} concurrent sessions held open, then each EHLO, MAIL, RCPT, DATA 4 KiB, QUIT at once | "
                    f"msg/s | {cell('hold_rate', 'maildir')} | all connected in {ex('hold_rate', 'maildir', 'connect_secs'):.2f} s "
                    f"(median); delivered files counted and each X-Bench-Seq found exactly once in every run: "
                    f"{'yes' if (ex('hold_rate', 'maildir', 'exact') or 0) >= 1 and min(extra.get(('hold_rate', 'maildir', 'exact'), [0])) >= 1 else '**no**'} |")
        rows.append(f"| smtpd RSS with the {fmt(n)} sessions connected, idle | KiB | {cell('hold_rss_idle', 'maildir')} | "
                    f"VmRSS when every session had its greeting; before the first connection: "
                    f"{fmt(ex('hold_rss_idle', 'maildir', 'rss0'))} KiB |")
        rows.append(f"| smtpd peak RSS over the {fmt(n)} sessions | KiB | {cell('hold_hwm', 'maildir')} | "
                    f"VmHWM of its one process after the last QUIT (a fresh smtpd per run) |")
        ok = hwm is not None and hwm < 32 * 1024
        targets.append(f"| peak RSS < 32 MiB with {fmt(n)} sessions (is {hwm / 1024:.1f} MiB) | {'met' if ok else '**not met**'} |"
                       if hwm is not None else "| peak RSS < 32 MiB | — |")
    if rows:
        write_block(doc, "smtp-hold", "\n".join([
            meta.replace("\\n", "\n"),
            "",
            "| figure | unit | mailnet smtpd: median (runs) | how measured |",
            "|---|---|---|---|",
            *rows,
            "",
            "| target | result |",
            "|---|---|",
            *targets,
        ]))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"run": run, "cpusplit": cpusplit, "count": count, "verify": verify, "report": report}[cmd](*args)
