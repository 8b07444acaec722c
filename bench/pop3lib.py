#!/usr/bin/env python3
"""Helpers of bench/run for the POP3 benchmark (standard library only).

  pop3lib.py freeport                       a free TCP port on 127.0.0.1 (bind port 0)
  pop3lib.py gen STORE tput|idle NUSERS     the Maildirs both servers serve (tput: big, huge, u1..u20)
  pop3lib.py users FILE NUSERS              the passwd-file: big, huge, u1..uN, all {PLAIN}pw
  pop3lib.py mem PID                        rss_kib pss_kib hwm_kib nprocs, summed over PID's tree
  pop3lib.py cpu PID                        CPU seconds of PID's tree (live ones + reaped children)
  pop3lib.py sample PID OUT SECS            every 0.2 s until PID ends (at most SECS): the peak of
                                            the tree's summed RSS and the largest VmHWM, to OUT
  pop3lib.py report RAW DOC META            medians of RAW, markdown table into DOC between markers
"""
import functools
import os
import statistics
import socket
import sys
import time

HOST = "bench.example"


def freeport():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


# ---- store --------------------------------------------------------------------------------
WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
         "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
         "exercitation ullamco laboris nisi aliquip ex ea commodo consequat").split()


def text_body(size, seed):
    """LF-ended text lines of ~70 chars, no line starting with '.', exactly `size` octets."""
    out, n, i = [], 0, seed
    while n < size:
        words, ln = [], 0
        while ln < 64:
            w = WORDS[(i * 7 + len(words) * 13) % len(WORDS)]
            i += 1
            words.append(w)
            ln += len(w) + 1
        line = " ".join(words)
        if len(words) % 3 == 0:
            line += "."
        line += "\n"
        out.append(line)
        n += len(line)
    body = "".join(out)[:size]
    if not body.endswith("\n"):
        body = body[:-1] + "\n"
    return body


def b64_body(size, seed):
    """An attachment-like body: 76-char base64 lines (LF), exactly `size` octets."""
    import base64
    import random
    rnd = random.Random(seed)
    raw = base64.b64encode(rnd.randbytes(size)).decode()
    lines, n = [], 0
    for p in range(0, len(raw), 76):
        line = raw[p:p + 76] + "\n"
        lines.append(line)
        n += len(line)
        if n >= size:
            break
    body = "".join(lines)[:size]
    if not body.endswith("\n"):
        body = body[:-1] + "\n"
    return body


@functools.lru_cache(maxsize=64)
def message(total, seq, kind):
    """A message of exactly `total` octets as stored (LF line ends)."""
    hdr = (f"Return-Path: <sender@example.org>\n"
           f"From: Sender <sender@example.org>\n"
           f"To: Bench <bench@example.org>\n"
           f"Subject: benchmark message {seq}\n"
           f"Date: Tue, 25 Nov 2025 10:00:00 +0000\n"
           f"Message-ID: <{seq}.bench@example.org>\n"
           f"MIME-Version: 1.0\n"
           f"Content-Type: text/plain; charset=us-ascii\n\n")
    size = total - len(hdr)
    body = text_body(size, seq) if kind == "text" else b64_body(size, seq)
    data = (hdr + body).encode()
    assert len(data) == total, (len(data), total)
    return data


def mailbox(root, name, count, size, kind, uid_gid=None):
    box = os.path.join(root, name)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(box, sub), exist_ok=True)
    base = 1764064800
    for q in range(1, count + 1):
        data = message(size, q, kind)
        wire = len(data) + data.count(b"\n")
        fname = f"{base + q}.M{q:06d}P4242Q{q}.{HOST},S={len(data)},W={wire}"
        with open(os.path.join(box, "new", fname), "wb") as f:
            f.write(data)


def gen(store, kind, nusers):
    """kind tput: big (1000 x 4 KiB), huge (100 x 1 MiB), u1..u20; kind idle: u1..uNUSERS."""
    nusers = int(nusers)
    os.makedirs(store, exist_ok=True)
    if kind == "tput":
        mailbox(store, "big", 1000, 4096, "text")          # (1) RETR 1000 x 4 KiB
        mailbox(store, "huge", 100, 1024 * 1024, "b64")    # (2) RETR 100 x 1 MiB
        nusers = min(nusers, 20)                            # (3) 20 parallel sessions
    for u in range(1, nusers + 1):                          # (3), (5) idle sessions
        mailbox(store, f"u{u}", 10, 4096, "text")


def users(users_file, nusers):
    with open(users_file, "w") as f:
        for name in ["big", "huge"] + [f"u{u}" for u in range(1, int(nusers) + 1)]:
            f.write(f"{name}:{{PLAIN}}pw\n")


