#!/usr/bin/env python3
"""Sums Nsight Compute's raw CSV (gpu__time_duration, dram bytes read/written) by kernel name: time and bytes
per decoded token and the DRAM bandwidth each kernel reached. Written for bench/cuda/ncu_decode.sh."""
import argparse
import csv
import io
import sys
from collections import defaultdict


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("csv")
    ap.add_argument("--tokens", type=int, default=1, help="decode steps in the profiled span")
    a = ap.parse_args()
    text = open(a.csv, errors="replace").read()
    # ncu prints its own lines (==PROF==) and the program's stdout around the CSV; keep the quoted rows.
    rows = [ln for ln in text.splitlines() if ln.startswith('"')]
    if not rows:
        sys.exit("ncu_summary: no CSV rows in " + a.csv)
    r = csv.reader(io.StringIO("\n".join(rows)))
    header = next(r)
    units = next(r)  # the second row gives each metric's unit
    col = {h: i for i, h in enumerate(header)}
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0,
             "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9}

    def val(row, name):
        i = col[name]
        s = row[i].replace(",", "")
        return float(s) * scale.get(units[i], 1.0) if s else 0.0

    agg = defaultdict(lambda: [0.0, 0.0, 0.0, 0])
    for row in r:
        if len(row) != len(header):
            continue
        k = row[col["Kernel Name"]].split("(")[0].split("<")[0]
        a_ = agg[k]
        a_[0] += val(row, "gpu__time_duration.sum")
        a_[1] += val(row, "dram__bytes_read.sum")
        a_[2] += val(row, "dram__bytes_write.sum")
        a_[3] += 1
    tot_t = sum(v[0] for v in agg.values())
    tot_b = sum(v[1] + v[2] for v in agg.values())
    n = max(a.tokens, 1)
    print(f"{'kernel':<28} {'us/token':>9} {'share':>6} {'launches/token':>14} {'MB read/token':>13} {'GB/s':>7}")
    for k, (t, rd, wr, c) in sorted(agg.items(), key=lambda kv: -kv[1][0]):
        print(f"{k:<28} {t / n * 1e6:9.1f} {t / tot_t:6.1%} {c / n:14.1f} {rd / n / 1e6:13.2f} {(rd + wr) / t / 1e9:7.0f}")
    print(f"{'total':<28} {tot_t / n * 1e6:9.1f} {1:6.0%} {sum(v[3] for v in agg.values()) / n:14.1f} "
          f"{sum(v[1] for v in agg.values()) / n / 1e6:13.2f} {tot_b / tot_t / 1e9:7.0f}")


if __name__ == "__main__":
    main()
