#!/usr/bin/env python3
"""Latency of the smallest remote job: a push of one 4 KiB file over loopback, for this build
and a baseline build, plain TCP and TLS, alternating rounds, medians and minimums in ms. What
it measures is a session's fixed cost (connect, preamble, handshake, hello, one request, the
finish), which round trips multiply on a real link.

Usage: BLIT_BASELINE=DIR bench/onefile.py [--rounds N]
Binaries come from $CARGO_TARGET_DIR/release (else target/release) and from BLIT_BASELINE (a
folder holding another build's `blit` and `blit-daemon`). Run it on a quiet machine.
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    baseline = os.environ.get("BLIT_BASELINE")
    if not baseline:
        sys.exit("set BLIT_BASELINE to a folder holding the other build's blit and blit-daemon")
    builds = {"baseline": baseline, "blit": os.path.join(common.target_dir(), "release")}
    work = tempfile.mkdtemp(prefix="blit-onefile-", dir="/dev/shm")
    src = os.path.join(work, "f.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(4096))
    daemons, ports = {}, {}
    for name, folder in builds.items():
        for tls in (False, True):
            module = os.path.join(work, f"mod-{name}-{int(tls)}")
            os.makedirs(module)
            # As root, a quick-form module's sessions act as nobody, who must own the folder.
            if os.geteuid() == 0:
                os.chown(module, 65534, 65534)
            port = free_port()
            cmd = [os.path.join(folder, "blit-daemon"), "--listen", f"127.0.0.1:{port}",
                   "--module", f"m={module}", "--tls-dir", os.path.join(work, f"tls-{name}")]
            if not tls:
                cmd.append("--no-tls")
            daemons[(name, tls)] = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ports[(name, tls)] = port
    time.sleep(1.5)
    env = dict(os.environ, BLIT_KNOWN_HOSTS=os.path.join(work, "known_hosts"))
    times = {k: [] for k in daemons}
    try:
        # Round 0 warms up and records each daemon's fingerprint; it is not counted.
        for r in range(args.rounds + 1):
            order = list(daemons) if r % 2 == 0 else list(reversed(list(daemons)))
            for name, tls in order:
                url = f"blit://127.0.0.1:{ports[(name, tls)]}/m/f{r}.bin"
                cmd = [os.path.join(builds[name], "blit"), "copy"]
                cmd += [] if tls else ["--no-tls"]
                cmd += [src, url]
                t = time.perf_counter()
                subprocess.run(cmd, check=True, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if r > 0:
                    times[(name, tls)].append(time.perf_counter() - t)
    finally:
        for d in daemons.values():
            d.terminate()
            d.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"one-file push (4 KiB), loopback, {args.rounds} alternating rounds: median / min, ms")
    for tls in (False, True):
        b, a = times[("baseline", tls)], times[("blit", tls)]
        print(f"{'TLS  ' if tls else 'plain'}: baseline {statistics.median(b) * 1000:.1f} / "
              f"{min(b) * 1000:.1f}   blit {statistics.median(a) * 1000:.1f} / "
              f"{min(a) * 1000:.1f}   ratio {statistics.median(a) / statistics.median(b):.2f}")


if __name__ == "__main__":
    main()
