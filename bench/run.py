#!/usr/bin/env python3
"""Blit's benchmark: Blit and its peers side by side on the same data, alternating
(A B C A B C ...), with per-tool median wall time, CPU time and peak RSS, and Blit's ratio to the
best peer. The table goes into bench/RESULTS.md between its markers; the rest of the file is kept.

Hygiene for these machines (see the project's benchmark notes): a destination is never deleted
before a timed run (old ones are renamed into a trash folder, emptied only after the batch);
before every run the source is read into the page cache, fresh memory is pre-faulted and dirty
pages are synced.

Usage: bench/run.py [--rounds N] [--only W1,W2] [--data DIR] [--out FILE] [--no-install]
Workloads: copy-1g copy-20k copy-20k-tmpfs noop-50k incr-50k copy-mixed noop-1m copy-1m

Binaries come from $CARGO_TARGET_DIR (else target/). With BLIT_BASELINE=DIR (a folder holding
another build's `blit`, and `blit-daemon` for bench/remote.py), a row "blit (baseline)" runs
that build beside the current one, alternating like every other tool: a change's before/after
table from one session.
"""

import argparse
import datetime
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CARGO_BIN = os.path.expanduser("~/.cargo/bin")
ALL = ["copy-1g", "copy-20k", "copy-20k-tmpfs", "noop-50k", "incr-50k", "copy-mixed", "noop-1m", "copy-1m"]
DEFAULT = ["copy-1g", "copy-20k", "copy-20k-tmpfs", "noop-50k", "incr-50k", "copy-mixed", "noop-1m"]


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), **kw)


def have(tool):
    return shutil.which(tool) is not None or os.path.exists(os.path.join(CARGO_BIN, tool))


def tool_path(tool):
    return shutil.which(tool) or os.path.join(CARGO_BIN, tool)


def install_peers():
    """Finds or installs the peers; a missing one is skipped with a note."""
    apt = [p for p, t in [("rsync", "rsync"), ("rclone", "rclone"), ("time", "/usr/bin/time")] if not have(t)]
    if apt:
        print(f"installing {' '.join(apt)} (apt)")
        sh("apt-get update -qq", check=False)
        sh(["apt-get", "install", "-y", "-qq"] + apt, check=False, stdout=subprocess.DEVNULL)
    for crate in ["xcp", "fcp", "cpz"]:
        if not have(crate):
            print(f"installing {crate} (cargo install; takes a few minutes)")
            r = sh(["cargo", "install", "--quiet", crate], check=False)
            if r.returncode != 0:
                print(f"  note: {crate} could not be installed; skipped")


def version(tool):
    for flag in ["--version", "-V", "version"]:
        try:
            out = subprocess.run([tool_path(tool), flag], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        text = (out.stdout or out.stderr).strip().splitlines()
        # fcp prints its bare version number to stderr and exits 1.
        if text and (out.returncode == 0 or re.fullmatch(r"v?\d+\.\d+[\w.+-]*", text[0])):
            return text[0][:60]
    return "?"


def target_dir():
    """Where cargo puts its builds: $CARGO_TARGET_DIR, else the repository's target/."""
    return os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")


BASELINE = "blit (baseline)"


def baseline(name):
    """Another build's binary `name` from $BLIT_BASELINE, if that is set."""
    d = os.environ.get("BLIT_BASELINE")
    if not d:
        return None
    path = os.path.join(d, name)
    if not os.path.exists(path):
        sys.exit(f"BLIT_BASELINE: {path} does not exist")
    return path


def blit_bin():
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "blit-cli"], cwd=REPO, check=True)
    return os.path.join(target_dir(), "release", "blit")


