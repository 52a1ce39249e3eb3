#!/usr/bin/env python3
"""How many network round trips a remote job costs: each job runs through bench/relay.py with
no delay and with a 50 ms round trip (25 ms each way), and the difference of the medians,
divided by 50 ms, is the number of round trips the job waited for (work the two sides overlap
with the network is not counted, which is the point). Jobs: a push of one 4 KiB file, a pull
of it, and a push of a small tree (3 levels: 4 folders of 4 folders of 8 files) into an empty
destination; plain TCP and TLS.

Usage: bench/roundtrips.py [--rounds N] [--bin DIR]   (default binaries: $CARGO_TARGET_DIR/release)
Results go into docs/PROTOCOL.md by hand.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as common  # noqa: E402
from remote import free_port  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ONE_WAY_MS = 25


def start(cmd):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    p.stdout.readline()
    return p


def relay(target, delay_ms):
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "relay.py"), "0", str(target),
                          str(delay_ms)], stdout=subprocess.PIPE, text=True)
    port = int(p.stdout.readline().rsplit(":", 1)[1])
    return p, port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--bin", help="folder of the blit and blit-daemon to measure "
                                  "(default: this build's release)")
    args = ap.parse_args()
    bin_dir = args.bin or os.path.join(common.target_dir(), "release")
    blit = os.path.join(bin_dir, "blit")
    work = tempfile.mkdtemp(prefix="blit-rtt-", dir="/dev/shm")
    one = os.path.join(work, "one.bin")
    with open(one, "wb") as f:
        f.write(os.urandom(4096))
    tree = os.path.join(work, "tree")
    for a in range(4):
        for b in range(4):
            d = os.path.join(tree, f"a{a}", f"b{b}")
            os.makedirs(d)
            for c in range(8):
                with open(os.path.join(d, f"f{c}"), "wb") as f:
                    f.write(os.urandom(512))
    module = os.path.join(work, "module")
    os.makedirs(module)
    shutil.copy(one, os.path.join(module, "one.bin"))
    if os.geteuid() == 0:
        # As root, a quick-form module's sessions act as nobody, who must own what they write.
        os.chown(module, 65534, 65534)
    procs = []
    ports = {}
    try:
        for tls in (False, True):
            port = free_port()
            cmd = [os.path.join(bin_dir, "blit-daemon"), "--listen", f"127.0.0.1:{port}",
                   "--module", f"m={module}", "--tls-dir", os.path.join(work, "tls")]
            if not tls:
                cmd.append("--no-tls")
            procs.append(start(cmd))
            for delay in (0, ONE_WAY_MS):
                p, rport = relay(port, delay)
                procs.append(p)
                ports[(tls, delay)] = rport
        time.sleep(0.5)
        env = dict(os.environ, BLIT_KNOWN_HOSTS=os.path.join(work, "known_hosts"))
        jobs = {
            "push one file": lambda url, r, dst: [one, f"{url}/p{r}.bin"],
            "pull one file": lambda url, r, dst: [f"{url}/one.bin", os.path.join(dst, f"o{r}.bin")],
            "push 128 files in 20 folders": lambda url, r, dst: [tree, f"{url}/t{r}"],
        }
        dst = os.path.join(work, "dst")
        os.makedirs(dst)
        times = {}
        n = 0
        for r in range(args.rounds + 1):
            for job, argv in jobs.items():
                for tls in (False, True):
                    for delay in (0, ONE_WAY_MS):
                        n += 1
                        url = f"blit://127.0.0.1:{ports[(tls, delay)]}/m"
                        cmd = [blit, "copy", "-q", "--no-progress"] + ([] if tls else ["--no-tls"])
                        cmd += argv(url, n, dst)
                        t = time.perf_counter()
                        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
                        if r > 0:
                            times.setdefault((job, tls, delay), []).append(time.perf_counter() - t)
        rtt = 2 * ONE_WAY_MS / 1000
        print(f"round trips ({args.rounds} rounds, medians; relay at 0 and {2 * ONE_WAY_MS} ms round trip)")
        for job in jobs:
            for tls in (False, True):
                t0 = statistics.median(times[(job, tls, 0)])
                t1 = statistics.median(times[(job, tls, ONE_WAY_MS)])
                print(f"  {job:<30} {'TLS  ' if tls else 'plain'}: {t0 * 1000:7.1f} ms -> "
                      f"{t1 * 1000:7.1f} ms: {(t1 - t0) / rtt:4.1f} round trips")
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
