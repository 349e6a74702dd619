"""Why the local executor sets OMP_WAIT_POLICY=PASSIVE: a tiny training's wall and CPU time with torch's
OpenMP threads spinning while they wait (the default) or sleeping, alone and beside a CPU-bound process.

    python bench/bench_omp_wait.py [--steps 300]

Each case runs in a fresh process (the policy is read when OpenMP starts): 2 threads spinning, 2
threads sleeping (PASSIVE), and 1 thread. On a shared machine, read it with the load it prints.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

LOOP = """
import time, torch
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))
x = torch.randn(16 * 128, 64)
opt = torch.optim.AdamW(m.parameters())
t, c = time.perf_counter(), time.process_time()
for _ in range({steps}):
    loss = m(x).pow(2).mean(); loss.backward(); opt.step(); opt.zero_grad()
print(f"{{time.perf_counter() - t:.2f}} {{time.process_time() - c:.2f}}")
"""
CASES = [("2 threads, spinning (default)", {"OMP_NUM_THREADS": "2"}),
         ("2 threads, OMP_WAIT_POLICY=PASSIVE", {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}),
         ("1 thread", {"OMP_NUM_THREADS": "1"})]


def run(steps: int, extra: dict) -> tuple[float, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", LOOP.format(steps=steps)], env={**env, **extra},
                         capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    args = p.parse_args()
    for beside in (False, True):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if beside else None
        try:
            print(f"{'beside a CPU-bound process' if beside else 'alone'} (load {os.getloadavg()[0]:.1f}, "
                  f"{os.cpu_count()} cores):")
            for name, extra in CASES:
                wall, cpu = run(args.steps, extra)
                print(f"  {name:<36} wall {wall:7.2f} s   CPU {cpu:7.2f} s")
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
