"""Benchmark the synthetic market: wall time and peak RSS of `generate` (each case in a fresh process).

    .venv/bin/python bench/synth.py                 # full market (4,000 codes x 10 years) beside the demo
    .venv/bin/python bench/synth.py --stocks 300 --start 2019-01-01 --end 2023-12-31

Targets (issue 3): full market under 3 minutes and 4 GB on the 2-core CI machine; demo well under a minute.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# run as a script, bench/ is sys.path[0] and bench/etl.py would shadow the etl package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

CASES = [
    ("demo", 300, "2019-01-01", "2023-12-31"),
    ("full", 4000, "2014-01-01", "2023-12-31"),
]


def one(stocks: int, start: str, end: str, seed: int) -> dict:
    """Generate once in this process; report wall time, peak RSS and output size."""
    from etl.config import SynthConfig
    from etl.sources.synthetic import generate

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        m = generate(SynthConfig(stocks=stocks, start=start, end=end, seed=seed), tmp)
        wall = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "stocks": stocks,
        "sessions": len(m.sessions),
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),  # whole process, imports included
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
        "output_mib": round(size / 2**20, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stocks", type=int)
    ap.add_argument("--start")
    ap.add_argument("--end")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.stocks, args.start, args.end, args.seed)))
        return
    cases = CASES if args.stocks is None else [("custom", args.stocks, args.start, args.end)]
    for name, stocks, start, end in cases:
        cmd = [sys.executable, __file__, "--child", f"--stocks={stocks}", f"--start={start}", f"--end={end}"]
        result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(f"{name:6s} {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
