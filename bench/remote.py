#!/usr/bin/env python3
"""Blit's remote benchmark, on loopback: blit-daemon against rsyncd (`rsync --daemon` with a
module) and rsync over ssh (an sshd started on 127.0.0.1 for the run), side by side, alternating
rounds, medians, ratios to rsyncd. Same hygiene as bench/run.py (whose helpers it uses).

Workloads: push-1g pull-1g push-10k pull-10k noop-50k (push side, nothing changed). Blit runs
with TLS (its default) and in plain TCP (`--no-tls`, like rsyncd), to show what TLS costs.

Blit's daemon serves its module as rsyncd does here (`uid = root`): sessions as root keeping
owners and everything else, behind a token; pulls take that metadata (`--trust-metadata`), as
rsync run as root does. With BLIT_BASELINE=DIR, another build's `blit` and `blit-daemon` run
beside (see bench/run.py).

Usage: bench/remote.py [--rounds N] [--only W1,W2] [--data DIR] [--out FILE]
"""

import argparse
import datetime
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as common  # noqa: E402

ALL = ["push-1g", "pull-1g", "push-10k", "pull-10k", "noop-50k"]


def need(pkgs):
    missing = [p for p, exe in pkgs if not shutil.which(exe)]
    if missing:
        print(f"installing {' '.join(missing)} (apt)")
        common.sh("apt-get update -qq", check=False)
        common.sh(["apt-get", "install", "-y", "-qq"] + missing, check=False, stdout=subprocess.DEVNULL)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Servers:
    """The three daemons, all serving the same folder as module `m`."""

    def __init__(self, module_dir, work):
        self.module = module_dir
        self.work = work
        self.procs = []
        daemon = os.path.join(common.target_dir(), "release", "blit-daemon")
        # Blit with TLS (a self-signed identity kept in the work folder) and without, its module
        # trusted as rsyncd's is (sessions as root), which needs a token.
        token = os.path.join(work, "token")
        with open(token, "w") as fh:
            fh.write("bench-token\n")
        os.environ["BLIT_TOKEN"] = "bench-token"
        conf = os.path.join(work, "blit-daemon.toml")
        with open(conf, "w") as fh:
            fh.write(f'[[module]]\nname = "m"\npath = "{module_dir}"\nuid = "root"\nkeep = ["all"]\n'
                     f'token_file = "{token}"\n')
        self.blit_tls = self.start_blit(daemon, ["--config", conf, "--tls-dir", os.path.join(work, "tls")])
        self.blit_plain = self.start_blit(daemon, ["--config", conf, "--no-tls"])
        # Another build, when asked for (its own quick form: sessions as root then).
        old = common.baseline("blit-daemon")
        self.baseline_tls = None
        if old:
            self.baseline_tls = self.start_blit(old, ["--module", f"m={module_dir}", "--tls-dir",
                                                      os.path.join(work, "tls-baseline")])
        # rsyncd
        self.rsync_port = free_port()
        conf = os.path.join(work, "rsyncd.conf")
        with open(conf, "w") as fh:
            fh.write(f"use chroot = no\nuid = root\ngid = root\n[m]\npath = {module_dir}\nread only = false\n")
        self.procs.append(subprocess.Popen(
            ["rsync", "--daemon", "--no-detach", f"--port={self.rsync_port}", f"--config={conf}",
             "--address=127.0.0.1"]))
        # sshd with a throwaway host key and client key.
        self.ssh_port = free_port()
        key = os.path.join(work, "id")
        host = os.path.join(work, "host")
        for k in [key, host]:
            if not os.path.exists(k):
                common.sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k], check=True)
        auth = os.path.join(work, "authorized_keys")
        shutil.copy(key + ".pub", auth)
        os.chmod(auth, 0o600)
        os.makedirs("/run/sshd", exist_ok=True)
        self.procs.append(subprocess.Popen(
            [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-p", str(self.ssh_port), "-h", host,
             "-o", "ListenAddress=127.0.0.1", "-o", f"AuthorizedKeysFile={auth}",
             "-o", "PermitRootLogin=prohibit-password", "-o", "PasswordAuthentication=no",
             "-o", "StrictModes=no"],
            stderr=subprocess.DEVNULL))
        self.ssh = (f"ssh -p {self.ssh_port} -i {key} -o StrictHostKeyChecking=no "
                    "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -c aes128-gcm@openssh.com")
        os.environ["BLIT_KNOWN_HOSTS"] = os.path.join(work, "known_hosts")
        time.sleep(1.0)

    def start_blit(self, daemon, extra):
        p = subprocess.Popen([daemon, "--listen", "127.0.0.1:0"] + extra,
                             stdout=subprocess.PIPE, text=True)
        line = p.stdout.readline()
        self.procs.append(p)
        port = int(line.split("127.0.0.1:")[1].split()[0])
        return port

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()


