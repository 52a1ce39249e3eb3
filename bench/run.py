#!/usr/bin/env python3
"""Blit's benchmark: runs Blit and its peers side by side on the same data, alternating
(A B C A B C ...), and prints per tool the median wall time, CPU time and peak RSS, plus Blit's
ratio to the best peer.

Hygiene for these machines (see BENCH-NOTES): destinations are never deleted before a timed run
(they are renamed into a trash folder, emptied after the batch); the source is read into the page
cache, fresh memory is pre-faulted and dirty pages are synced before every run.

Usage: bench/run.py [--rounds N] [--only copy-20k,noop-50k,...] [--data DIR] [--out FILE]
"""

import argparse
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def blit_bin():
    path = os.path.join(REPO, "target", "release", "blit")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "blit-cli"], cwd=REPO, check=True)
    return path


def make_small_tree(root, files, folders, size, seed):
    """Deterministic tree: `files` files of `size` bytes spread over `folders` folders."""
    if os.path.exists(os.path.join(root, ".complete")):
        return
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    state = seed
    per = files // folders
    for d in range(folders):
        dpath = os.path.join(root, f"d{d:04}")
        os.mkdir(dpath)
        for f in range(per):
            state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            block = state.to_bytes(8, "little") * (size // 8)
            with open(os.path.join(dpath, f"f{f:05}.dat"), "wb") as fh:
                fh.write(block)
    open(os.path.join(root, ".complete"), "w").close()


def make_big_file(root, size):
    if os.path.exists(os.path.join(root, ".complete")):
        return
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    with open(os.path.join(root, "big.bin"), "wb") as fh:
        left = size
        while left:
            chunk = os.urandom(min(left, 16 << 20))
            fh.write(chunk)
            left -= len(chunk)
    open(os.path.join(root, ".complete"), "w").close()


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


def prefault(nbytes):
    """Writes and deletes a tmpfs file, so the copy does not pay for fresh memory."""
    if nbytes <= 0:
        return
    p = "/dev/shm/blit-bench-prefault"
    with open(p, "wb") as fh:
        block = b"\0" * (1 << 20)
        for _ in range(max(1, nbytes >> 20)):
            fh.write(block)
    os.unlink(p)


def timed(cmd):
    """Runs cmd; returns (wall seconds, cpu seconds, peak RSS MiB, exit code)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(f"   ! {' '.join(cmd)} exited {code}: {err.strip()[:300]}", file=sys.stderr)
    return wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024, code


def peers(blit, kind):
    """Commands per tool: (name, function(src, dst) -> argv). Missing tools are skipped."""
    have = lambda t: shutil.which(t) is not None
    tools = []
    if kind == "copy":
        tools.append(("blit", lambda s, d: [blit, "copy", "-q", "--no-progress", s, d]))
        if have("cp"):
            tools.append(("cp -a", lambda s, d: ["cp", "-a", s + "/.", d]))
        if have("rsync"):
            tools.append(("rsync -a", lambda s, d: ["rsync", "-a", s + "/", d + "/"]))
        if have("xcp"):
            tools.append(("xcp", lambda s, d: ["xcp", "-r", s, d]))
        if have("fcp"):
            tools.append(("fcp", lambda s, d: ["fcp", s, d]))
        if have("rclone"):
            tools.append(("rclone", lambda s, d: ["rclone", "copy", "--links", s, d]))
        if have("cpz"):
            tools.append(("cpz*", lambda s, d: ["cpz", s, d]))
    else:
        tools.append(("blit", lambda s, d: [blit, "mirror", "-q", "--no-progress", s, d]))
        if have("rsync"):
            tools.append(("rsync -a --delete", lambda s, d: ["rsync", "-a", "--delete", s + "/", d + "/"]))
        if have("rclone"):
            tools.append(("rclone sync", lambda s, d: ["rclone", "sync", "--links", s, d]))
    return tools


class Bench:
    def __init__(self, args):
        self.args = args
        self.data = args.data
        self.trash = os.path.join(self.data, "trash")
        os.makedirs(self.trash, exist_ok=True)
        self.blit = blit_bin()
        self.rows = []

    def fresh_dst(self, name):
        d = os.path.join(self.data, "dst", name)
        if os.path.exists(d):
            os.rename(d, os.path.join(self.trash, f"{name}-{time.time_ns()}"))
        os.makedirs(os.path.dirname(d), exist_ok=True)
        return d

    def prepare(self, src, nbytes):
        warm(src)
        prefault(nbytes)
        os.sync()

    def initial_copy(self, label, src, nbytes):
        tools = peers(self.blit, "copy")
        results = {name: [] for name, _ in tools}
        for r in range(self.args.rounds):
            for name, cmd in tools:
                dst = self.fresh_dst(f"{label}-{name.split()[0]}")
                if name.startswith(("fcp", "cpz", "xcp")):
                    # these copy SRC itself into an existing DST; give them a DST that does not exist
                    pass
                self.prepare(src, nbytes)
                results[name].append(timed(cmd(src, dst)))
        self.record(label, results)

    def noop_mirror(self, label, src, nbytes):
        tools = peers(self.blit, "mirror")
        dst = os.path.join(self.data, "dst", f"{label}-replica")
        if not os.path.exists(dst):
            subprocess.run([self.blit, "mirror", "-q", "--no-progress", src, dst], check=True)
        results = {name: [] for name, _ in tools}
        for r in range(self.args.rounds):
            for name, cmd in tools:
                self.prepare(src, 0)
                warm(dst)
                results[name].append(timed(cmd(src, dst)))
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
            )
        peers_only = {k: v for k, v in med.items() if k != "blit" and not k.endswith("*")}
        best = min(peers_only.items(), key=lambda kv: kv[1][0]) if peers_only else None
        for name, (w, mn, cpu, rss) in sorted(med.items(), key=lambda kv: kv[1][0]):
            print(f"  {name:<20} median {w:7.3f} s  min {mn:7.3f} s  cpu {cpu:6.2f} s  rss {rss:7.1f} MiB")
        if "blit" in med and best:
            ratio = med["blit"][0] / best[1][0]
            print(f"  blit / best peer ({best[0]}): {ratio:.2f}")
        else:
            ratio = None
        floor = {k: v for k, v in med.items() if k.endswith("*")}
        for k, v in floor.items():
            if "blit" in med:
                print(f"  blit / {k} (floor, keeps no metadata): {med['blit'][0] / v[0]:.2f}")
        self.rows.append((label, med, best, ratio))

    def cleanup(self):
        shutil.rmtree(self.trash, ignore_errors=True)
        os.makedirs(self.trash, exist_ok=True)

    def write(self, out):
        lines = [
            f"# Benchmark results\n",
            f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}  ",
            f"Machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}  ",
            f"Data folder: {self.data}; rounds: {self.args.rounds}; medians of wall time\n",
            "| workload | tool | median s | min s | cpu s | peak RSS MiB |",
            "|---|---|---|---|---|---|",
        ]
        for label, med, best, ratio in self.rows:
            for name, (w, mn, cpu, rss) in sorted(med.items(), key=lambda kv: kv[1][0]):
                lines.append(f"| {label} | {name} | {w:.3f} | {mn:.3f} | {cpu:.2f} | {rss:.1f} |")
            if ratio is not None:
                lines.append(f"| {label} | **blit / {best[0]}** | **{ratio:.2f}** | | | |")
        with open(out, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        print(f"\nwrote {out}")


WORKLOADS = ["copy-20k", "noop-50k", "copy-1g"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default=",".join(WORKLOADS))
    ap.add_argument("--data", default="/var/tmp/blit-bench")
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = ap.parse_args()
    os.makedirs(args.data, exist_ok=True)
    b = Bench(args)
    only = args.only.split(",")
    if "copy-20k" in only:
        src = os.path.join(args.data, "src-20k")
        make_small_tree(src, 20000, 200, 4096, 1)
        b.initial_copy("copy-20k (20,000 x 4 KiB, ext4)", src, 20000 * 4096)
    if "noop-50k" in only:
        src = os.path.join(args.data, "src-50k")
        make_small_tree(src, 50000, 500, 4096, 2)
        b.noop_mirror("noop-50k (no-op mirror, 50,000 files)", src, 0)
    if "copy-1g" in only:
        src = os.path.join(args.data, "src-1g")
        make_big_file(src, 1 << 30)
        b.initial_copy("copy-1g (one 1 GiB file)", src, 1 << 30)
    b.write(args.out)
    b.cleanup()


if __name__ == "__main__":
    main()
