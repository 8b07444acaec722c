#!/usr/bin/env python3
"""Helpers of bench/run for the POP3 benchmark (standard library only).

  pop3lib.py freeport                       a free TCP port on 127.0.0.1 (bind port 0)
  pop3lib.py gen STORE tput|idle NUSERS     the Maildirs both servers serve (tput: big, huge, u1..u20)
  pop3lib.py users FILE NUSERS [NAME...]    the passwd-file: big, huge, u1..uN, NAMEs, all {PLAIN}pw
  pop3lib.py genbig STORE NAME COUNT sizes|nosizes
                                            one Maildir of COUNT x 1 KiB messages in cur/, names
                                            with ,S=,W= (sizes) or without (nosizes)
  pop3lib.py status PID KEY...              the /proc/PID/status values of KEYs (KiB), one line
  pop3lib.py procmem PID COMM               VmHWM and VmRSS (KiB) of the largest process named
                                            COMM in PID's tree, and the tree's summed RSS
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


def genbig(store, name, count, kind):
    """COUNT messages of exactly 1024 octets (LF) in NAME/cur/, as a mailbox long in use: names
    <secs>.M<n>P4242Q<n>.<host>[,S=<octets>,W=<wire>]:2, (no flags). Fast: one body text."""
    count = int(count)
    box = os.path.join(store, name)
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(box, sub), exist_ok=True)
    body = text_body(2048, 1)
    base = 1764064800
    cur = os.path.join(box, "cur")
    for q in range(1, count + 1):
        hdr = (f"From: Sender <sender@example.org>\nTo: Bench <bench@example.org>\n"
               f"Subject: old message {q}\nMessage-ID: <{q}.old@example.org>\n\n")
        text = hdr + body[:1024 - len(hdr)]
        if not text.endswith("\n"):
            text = text[:-1] + "\n"
        data = text.encode()
        assert len(data) == 1024
        wire = len(data) + data.count(b"\n")
        sizes = f",S={len(data)},W={wire}" if kind == "sizes" else ""
        fname = f"{base + q}.M{q:06d}P4242Q{q}.{HOST}{sizes}:2,"
        with open(os.path.join(cur, fname), "wb") as f:
            f.write(data)


def users(users_file, nusers, *extra):
    with open(users_file, "w") as f:
        for name in ["big", "huge"] + [f"u{u}" for u in range(1, int(nusers) + 1)] + list(extra):
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


def tree(pid, kids=None):
    kids = children_map() if kids is None else kids
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


def status(pid, *keys):
    print(" ".join(str(status_kib(pid, k)) for k in keys))


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def procmem(pid, name):
    pids = tree(pid)
    best = max(((status_kib(p, "VmHWM"), status_kib(p, "VmRSS")) for p in pids if comm(p) == name),
               default=(0, 0))
    print(best[0], best[1], sum(status_kib(p, "VmRSS") for p in pids))


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
        tgt(f"idle session < 16 KiB (Pss {fmt(ip)} KiB, RSS {fmt(med.get(('idle_rss', 'mailnet')))} KiB)", ip < 16)
    block = "\n".join([
        meta.replace("\\n", "\n"),
        "",
        *lines,
        "",
        *tail,
        "",
        "| target | result |",
        "|---|---|",
        *targets,
    ])
    write_block(doc, "pop3", block)


# ---- report: the parts with their own blocks (big, tls) --------------------------------------
def read_raw(raw, prefixes):
    """vals[(fig, srv)] -> values in run order, by_run[(fig, srv, run)] -> value,
    extra[(fig, srv, key)] -> values; only figures starting with one of PREFIXES."""
    vals, by_run, extra = {}, {}, {}
    with open(raw) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 4 or not parts[0].startswith(prefixes):
                continue
            fig, srv, run, v = parts[:4]
            vals.setdefault((fig, srv), []).append(float(v))
            by_run[(fig, srv, run)] = float(v)
            for kv in parts[4:]:
                k, _, x = kv.partition("=")
                try:
                    extra.setdefault((fig, srv, k), []).append(float(x))
                except ValueError:
                    pass
    return vals, by_run, extra


def write_block(doc, tag, block):
    """Replaces the text between <!-- bench:TAG:begin ... --> and <!-- bench:TAG:end --> in DOC
    (appends the block when the markers are missing); the rest of DOC is left as it is."""
    begin, end = f"<!-- bench:{tag}:begin", f"<!-- bench:{tag}:end -->"
    block = f"{begin} (written by bench/run; edits here are overwritten) -->\n{block}\n{end}"
    text = open(doc).read() if os.path.exists(doc) else "# Benchmarks\n\n"
    b, e = text.find(begin), text.find(end)
    if b >= 0 and e > b:
        text = text[:b] + block + text[e + len(end):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(doc + ".tmp", "w") as f:
        f.write(text)
    os.replace(doc + ".tmp", doc)
    print(block)


def med_of(d, key):
    v = d.get(key)
    return statistics.median(v) if v else None


def runs_of(vals, key, f=None):
    return ", ".join((f or fmt)(x) for x in vals.get(key, []))


def report_big(raw, doc, meta):
    """(6) big mailboxes: RAW lines big_secs:LABEL, big_first:LABEL, big_growth:LABEL, big_peak:LABEL."""
    vals, by_run, extra = read_raw(raw, ("big_",))
    labels = []
    for (fig, _srv) in vals:
        lab = fig.split(":", 1)[1]
        if lab not in labels:
            labels.append(lab)
    def count(lab):
        n = med_of(extra, ("big_secs:" + lab, "mailnet", "msgs")) or med_of(extra, ("big_secs:" + lab, "dovecot", "msgs"))
        return int(n) if n else 0
    labels.sort(key=lambda lab: (lab.startswith("nosize"), count(lab)))
    ms = lambda x: fmt(x * 1000)
    rows, targets = [], []
    for lab in labels:
        n = count(lab)
        names = "names without ,S=/,W=" if lab.startswith("nosize") else "names with ,S=/,W="
        what = f"`{lab}`: {n:,} × 1 KiB, {names}"
        k = "big_secs:" + lab
        m, d = med_of(vals, (k, "mailnet")), med_of(vals, (k, "dovecot"))
        ratio = f"{d / m:.2f}× faster" if m and d and d >= m else (f"{m / d:.2f}× slower" if m and d else "—")
        phases = []
        for srv, name in (("mailnet", "mailnet"), ("dovecot", "Dovecot")):
            ph = [(p, med_of(extra, (k, srv, p + "_secs"))) for p in ("login", "stat", "list", "uidl", "quit")]
            if all(v is not None for _, v in ph):
                phases.append(f"{name}: " + ", ".join(f"{p} {v * 1000:.1f}" for p, v in ph) + " ms")
        rows.append(f"| {what}: USER/PASS + STAT + LIST + UIDL + QUIT, warm | ms | {ms(m) if m else '—'} "
                    f"({runs_of(vals, (k, 'mailnet'), ms)}) | {ms(d) if d else '—'} ({runs_of(vals, (k, 'dovecot'), ms)}) "
                    f"| {ratio} | {'; '.join(phases)} |")
        k = "big_first:" + lab
        m1, d1 = med_of(vals, (k, "mailnet")), med_of(vals, (k, "dovecot"))
        if m1 or d1:
            rows.append(f"| {what}: the first session (warm-up, not in the median; Dovecot builds its index files) "
                        f"| ms | {ms(m1) if m1 else '—'} | {ms(d1) if d1 else '—'} | — | |")
        k = "big_growth:" + lab
        mg, dg = med_of(vals, (k, "mailnet")), med_of(vals, (k, "dovecot"))
        mh, dh = med_of(vals, ("big_peak:" + lab, "mailnet")), med_of(vals, ("big_peak:" + lab, "dovecot"))
        notes = []
        r0 = med_of(extra, (k, "mailnet", "rss0_kib"))
        if r0 is not None:
            mb, mh0 = med_of(extra, (k, "mailnet", "base_kib")), med_of(extra, (k, "mailnet", "hwm_kib"))
            net = (f"; net of the growth over a 10-message session ({fmt(mb)} KiB), as for Dovecot: "
                   f"{fmt((mh0 - r0 - mb) * 1024 / n)}" if mb is not None and mh0 is not None else "")
            notes.append(f"mailnet: (VmHWM after the session − VmRSS before it, HWM reset by clear_refs) / {n:,}; "
                         f"a fresh pop3d per run, {fmt(r0)} KiB RSS before{net}")
        b0 = med_of(extra, (k, "dovecot", "base_hwm_kib"))
        if b0 is not None:
            notes.append(f"Dovecot: (VmHWM of the session's `pop3` process − that of a session on a 10-message "
                         f"mailbox, {fmt(b0)} KiB) / {n:,}, read before QUIT")
        rows.append(f"| {what}: session memory growth per message (an upper bound of the snapshot's) | octets "
                    f"| {fmt(mg)} ({runs_of(vals, (k, 'mailnet'))}) | {fmt(dg)} ({runs_of(vals, (k, 'dovecot'))}) | "
                    f"{(f'{dg / mg:.1f}× less' if mg and dg and dg >= mg else (f'{mg / dg:.1f}× more' if mg and dg else '—'))} "
                    f"| {'; '.join(notes)} |")
        tr = med_of(extra, ("big_growth:" + lab, "dovecot", "tree_rss_kib"))
        pn = ["mailnet: VmHWM of its one process"]
        if dh:
            pn.append("Dovecot: VmHWM of the session's `pop3` process (its `pop3-login`, `auth`, … not included"
                      + (f"; its whole tree's summed RSS then: {fmt(tr)} KiB" if tr else "") + ")")
        rows.append(f"| {what}: peak RSS of the session | KiB | {fmt(mh)} ({runs_of(vals, ('big_peak:' + lab, 'mailnet'))}) "
                    f"| {fmt(dh)} ({runs_of(vals, ('big_peak:' + lab, 'dovecot'))}) | "
                    f"{(f'{dh / mh:.1f}× less' if mh and dh and dh >= mh else (f'{mh / dh:.1f}× more' if mh and dh else '—'))} "
                    f"| {'; '.join(pn)} |")
        def tgt(label, okv):
            targets.append(f"| {label} | {'met' if okv else '**not met**'} |")
        if lab.startswith("nosize"):
            if m is not None:
                targets.append(f"| `{lab}` (no sizes in the names) works: every LIST/UIDL line and the LIST sizes "
                               f"match STAT | met (reported, no target: {ms(m)} ms against Dovecot's {ms(d) if d else '—'} ms) |")
        else:
            if m and d:
                tgt(f"`{lab}` session time ≤ Dovecot's (is {ms(m)} against {ms(d)} ms)", m <= d)
            if mg is not None:
                # NOTE: the growth of the whole session bounds the snapshot's from above (the scan's
                # temporaries are in the peak); the snapshot alone is measured in-process by
                # libmailnet_tests (maildir_store.a_snapshot_of_names_with_s_and_w_stats_no_file).
                tgt(f"`{lab}` session memory growth ≤ 200 octets per message (is {fmt(mg)}; the snapshot "
                    f"alone: see the reading below)", mg <= 200)
            if n >= 100000 and mh is not None:
                tgt(f"`{lab}` peak RSS of the whole session < 64 MiB (is {mh / 1024:.1f} MiB)", mh < 64 * 1024)
    block = "\n".join([
        meta.replace("\\n", "\n"),
        "",
        "| figure | unit | mailnet pop3d: median (runs) | Dovecot: median (runs) | mailnet vs Dovecot | how measured |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "| target | result |",
        "|---|---|",
        *targets,
    ])
    write_block(doc, "pop3-big", block)


def report_tls(raw, doc, meta):
    """(7) RETR over implicit TLS: RAW lines tls_retr4k, tls_retr1m, plain_retr4k, plain_retr1m,
    cpu_tls_retr4k, cpu_tls_retr1m (FIG SERVER RUN VALUE server_cpu= client_cpu=)."""
    vals, by_run, extra = read_raw(raw, ("tls_", "plain_", "cpu_tls_"))
    rows, targets, tail = [], [], []
    figs = [("tls_retr4k", "RETR 1000 × 4 KiB over pop3s, one session, pipelined batches of 50", "msg/s"),
            ("tls_retr1m", "RETR 100 × 1 MiB over pop3s, one session, pipelined batches of 50", "MB/s"),
            ("plain_retr4k", "the same without TLS, same run (as (1))", "msg/s"),
            ("plain_retr1m", "the same without TLS, same run (as (2))", "MB/s")]
    for key, title, unit in figs:
        m, d = med_of(vals, (key, "mailnet")), med_of(vals, (key, "dovecot"))
        if m is None and d is None:
            continue
        notes = []
        for srv, name in (("mailnet", "mailnet"), ("dovecot", "Dovecot")):
            c = "cpu_" + key
            sc, cc, v = med_of(extra, (c, srv, "server_cpu")), med_of(extra, (c, srv, "client_cpu")), med_of(vals, (c, srv))
            if sc is not None:
                passes = "20-pass" if key.endswith("4k") else "5-pass"
                notes.append(f"{name}: server {sc * 100:.0f}%, client {cc * 100:.0f}% of a core over a {passes} "
                             f"session that ran at {fmt(v)} {unit}")
        rows.append(f"| {title} | {unit} | {fmt(m)} ({runs_of(vals, (key, 'mailnet'))}) | {fmt(d)} "
                    f"({runs_of(vals, (key, 'dovecot'))}) | {f'{m / d:.2f}×' if m and d else '—'} | {'; '.join(notes)} |")
        if key.startswith("tls_") and m and d:
            targets.append(f"| {title.split(',')[0]} ≥ 1.5× Dovecot (is {m / d:.2f}×) | {'met' if m >= 1.5 * d else '**not met**'} |")
    # TLS cost per octet: per run, 1000/MBps(TLS) − 1000/MBps(plain) ns per octet, median over the runs.
    for srv, name in (("mailnet", "mailnet pop3d"), ("dovecot", "Dovecot")):
        costs = []
        for (fig, s, run), v in sorted(by_run.items()):
            if fig == "tls_retr1m" and s == srv and ("plain_retr1m", srv, run) in by_run:
                p = by_run[("plain_retr1m", srv, run)]
                costs.append((1000 / v - 1000 / p, 1000 / v, 1000 / p))
        if costs:
            c = statistics.median(x[0] for x in costs)
            tail.append(f"TLS cost per octet, {name} (1 MiB messages; per run: time per octet over pop3s − "
                        f"without, from the pair of sessions of that run): median **{c:.2f} ns/octet** "
                        f"({', '.join(f'{a:.2f} − {b:.2f} = {x:.2f}' for x, a, b in costs)}).")
    block = "\n".join([
        meta.replace("\\n", "\n"),
        "",
        "| figure | unit | mailnet pop3d: median (runs) | Dovecot: median (runs) | mailnet vs Dovecot | whose CPU |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        *tail,
        "",
        "| target | result |",
        "|---|---|",
        *targets,
    ])
    write_block(doc, "pop3-tls", block)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"freeport": freeport, "gen": gen, "genbig": genbig, "status": status, "procmem": procmem,
     "report_big": report_big, "report_tls": report_tls, "users": users, "mem": mem, "cpu": cpu, "sample": sample, "report": report}[cmd](*args)