ONE = "blit --streams 2"


def push_tools(blit, sv, big):
    t = [
        ("blit", lambda s, d: [blit, "copy", "-q", "--no-progress", s, f"blit://127.0.0.1:{sv.blit_tls}/m/{d}"]),
        ("rsyncd", lambda s, d: ["rsync", "-a", s + "/", f"rsync://127.0.0.1:{sv.rsync_port}/m/{d}/"]),
        ("rsync ssh", lambda s, d: ["rsync", "-a", "-e", sv.ssh, s + "/", f"root@127.0.0.1:{sv.module}/{d}/"]),
    ]
    t.insert(1, ("blit --no-tls", lambda s, d: [blit, "copy", "-q", "--no-progress", "--no-tls", s,
                                                f"blit://127.0.0.1:{sv.blit_plain}/m/{d}"]))
    if big:
        # Over loopback Blit sends a large file over one connection by default (between
        # machines, two); this row shows it striped over two.
        t.insert(1, (ONE, lambda s, d: [blit, "copy", "-q", "--no-progress", "--streams", "2", s,
                                        f"blit://127.0.0.1:{sv.blit_tls}/m/{d}"]))
    old = common.baseline("blit")
    if old and sv.baseline_tls:
        t.insert(1, (common.BASELINE, lambda s, d: [old, "copy", "-q", "--no-progress", s,
                                                    f"blit://127.0.0.1:{sv.baseline_tls}/m/{d}"]))
    return t


def pull_tools(blit, sv, big):
    t = [
        ("blit", lambda s, d: [blit, "copy", "-q", "--no-progress", "--trust-metadata",
                               f"blit://127.0.0.1:{sv.blit_tls}/m/{s}", d]),
        ("rsyncd", lambda s, d: ["rsync", "-a", f"rsync://127.0.0.1:{sv.rsync_port}/m/{s}/", d + "/"]),
        ("rsync ssh", lambda s, d: ["rsync", "-a", "-e", sv.ssh, f"root@127.0.0.1:{sv.module}/{s}/", d + "/"]),
    ]
    t.insert(1, ("blit --no-tls", lambda s, d: [blit, "copy", "-q", "--no-progress", "--no-tls",
                                                "--trust-metadata",
                                                f"blit://127.0.0.1:{sv.blit_plain}/m/{s}", d]))
    if big:
        t.insert(1, (ONE, lambda s, d: [blit, "copy", "-q", "--no-progress", "--streams", "2",
                                        "--trust-metadata",
                                        f"blit://127.0.0.1:{sv.blit_tls}/m/{s}", d]))
    old = common.baseline("blit")
    if old and sv.baseline_tls:
        t.insert(1, (common.BASELINE, lambda s, d: [old, "copy", "-q", "--no-progress",
                                                    f"blit://127.0.0.1:{sv.baseline_tls}/m/{s}", d]))
    return t


NOXA = "blit --no-xattrs (duty of rsyncd)"