def noop_floor_bin():
    """bench/noop-floor.c built into target/ (None without a C compiler): the no-op's kernel
    floor, each tree's looks on its own thread, with no tool's overhead."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None
    out = os.path.join(target_dir(), "noop-floor")
    r = subprocess.run([cc, "-O2", "-pthread", "-o", out, os.path.join(HERE, "noop-floor.c")])
    return out if r.returncode == 0 else None


# ---------------------------------------------------------------------------------------------
# Datasets (deterministic, built once and kept between runs)
# ---------------------------------------------------------------------------------------------

def done_marker(root):
    return root + ".complete"


def make_small_tree(root, files, folders, size, seed):
    if os.path.exists(done_marker(root)):
        return
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    rng = random.Random(seed)
    per = files // folders
    for d in range(folders):
        dpath = os.path.join(root, f"d{d:04}")
        os.mkdir(dpath)
        for f in range(per):
            data = rng.getrandbits(64).to_bytes(8, "little") * (size // 8)
            with open(os.path.join(dpath, f"f{f:05}.dat"), "wb") as fh:
                fh.write(data)
    open(done_marker(root), "w").close()


def make_big_file(root, size):
    if os.path.exists(done_marker(root)):
        return
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    rng = random.Random(3)
    with open(os.path.join(root, "big.bin"), "wb") as fh:
        left = size
        while left:
            n = min(left, 8 << 20)
            fh.write(rng.randbytes(n))
            left -= n
    open(done_marker(root), "w").close()


def make_mixed(root):
    """A real tree: copies of system documentation, the Python library and time zones."""
    if os.path.exists(done_marker(root)):
        return
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    for src in ["/usr/share/doc", "/usr/lib/python3", "/usr/share/zoneinfo"]:
        if os.path.isdir(src):
            sh(["cp", "-a", src, os.path.join(root, os.path.basename(src))], check=True)
    open(done_marker(root), "w").close()


def make_empty_files(root, count, per_folder):
    if os.path.exists(done_marker(root)):
        return
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    for d in range(count // per_folder):
        dpath = os.path.join(root, f"d{d:05}")
        os.mkdir(dpath)
        for f in range(per_folder):
            os.close(os.open(os.path.join(dpath, f"e{f:05}"), os.O_CREAT | os.O_WRONLY, 0o644))
    open(done_marker(root), "w").close()


def make_edited(base, edited, seed):
    """`edited` = `base` with 1% of files changed, 1% deleted and 1% added."""
    if os.path.exists(done_marker(edited)):
        return
    shutil.rmtree(edited, ignore_errors=True)
    sh(["cp", "-a", base, edited], check=True)
    files = sorted(
        os.path.join(dp, n) for dp, _, names in os.walk(edited) for n in names
    )
    rng = random.Random(seed)
    rng.shuffle(files)
    k = len(files) // 100
    for p in files[:k]:
        with open(p, "r+b") as fh:
            fh.write(rng.randbytes(64))
    for p in files[k:2 * k]:
        os.unlink(p)
    for i in range(k):
        d = os.path.dirname(files[2 * k + i])
        with open(os.path.join(d, f"added{i:05}.dat"), "wb") as fh:
            fh.write(rng.randbytes(4096))
    open(done_marker(edited), "w").close()


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------

def warm(path):
    """Reads every file so the timed run finds the source in the page cache."""
    for dirpath, _, names in os.walk(path):
        for n in names:
            try:
                with open(os.path.join(dirpath, n), "rb") as fh:
                    while fh.read(1 << 20):
                        pass
            except OSError:
                pass


def drop_big_outputs(base, prefix):
    """Deletes the large-file outputs the tools left under `base` (names starting `prefix`).

    Each 1 GiB output stays in the page cache; with every tool's last one kept, 4-7 GiB of
    them, a run that followed certain others wrote into memory the host had taken back and took
    twice as long (a Blit pull measured 0.75 s with the outputs cleared and 1.4-1.7 s without,
    rsyncd 1.1 s and 1.0-1.4 s). Deleting a few large files costs the inode allocator nothing."""
    if not os.path.isdir(base):
        return
    for name in os.listdir(base):
        if name.startswith(prefix):
            shutil.rmtree(os.path.join(base, name), ignore_errors=True)


def rotated(tools, i):
    """The tools in round `i`: each round starts one further along, so every tool takes every place
    in the order. A large write slows whichever run follows it (the next run pays for memory the
    kernel reclaims and hands back), so a fixed order would charge it to the same tool always."""
    k = i % len(tools)
    return tools[k:] + tools[:k]


def prefault(nbytes):
    """Writes and deletes a tmpfs file, so the copy does not pay for fresh memory."""
    if nbytes <= 0:
        return
    p = "/dev/shm/blit-bench-prefault"
    block = b"\0" * (1 << 20)
    with open(p, "wb") as fh:
        for _ in range(max(1, nbytes >> 20)):
            fh.write(block)
    os.unlink(p)


# Creating one empty file costs ~10-15 µs on this ext4 when its inode allocator is clean; after a
# large delete it skips freed inodes for minutes and the same costs 100-300 µs (BENCH-NOTES,
# trap 1). Above this, a run would time the allocator, not the tools.
PROBE_LIMIT_US = 40.0


def creation_probe(data):
    """µs per empty file created in a fresh folder beside the destinations (then moved to trash,
    which is emptied after the batch)."""
    d = os.path.join(data, "dst", f".probe-{time.time_ns()}")
    os.makedirs(d)
    t0 = time.perf_counter()
    for i in range(1000):
        os.close(os.open(os.path.join(d, f"p{i}"), os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644))
    us = (time.perf_counter() - t0) / 1000 * 1e6
    os.rename(d, os.path.join(data, "trash", os.path.basename(d)))
    return us


def wait_for_clean_allocator(data, limit_s=900):
    """Waits (up to `limit_s`) until creating files costs what it does on a clean filesystem;
    returns the last probe, in µs per file."""
    start = time.time()
    while True:
        us = creation_probe(data)
        if us <= PROBE_LIMIT_US:
            print(f"file-creation probe: {us:.0f} µs per file (limit {PROBE_LIMIT_US:.0f})")
            return us
        waited = time.time() - start
        if waited >= limit_s:
            print(f"file-creation probe: still {us:.0f} µs per file after {waited:.0f} s of waiting;"
                  " timing anyway (the figures below include the allocator's cost)")
            return us
        print(f"file-creation probe: {us:.0f} µs per file (> {PROBE_LIMIT_US:.0f}): the filesystem"
              " still skips recently freed inodes; waiting 30 s")
        time.sleep(30)


def timed(argv):
    """Runs argv under /usr/bin/time; returns (wall s, cpu s, peak RSS MiB, exit code)."""
    out = "/tmp/blit-bench-time.txt"
    t0 = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%e %U %S %M", "-o", out] + argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wall = time.perf_counter() - t0
    with open(out) as fh:
        last = fh.read().strip().splitlines()[-1].split()
    cpu = float(last[1]) + float(last[2])
    rss = int(last[3]) / 1024
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[:300]
        print(f"   ! {' '.join(argv)} exited {proc.returncode}: {err}", file=sys.stderr)
    return wall, cpu, rss, proc.returncode


def copy_tools(blit):
    """Initial-copy commands: name -> argv(src, dst). DST never exists before the run."""
    t = [("blit", lambda s, d: [blit, "copy", "-q", "--no-progress", s, d])]
    old = baseline("blit")
    if old:
        t.append((BASELINE, lambda s, d: [old, "copy", "-q", "--no-progress", s, d]))
    t.append(("cp -a", lambda s, d: ["cp", "-a", s, d]))
    if have("rsync"):
        t.append(("rsync -a", lambda s, d: ["rsync", "-a", s + "/", d + "/"]))
    if have("xcp"):
        t.append(("xcp", lambda s, d: [tool_path("xcp"), "-r", s, d]))
    if have("fcp"):
        t.append(("fcp", lambda s, d: [tool_path("fcp"), s, d]))
    if have("rclone"):
        t.append(("rclone copy", lambda s, d: ["rclone", "copy", "--links", s, d]))
    if have("cpz"):
        # The fastest published small-file copier; keeps no times or owners: a floor, not a peer.
        t.append(("cpz (floor)", lambda s, d: [tool_path("cpz"), s, d]))
    return t


# Pairs that do the same work (see `mirror_tools`).
DUTY_PAIRS = [("blit", "rsync -aX --delete (duty of blit)"),
              ("blit --no-xattrs (duty of rsync -a)", "rsync -a --delete")]


FLOOR_XA = "kernel floor of blit's duty (lstat + xattr probe, 2 threads)"
FLOOR_LS = "kernel floor of rsync -a's duty (lstat, 2 threads)"


# How close each duty comes to what the kernel alone needs, and how low the kernel alone could
# take the ratio the target names.
FLOOR_PAIRS = [("blit", FLOOR_XA), ("blit --no-xattrs (duty of rsync -a)", FLOOR_LS),
               (FLOOR_XA, "rsync -a --delete")]


def mirror_tools(blit, duty=False, floor=False):
    """`duty`: also the same-duty pairs, outside the ratio against the best peer. Blit keeps
    xattrs by default and `rsync -a` does not; `blit --no-xattrs` does what `rsync -a` does, and
    `rsync -aX` what Blit does."""
    t = [("blit", lambda s, d: [blit, "mirror", "-q", "--no-progress", s, d])]
    old = baseline("blit")
    if old:
        t.append((BASELINE, lambda s, d: [old, "mirror", "-q", "--no-progress", s, d]))
    if duty:
        t.append(("blit --no-xattrs (duty of rsync -a)",
                  lambda s, d: [blit, "mirror", "-q", "--no-progress", "--no-xattrs", s, d]))
    if have("rsync"):
        t.append(("rsync -a --delete", lambda s, d: ["rsync", "-a", "--delete", s + "/", d + "/"]))
        if duty:
            t.append(("rsync -aX --delete (duty of blit)",
                      lambda s, d: ["rsync", "-aX", "--delete", s + "/", d + "/"]))
    if have("rclone"):
        t.append(("rclone sync", lambda s, d: ["rclone", "sync", "--links", s, d]))
    floor = noop_floor_bin() if floor else None
    if floor:
        t.append((FLOOR_XA, lambda s, d: [floor, "xattrs", s, d]))
        t.append((FLOOR_LS, lambda s, d: [floor, "lstat", s, d]))
    return t


class Bench:
    def chosen(self, tools):
        """With --only-blit, this build and the baseline alone."""
        if not self.args.only_blit:
            return tools
        return [(n, c) for n, c in tools if n in ("blit", BASELINE)]

    def __init__(self, args):
        self.args = args
        self.data = args.data
        self.trash = os.path.join(self.data, "trash")
        os.makedirs(self.trash, exist_ok=True)
        self.blit = blit_bin()
        self.rows = []
        self.other_trash = set()
        self.probes = []

    def check_allocator(self, label):
        """Before a workload that creates many files: probe (and wait for) a clean allocator."""
        if self.args.no_wait:
            us = creation_probe(self.data)
            print(f"file-creation probe: {us:.0f} µs per file (not waiting: --no-wait)")
        else:
            us = wait_for_clean_allocator(self.data)
        self.probes.append((label, us))

    def aside(self, path):
        """Moves an old destination out of the way without deleting it (see the hygiene note)."""
        if not os.path.lexists(path):
            return
        name = f"{os.path.basename(path)}-{time.time_ns()}"
        try:
            os.rename(path, os.path.join(self.trash, name))
        except OSError:
            # Another filesystem (tmpfs): a trash folder beside it, emptied with the rest.
            local = os.path.join(os.path.dirname(path), ".trash")
            os.makedirs(local, exist_ok=True)
            self.other_trash.add(local)
            os.rename(path, os.path.join(local, name))

    def prepare(self, src, nbytes, extra_warm=None):
        # `sync` first: after a large write it takes seconds, and this kernel hands free memory
        # back to the host once it has stayed free for about 2 s (free page reporting), which
        # undid a pre-fault made before it. Pre-faulting last, right before the run, keeps it.
        os.sync()
        warm(src)
        if extra_warm:
            warm(extra_warm)
        prefault(nbytes)

    def initial_copy(self, label, src, nbytes, dst_base, rounds, few_files=False):
        """`few_files`: the destination holds a handful of big files, so deleting the previous one
        costs no inode-allocator slowdown, and keeping every copy would fill the disk (a 1 GiB
        workload x 7 tools x 5 rounds is 35 GiB)."""
        tools = self.chosen(copy_tools(self.blit))
        results = {name: [] for name, _ in tools}
        os.makedirs(dst_base, exist_ok=True)
        if not few_files and not dst_base.startswith("/dev/shm"):
            self.check_allocator(label)
        for i in range(rounds):
            for name, cmd in rotated(tools, i):
                dst = os.path.join(dst_base, "copy-" + name.split()[0])
                if few_files:
                    # Every tool's last copy goes, not only this one's: copies kept in the page
                    # cache from the other tools' runs left less free memory for some runs than
                    # for others, and which ones depended on the order (see drop_big_outputs).
                    drop_big_outputs(dst_base, "copy-")
                self.aside(dst)
                self.prepare(src, nbytes)
                results[name].append(timed(cmd(src, dst)))
        for name, _ in tools:
            self.aside(os.path.join(dst_base, "copy-" + name.split()[0]))
        self.record(label, results)

    def noop_mirror(self, label, src, rounds, duty=False):
        tools = self.chosen(mirror_tools(self.blit, duty, floor=duty))
        dst = os.path.join(self.data, "dst", os.path.basename(src) + "-replica")
        if not os.path.exists(dst):
            sh([self.blit, "mirror", "-q", "--no-progress", src, dst], check=True)
        results = {name: [] for name, _ in tools}
        for i in range(rounds):
            for name, cmd in rotated(tools, i):
                # The floors run last in each round, on trees the tools before them just walked:
                # warm already, and the bench stays under its 15 minutes.
                if not name.startswith("kernel floor"):
                    self.prepare(src, 0, extra_warm=dst)
                results[name].append(timed(cmd(src, dst)))
        self.record(label, results)

    def incremental(self, label, base, edited, rounds):
        """Each run: a fresh replica of `base` (made untimed), then a timed mirror of `edited`."""
        tools = self.chosen(mirror_tools(self.blit, duty=True))
        results = {name: [] for name, _ in tools}
        dst = os.path.join(self.data, "dst", "incr")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        self.check_allocator(label)
        for i in range(rounds):
            for name, cmd in rotated(tools, i):
                self.aside(dst)
                sh(["cp", "-a", base, dst], check=True)
                self.prepare(edited, 0, extra_warm=dst)
                results[name].append(timed(cmd(edited, dst)))
        self.aside(dst)
        self.record(label, results)

    def record(self, label, results):
        print(f"\n## {label}")
        med = {}
        for name, runs in results.items():
            ok = [r for r in runs if r[3] == 0]
            if not ok:
                print(f"  {name:<20} failed")
                continue
            walls = [r[0] for r in ok]
            med[name] = (
                statistics.median(walls),
                min(walls),
                statistics.median(r[1] for r in ok),
                max(r[2] for r in ok),
                len(ok),
            )
        peers = {k: v for k, v in med.items()
                 if not k.startswith("blit") and "floor" not in k and "duty" not in k}
        best = min(peers.items(), key=lambda kv: kv[1][0]) if peers else None
        for name, (w, mn, cpu, rss, n) in sorted(med.items(), key=lambda kv: kv[1][0]):
            print(f"  {name:<20} median {w:7.3f} s  min {mn:7.3f} s  cpu {cpu:6.2f} s  rss {rss:7.1f} MiB  ({n} runs)")
        ratio = None
        if "blit" in med and best:
            ratio = med["blit"][0] / best[1][0]
            rss_ratio = med["blit"][3] / best[1][3]
            print(f"  blit / best peer ({best[0]}): {ratio:.2f} (peak RSS ratio {rss_ratio:.2f})")
        for a, b in DUTY_PAIRS:
            if a in med and b in med:
                print(f"  same duty: {a} / {b}: {med[a][0] / med[b][0]:.2f}")
        if "blit" in med and BASELINE in med:
            print(f"  blit / {BASELINE}: {med['blit'][0] / med[BASELINE][0]:.2f}")
        floor = [(k, v) for k, v in med.items() if "floor" in k and "kernel" not in k]
        for k, v in floor:
            if "blit" in med:
                print(f"  blit / {k}: {med['blit'][0] / v[0]:.2f}")
        for a, b in FLOOR_PAIRS:
            if a in med and b in med:
                print(f"  {a} / {b}: {med[a][0] / med[b][0]:.2f}")
        self.rows.append((label, med, best, ratio))

    def cleanup(self):
        for t in self.other_trash:
            shutil.rmtree(t, ignore_errors=True)
        shutil.rmtree(self.trash, ignore_errors=True)
        os.makedirs(self.trash, exist_ok=True)

    def header(self):
        tools = ["cp", "rsync", "xcp", "fcp", "rclone", "cpz"]
        versions = ", ".join(f"{t} {version(t)}" for t in tools if have(t))
        return [
            "## Latest script run",
            "",
            f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}  ",
            f"Machine: {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}  ",
            f"Blit: {version(self.blit)}; peers: {versions}  ",
            f"Data: {self.data} (ext4 unless noted); {self.args.rounds} rounds, alternating; "
            "wall-time medians; `cpz` keeps no times or owners and is a floor, not a peer.  ",
        ] + [f"File-creation probe before \"{label}\": {us:.0f} µs per empty file "
             f"(the bench waits while above {PROBE_LIMIT_US:.0f}).  " for label, us in self.probes]

    def ratio_rows(self, label, med, best, ratio):
        """The bold rows under a workload's tools."""
        rows = []
        if ratio is not None:
            rows.append(f"| {label} | **blit / {best[0]}** | **{ratio:.2f}** | | | |")
        if "blit" in med and BASELINE in med:
            rows.append(f"| {label} | **blit / {BASELINE}** | **{med['blit'][0] / med[BASELINE][0]:.2f}** | | | |")
        for a, b in DUTY_PAIRS:
            if a in med and b in med:
                rows.append(f"| {label} | same duty: {a} / {b} | {med[a][0] / med[b][0]:.2f} | | | |")
        for a, b in FLOOR_PAIRS:
            if a in med and b in med:
                rows.append(f"| {label} | floor: {a} / {b} | {med[a][0] / med[b][0]:.2f} | | | |")
        return rows

    def write(self, out):
        lines = self.header() + [
            "",
            "| workload | tool | median s | min s | cpu s | peak RSS MiB |",
            "|---|---|---|---|---|---|",
        ]
        for label, med, best, ratio in self.rows:
            for name, (w, mn, cpu, rss, _) in sorted(med.items(), key=lambda kv: kv[1][0]):
                lines.append(f"| {label} | {name} | {w:.3f} | {mn:.3f} | {cpu:.2f} | {rss:.1f} |")
            lines += self.ratio_rows(label, med, best, ratio)
        write_block(out, lines)
        print(f"\nwrote {out}")


