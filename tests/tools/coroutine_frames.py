#!/usr/bin/env python3
"""coroutine_frames.py --probe PROBE BINARY...: checks the coroutine frames GCC laid out in
BINARY... (their DWARF: `readelf --debug-dump=info`) against GCC PR106188.

GCC 12 puts the temporary of a co_await in an `if`/`while`/`switch` condition at the start of
the coroutine's frame when that condition comes before any other local, in front of the
frame's resume pointer; std::coroutine_handle::from_promise (which Asio resumes through) then
points past the real frame, and a resume runs on garbage (a SIGILL or SIGSEGV, or worse). A
frame type (`NAME.Frame`) whose first member is not `_Coro_resume_fn` is such a frame.

PROBE (tests/tools/coro_frame_probe.cpp) is built with the same compiler and holds that pattern
once: it exits 3 when the compiler lays it out wrongly. The audit must then flag its frame,
and must not when it exits 0, so a pass here means the audit sees the bug where it is.
Exit 0: no frame of BINARY... is wrong; 1: some are (listed), or the audit failed its probe;
77: no coroutine frame in BINARY... (no debug information): nothing could be checked.
"""
import re
import subprocess
import sys

ENTRY = re.compile(r"^\s*<(\d+)><[0-9a-f]+>: Abbrev Number: \d+ \((\w+)\)")
OFFSET = re.compile(r"DW_AT_data_member_location\s*:\s*(?:\([^)]*\)\s*)?(\S+)")


def frames(path):
    """{frame type name: name of its member at offset 0 (None: none found)} of `path`."""
    out = {}
    proc = subprocess.Popen(["readelf", "--wide", "--debug-dump=info", path], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, errors="replace")
    frame = None         # the *.Frame type being read
    frame_depth = None
    struct_depth = None  # a structure type whose name is not known yet
    member = None        # the name of the member being read, at frame_depth + 1
    for line in proc.stdout:
        if "Abbrev Number" in line:
            m = ENTRY.match(line)
            if not m:
                continue
            depth, tag = int(m.group(1)), m.group(2)
            if frame is not None and depth <= frame_depth:
                frame = None
            struct_depth = depth if tag == "DW_TAG_structure_type" else None
            member = "" if frame is not None and depth == frame_depth + 1 and tag == "DW_TAG_member" else None
            continue
        if "DW_AT_name" in line:
            name = line.rsplit(": ", 1)[-1].strip()  # after the form: "(strp) (offset: 0x485): NAME"
            if struct_depth is not None:
                if name.endswith(".Frame"):
                    frame, frame_depth = name, struct_depth
                    out.setdefault(frame, None)
                struct_depth = None
            elif member == "":
                member = name
            continue
        if member and "DW_AT_data_member_location" in line:
            m = OFFSET.search(line)
            if m and int(m.group(1), 0) == 0 and out.get(frame) is None:
                out[frame] = member
    proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f"coroutine_frames.py: readelf failed on {path}")
    return out


def wrong(found):
    return sorted(f for f, first in found.items() if first is not None and first != "_Coro_resume_fn")


def demangle(frame):
    base = frame[: -len(".Frame")]
    res = subprocess.run(["c++filt", "_" + base.lstrip("_")], capture_output=True, text=True)
    return res.stdout.strip() or base


def main(argv):
    if len(argv) < 4 or argv[1] != "--probe":
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    probe, binaries = argv[2], argv[3:]
    affected = subprocess.run([probe], capture_output=True).returncode == 3
    probe_frames = frames(probe)
    if not probe_frames:
        print("no coroutine frame in the probe's debug information (a build without -g?): nothing checked")
        return 77
    flagged = wrong(probe_frames)
    if affected != bool(flagged):
        print(f"the audit is wrong about its probe: the compiler {'misplaces' if affected else 'lays out'} "
              f"its frame {'wrongly' if affected else 'rightly'}, the audit flagged {flagged or 'nothing'}")
        return 1
    print(f"probe: this compiler {'has' if affected else 'does not have'} GCC PR106188; the audit sees it")
    total, bad = 0, []
    for path in binaries:
        found = frames(path)
        total += len(found)
        bad += [(path, f, found[f]) for f in wrong(found)]
        print(f"{path}: {len(found)} coroutine frame types")
    for path, f, first in bad:
        print(f"WRONG {path}: {demangle(f)}: its frame begins with {first}, not the resume pointer "
              f"(a co_await in a condition before any other local: await into a named local first)")
    if bad:
        return 1
    if total == 0:
        print("no coroutine frame found (no debug information?): nothing checked")
        return 77
    print(f"all {total} coroutine frame types begin with their resume pointer")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