def mirror_tools(blit, sv):
    old = common.baseline("blit")
    t = []
    if old and sv.baseline_tls:
        t.append((common.BASELINE, lambda s, d: [old, "mirror", "-q", "--no-progress", s,
                                                 f"blit://127.0.0.1:{sv.baseline_tls}/m/{d}"]))
    return t + [
        ("blit", lambda s, d: [blit, "mirror", "-q", "--no-progress", s, f"blit://127.0.0.1:{sv.blit_tls}/m/{d}"]),
        ("blit --no-tls", lambda s, d: [blit, "mirror", "-q", "--no-progress", "--no-tls", s,
                                        f"blit://127.0.0.1:{sv.blit_plain}/m/{d}"]),
        # rsyncd without -X compares no xattrs; Blit does by default. This row does rsyncd's work.
        (NOXA, lambda s, d: [blit, "mirror", "-q", "--no-progress", "--no-xattrs", s,
                             f"blit://127.0.0.1:{sv.blit_tls}/m/{d}"]),
        ("rsyncd", lambda s, d: ["rsync", "-a", "--delete", s + "/", f"rsync://127.0.0.1:{sv.rsync_port}/m/{d}/"]),
        ("rsync ssh", lambda s, d: ["rsync", "-a", "--delete", "-e", sv.ssh, s + "/", f"root@127.0.0.1:{sv.module}/{d}/"]),
    ]


class RemoteBench(common.Bench):
    def chosen(self, tools):
        """With --only-blit, Blit's rows alone (TLS and plain, this build and the baseline)."""
        if not self.args.only_blit:
            return tools
        return [(n, c) for n, c in tools if n.startswith("blit")]

    def record(self, label, results):
        # Ratios against rsyncd, the peer the targets name.
        super().record(label, results)
        label_, med, best, ratio = self.rows[-1]
        if "blit" in med and "rsyncd" in med:
            r = med["blit"][0] / med["rsyncd"][0]
            print(f"  blit / rsyncd: {r:.2f}")
            self.rows[-1] = (label_, med, ("rsyncd", med["rsyncd"]), r)
        if "blit --no-tls" in med and "rsyncd" in med:
            print(f"  blit --no-tls / rsyncd: {med['blit --no-tls'][0] / med['rsyncd'][0]:.2f}")
        if "blit" in med and "blit --no-tls" in med:
            print(f"  TLS cost: blit / blit --no-tls = {med['blit'][0] / med['blit --no-tls'][0]:.2f}")
        if NOXA in med and "rsyncd" in med:
            print(f"  same duty: {NOXA} / rsyncd: {med[NOXA][0] / med['rsyncd'][0]:.2f}")
        if ONE in med and "blit" in med:
            print(f"  striping: {ONE} / blit = {med[ONE][0] / med['blit'][0]:.2f}")

    def push(self, label, src, nbytes, rounds, big):
        tools = self.chosen(push_tools(self.blit, self.sv, big))
        results = {n: [] for n, _ in tools}
        for i in range(rounds):
            for name, cmd in common.rotated(tools, i):
                # Large outputs are named apart, so clearing them never touches a small-file tree
                # (whose delete would slow file creation for minutes).
                rel = f"{'big-' if big else ''}push-{name.split()[0]}-{name.count('-')}"
                dst = os.path.join(self.sv.module, rel)
                if big:
                    common.drop_big_outputs(self.sv.module, "big-push-")
                self.aside(dst)
                self.prepare(src, nbytes)
                results[name].append(common.timed(cmd(src, rel)))
        self.record(label, results)

    def pull(self, label, rel, nbytes, rounds, big):
        tools = self.chosen(pull_tools(self.blit, self.sv, big))
        results = {n: [] for n, _ in tools}
        base = os.path.join(self.data, "dst", "pulled-big" if big else "pulled")
        os.makedirs(base, exist_ok=True)
        for i in range(rounds):
            for name, cmd in common.rotated(tools, i):
                dst = os.path.join(base, f"{name.split()[0]}-{name.count('-')}")
                if big:
                    common.drop_big_outputs(base, "")
                self.aside(dst)
                self.prepare(os.path.join(self.sv.module, rel), nbytes)
                results[name].append(common.timed(cmd(rel, dst)))
        self.record(label, results)

    def noop(self, label, src, rel, rounds):
        tools = self.chosen(mirror_tools(self.blit, self.sv))
        replica = os.path.join(self.sv.module, rel)
        if not os.path.exists(replica):
            common.sh([self.blit, "mirror", "-q", "--no-progress", src, replica], check=True)
        results = {n: [] for n, _ in tools}
        for i in range(rounds):
            for name, cmd in common.rotated(tools, i):
                self.prepare(src, 0, extra_warm=replica)
                results[name].append(common.timed(cmd(src, rel)))
        self.record(label, results)

    def header(self):
        ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
        return [
            "## Latest script run (loopback)",
            "",
            f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}  ",
            f"Machine: {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}  ",
            f"Blit: {common.version(self.blit)}; rsync: {common.version('rsync')}; ssh: {ssh}  ",
            f"{self.args.rounds} rounds, alternating; wall-time medians. `blit` uses TLS (its default); "
            "rsyncd is unencrypted; rsync ssh uses aes128-gcm.",
        ]

    def ratio_rows(self, label, med, best, ratio):
        rows = []
        if ratio is not None:
            rows.append(f"| {label} | **blit / rsyncd** | **{ratio:.2f}** | | | |")
        if "blit --no-tls" in med and "rsyncd" in med:
            rows.append(f"| {label} | **blit --no-tls / rsyncd** | "
                        f"**{med['blit --no-tls'][0] / med['rsyncd'][0]:.2f}** | | | |")
        if "blit" in med and "blit --no-tls" in med:
            rows.append(f"| {label} | **TLS cost (blit / blit --no-tls)** | "
                        f"**{med['blit'][0] / med['blit --no-tls'][0]:.2f}** | | | |")
        if NOXA in med and "rsyncd" in med:
            rows.append(f"| {label} | same duty: {NOXA} / rsyncd | "
                        f"{med[NOXA][0] / med['rsyncd'][0]:.2f} | | | |")
        if ONE in med and "blit" in med:
            rows.append(f"| {label} | striping ({ONE} / blit, one stream) | "
                        f"{med[ONE][0] / med['blit'][0]:.2f} | | | |")
        return rows