# ---- processes ----------------------------------------------------------------------------
def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rfind(")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append(int(d))
    return kids


def tree(pid):
    kids = children_map()
    out, todo = [], [int(pid)]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mem(pid):
    pids = tree(pid)
    rss = sum(status_kib(p, "VmRSS") for p in pids)
    pss = sum(pss_kib(p) for p in pids)
    hwm = max([status_kib(p, "VmHWM") for p in pids] or [0])
    print(rss, pss, hwm, len(pids))


def cpu(pid):
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for i, p in enumerate(tree(pid)):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        fields = s[s.rfind(")") + 2:].split()
        # utime stime cutime cstime: fields 14-17 of stat(5), here 11..14 (0-based, after comm)
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    print(f"{total / tck:.2f}")


def sample(pid, out, secs):
    """Peaks while PID lives: the tree's summed VmRSS, the largest single VmHWM, and the
    summed Pss (only while the tree has at most 50 processes: smaps_rollup is costly)."""
    pid, end = int(pid), time.monotonic() + float(secs)
    peak_sum, peak_one, peak_n, peak_pss = 0, 0, 0, 0
    while time.monotonic() < end and os.path.exists(f"/proc/{pid}"):
        pids = tree(pid)
        rss = [status_kib(p, "VmRSS") for p in pids]
        hwm = [status_kib(p, "VmHWM") for p in pids]
        if sum(rss) > peak_sum:
            peak_sum, peak_n = sum(rss), len(pids)
        peak_one = max([peak_one] + hwm)
        if len(pids) <= 50:
            peak_pss = max(peak_pss, sum(pss_kib(p) for p in pids))
        with open(out + ".tmp", "w") as f:
            f.write(f"{peak_sum} {peak_one} {peak_n} {peak_pss}\n")
        os.replace(out + ".tmp", out)
        time.sleep(0.2)


# ---- report -------------------------------------------------------------------------------
FIGS = [
    # key, title, unit, higher is better
    ("retr4k", "(1) RETR 1000 × 4 KiB, one session, pipelined batches of 50", "msg/s", True),
    ("retr1m", "(2) RETR 100 × 1 MiB, one session, pipelined batches of 50", "MB/s", True),
    ("sessions", "(3) USER/PASS/STAT/QUIT sessions, 20 parallel clients (20 users)", "sessions/s", True),
    ("peak_rss", "(4) peak RSS during (1)–(3)", "KiB", False),
    ("peak_rss_idle", "(4) peak RSS with the idle sessions of (5) open", "KiB", False),
    ("idle_pss", "(5) idle authenticated session: Pss (after − before) / {n} sessions", "KiB", False),
    ("idle_rss", "(5) idle authenticated session: RSS (after − before) / {n} sessions", "KiB", False),
]


def fmt(v):
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:,.1f}"