BEGIN = "<!-- bench/run.py writes the latest run from here -->"
END = "<!-- to here; the rest of this file is kept as it is -->"


def write_block(out, lines):
    """Puts this run's table between the markers of `out`, keeping the rest of the file: the
    results file also holds each session's written account, which a run must not wipe."""
    block = BEGIN + "\n" + "\n".join(lines) + "\n" + END
    try:
        with open(out) as fh:
            text = fh.read()
    except FileNotFoundError:
        text = "# Benchmark results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        # The first time: right under the title.
        first, _, rest = text.partition("\n")
        text = first + "\n\n" + block + "\n" + rest
    with open(out, "w") as fh:
        fh.write(text)


def main():
    sys.stdout.reconfigure(line_buffering=True)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default=",".join(DEFAULT), help="comma-separated; all: " + ",".join(ALL))
    ap.add_argument("--data", default="/var/tmp/blit-bench")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument("--only-blit", action="store_true",
                    help="run only this build's blit and $BLIT_BASELINE's (a change's before/after); no peers")
    ap.add_argument("--no-wait", action="store_true",
                    help="do not wait for the filesystem's inode allocator to recover from deletes")
    args = ap.parse_args()
    only = args.only.split(",")
    os.makedirs(args.data, exist_ok=True)
    if not args.no_install and not args.only_blit:
        install_peers()
    b = Bench(args)
    d = args.data
    r = args.rounds
    big_r = max(1, (r + 1) // 2)
    if "copy-1g" in only:
        src = os.path.join(d, "src-1g")
        make_big_file(src, 1 << 30)
        b.initial_copy("1 GiB file, initial copy", src, 1 << 30, os.path.join(d, "dst"), r, few_files=True)
    if "copy-20k" in only or "copy-20k-tmpfs" in only:
        src = os.path.join(d, "src-20k")
        make_small_tree(src, 20000, 200, 4096, 1)
        if "copy-20k" in only:
            b.initial_copy("20,000 x 4 KiB, initial copy", src, 20000 * 4096, os.path.join(d, "dst"), r)
        if "copy-20k-tmpfs" in only:
            b.initial_copy("20,000 x 4 KiB, initial copy into tmpfs", src, 20000 * 4096, "/dev/shm/blit-bench-dst", r)
            shutil.rmtree("/dev/shm/blit-bench-dst", ignore_errors=True)
    if "noop-50k" in only or "incr-50k" in only:
        src = os.path.join(d, "src-50k")
        make_small_tree(src, 50000, 500, 4096, 2)
        if "noop-50k" in only:
            b.noop_mirror("50,000 files, no-op mirror", src, r, duty=True)
        if "incr-50k" in only:
            edited = os.path.join(d, "src-50k-edited")
            make_edited(src, edited, 5)
            b.incremental("50,000 files, incremental mirror (1% edited, 1% deleted, 1% added)", src, edited, r)
    if "copy-mixed" in only:
        src = os.path.join(d, "src-mixed")
        make_mixed(src)
        size = sum(os.lstat(os.path.join(dp, n)).st_size for dp, _, names in os.walk(src) for n in names)
        b.initial_copy("mixed real tree (doc, python3, zoneinfo), initial copy", src, size, os.path.join(d, "dst"), r)
    if "noop-1m" in only or "copy-1m" in only:
        src = os.path.join(d, "src-1m")
        make_empty_files(src, 1_000_000, 1000)
        if "noop-1m" in only:
            b.noop_mirror("1,000,000 empty files, no-op mirror", src, big_r)
        if "copy-1m" in only:
            b.initial_copy("1,000,000 empty files, initial copy", src, 0, os.path.join(d, "dst"), big_r)
    b.write(args.out)
    b.cleanup()


if __name__ == "__main__":
    main()