def main():
    sys.stdout.reconfigure(line_buffering=True)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default=",".join(ALL))
    ap.add_argument("--data", default="/var/tmp/blit-bench")
    ap.add_argument("--out", default=os.path.join(common.HERE, "RESULTS-remote.md"))
    ap.add_argument("--only-blit", action="store_true",
                    help="run only Blit's rows (this build's and $BLIT_BASELINE's); no rsync")
    args = ap.parse_args()
    only = args.only.split(",")
    need([("rsync", "rsync"), ("openssh-server", "sshd"), ("openssh-client", "ssh"), ("time", "/usr/bin/time")])
    common.sh(["cargo", "build", "--release", "-q", "-p", "blit-daemon", "-p", "blit-cli"], cwd=common.REPO,
              check=True)
    b = RemoteBench(args)
    d = args.data
    module = os.path.join(d, "module")
    os.makedirs(module, exist_ok=True)
    work = os.path.join(d, "remote-work")
    os.makedirs(work, exist_ok=True)
    b.sv = Servers(module, work)
    try:
        r = args.rounds
        if "push-1g" in only or "pull-1g" in only:
            src = os.path.join(d, "src-1g")
            common.make_big_file(src, 1 << 30)
            if "push-1g" in only:
                b.push("1 GiB file, push", src, 1 << 30, r, True)
            if "pull-1g" in only:
                if not os.path.exists(os.path.join(module, "src-1g")):
                    common.sh(["cp", "-a", src, os.path.join(module, "src-1g")], check=True)
                b.pull("1 GiB file, pull", "src-1g", 1 << 30, r, True)
        if "push-10k" in only or "pull-10k" in only:
            src = os.path.join(d, "src-10k")
            common.make_small_tree(src, 10000, 100, 4096, 7)
            if "push-10k" in only:
                b.push("10,000 x 4 KiB, push", src, 10000 * 4096, r, False)
            if "pull-10k" in only:
                if not os.path.exists(os.path.join(module, "src-10k")):
                    common.sh(["cp", "-a", src, os.path.join(module, "src-10k")], check=True)
                b.pull("10,000 x 4 KiB, pull", "src-10k", 10000 * 4096, r, False)
        if "noop-50k" in only:
            src = os.path.join(d, "src-50k")
            common.make_small_tree(src, 50000, 500, 4096, 2)
            b.noop("50,000 files, no-op mirror (push)", src, "replica-50k", r)
    finally:
        b.sv.stop()
    b.write(args.out)
    b.cleanup()


if __name__ == "__main__":
    main()