def report(raw, doc, meta):
    """RAW lines: `FIG SERVER RUN VALUE [key=val ...]` (SERVER: mailnet | dovecot | loopback)."""
    vals, extra, by_run = {}, {}, {}
    with open(raw) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 4:
                continue
            fig, srv, run, v = parts[:4]
            vals.setdefault((fig, srv), []).append(float(v))
            by_run.setdefault((fig, srv, run), []).append(float(v))
            for kv in parts[4:]:
                k, _, x = kv.partition("=")
                try:
                    extra.setdefault((fig, srv, k), []).append(float(x))
                except ValueError:
                    pass
    med = {k: statistics.median(v) for k, v in vals.items()}
    emed = {k: statistics.median(v) for k, v in extra.items()}

    def pct(x):
        return f"{x * 100:.0f}%"

    def note(key, srv):
        """Whose CPU was the limit, or how a memory figure was taken."""
        if key in ("retr4k", "retr1m"):
            c = "cpu_" + key
            s, cl, v = emed.get((c, srv, "server_cpu")), emed.get((c, srv, "client_cpu")), med.get((c, srv))
            if s is None:
                return ""
            passes = "20-pass" if key == "retr4k" else "5-pass"
            return (f"server {pct(s)}, client {pct(cl)} of a core, over a {passes} session that ran at "
                    f"{fmt(v)} {'msg/s' if key == 'retr4k' else 'MB/s'}")
        if key == "sessions":
            s, cl = emed.get((key, srv, "server_cpu")), emed.get((key, srv, "client_cpu"))
            return f"server {pct(s)}, client {pct(cl)} of a core" if s is not None else ""
        if key in ("peak_rss", "peak_rss_idle"):
            if srv == "mailnet":
                return "VmHWM of its one process"
            p, h, n = (emed.get((key, srv, k)) for k in ("pss", "largest_process_hwm", "processes"))
            if n is None:
                return ""
            return (f"peak of the summed RSS of its {n:.0f} processes (shared pages counted in each), "
                    f"sampled every 0.2 s; summed Pss {fmt(p)} KiB; largest single VmHWM {fmt(h)} KiB")
        if key in ("idle_pss",):
            a0, a1 = emed.get((key, srv, "processes_before")), emed.get((key, srv, "processes_after"))
            if a0 is None:
                return ""
            return f"{a0:.0f} → {a1:.0f} processes" if srv == "dovecot" else "one process"
        return ""

    rows = []
    for key, title, unit, higher in FIGS:
        m, d = med.get((key, "mailnet")), med.get((key, "dovecot"))
        if m is None and d is None:
            continue
        ratio = "—"
        if m and d:
            r = m / d if higher else d / m
            ratio = f"{r:.2f}×" if higher else f"{r:.1f}× less"
        runs = lambda s: ", ".join(fmt(x) for x in vals.get((key, s), []))
        notes = []
        for srv, name in (("mailnet", "mailnet"), ("dovecot", "Dovecot")):
            n = note(key, srv)
            if n:
                notes.append(f"{name}: {n}")
        n = emed.get(("idle_pss", "mailnet", "sessions")) or emed.get(("idle_pss", "dovecot", "sessions"))
        title = title.replace("{n}", f"{n:.0f}" if n else "?")
        rows.append(f"| {title} | {unit} | {fmt(m)} ({runs('mailnet')}) | {fmt(d)} ({runs('dovecot')}) | {ratio} | "
                    f"{'; '.join(notes)} |")
    lo = med.get(("loopback", "loopback"))
    lines = [
        "| figure | unit | mailnet pop3d: median (runs) | Dovecot: median (runs) | mailnet vs Dovecot | whose CPU / how measured |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    m1 = med.get(("retr1m", "mailnet"))
    d1 = med.get(("retr1m", "dovecot"))
    tail = []
    if lo:
        tail.append(f"Loopback (C++ sender and receiver processes, one TCP connection, 1 GiB): "
                    f"median **{fmt(lo)} MB/s** ({', '.join(fmt(x) for x in vals[('loopback', 'loopback')])}); "
                    f"receiver at {emed.get(('loopback', 'loopback', 'receiver_cpu'), 0) * 100:.0f}% of a core.")
        if m1:
            tail.append(f"RETR of 1 MiB messages as a fraction of the runs' median loopback: mailnet "
                        f"{m1 / lo * 100:.0f}%" + (f", Dovecot {d1 / lo * 100:.0f}%." if d1 else "."))
    # Each run's mailnet 1 MiB RETR against the loopback measured right before and after it.
    paired = []
    for (fig, srv, run), v in sorted(by_run.items()):
        if fig != "retr1m" or srv != "mailnet":
            continue
        pair = by_run.get(("lopair", "loopback", run))
        if pair:
            paired.append((v[0] / statistics.mean(pair), v[0], pair))
    frac = statistics.median(p[0] for p in paired) if paired else None
    if paired:
        tail.append("Paired (loopback before and after mailnet's 1 MiB RETR in the same run, 512 MiB each): "
                    + "; ".join(f"{fmt(v)} MB/s against {' / '.join(fmt(x) for x in pair)} = {f * 100:.0f}%"
                                for f, v, pair in paired)
                    + f"; median **{frac * 100:.0f}%**.")
    targets = []
    def tgt(label, okv):
        targets.append(f"| {label} | {'met' if okv else '**not met**'} |")
    for key, label in (("retr4k", "RETR 4 KiB ≥ 1.5× Dovecot"), ("retr1m", "RETR 1 MiB ≥ 1.5× Dovecot"),
                       ("sessions", "sessions/s ≥ 1.5× Dovecot")):
        m, d = med.get((key, "mailnet")), med.get((key, "dovecot"))
        if m and d:
            tgt(label + f" (is {m / d:.2f}×)", m >= 1.5 * d)
    if frac is not None:
        tgt(f"RETR 1 MiB within 50% of loopback (paired median {frac * 100:.0f}%)", frac >= 0.5)
    elif m1 and lo:
        tgt(f"RETR 1 MiB within 50% of loopback (is {m1 / lo * 100:.0f}%)", m1 >= 0.5 * lo)
    ip = med.get(("idle_pss", "mailnet"))
    if ip is not None:
        tgt(f"idle session < 32 KiB (Pss {fmt(ip)} KiB, RSS {fmt(med.get(('idle_rss', 'mailnet')))} KiB)", ip < 32)
    block = "\n".join([
        "<!-- bench:pop3:begin (written by bench/run; edits here are overwritten) -->",
        meta.replace("\\n", "\n"),
        "",
        *lines,
        "",
        *tail,
        "",
        "| target | result |",
        "|---|---|",
        *targets,
        "<!-- bench:pop3:end -->",
    ])
    text = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n\n"
    b = text.find("<!-- bench:pop3:begin")
    e = text.find("<!-- bench:pop3:end -->")
    if b >= 0 and e > b:
        text = text[:b] + block + text[e + len("<!-- bench:pop3:end -->"):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(doc + ".tmp", "w") as f:
        f.write(text)
    os.replace(doc + ".tmp", doc)
    print(block)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"freeport": freeport, "gen": gen, "users": users, "mem": mem, "cpu": cpu, "sample": sample, "report": report}[cmd](*args)
