#!/usr/bin/env python3
"""Run THERE: device-to-device copy bandwidth through torch, the memory roof for decode speed.

One tensor copy of N bytes reads N and writes N, so the bandwidth is 2N / time (the convention of
NVIDIA's bandwidthTest and of most roofline plots: HBM traffic both ways). N is 4 GiB when the GPU has room for
two such buffers, else 1 GiB: big enough that no cache holds it. Timed with CUDA events after warm-up; median
and best of --reps. Decode reads each weight once per token and writes almost nothing, so this copy figure is
slightly optimistic against a pure read roof (reads and writes share the bus either way).

usage: copy_bw.py [--json OUT.json] [--gib 4] [--reps 20] [--device cuda|cpu]
"""
import argparse
import json
import os
import statistics
import time


def main():
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json")
    ap.add_argument("--gib", type=float, default=4.0, help="buffer size wanted (falls back to 1 GiB)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = dev.startswith("cuda")

    size = int(args.gib * 2**30)
    if cuda:
        free, total = torch.cuda.mem_get_info()
        if 2 * size + 2**30 > free:
            size = 2**30
    src = torch.empty(size, dtype=torch.uint8, device=dev)
    src.fill_(1)
    dst = torch.empty_like(src)

    for _ in range(3):
        dst.copy_(src)
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(args.reps):
        if cuda:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            dst.copy_(src)
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t = time.perf_counter()
            dst.copy_(src)
            times.append(time.perf_counter() - t)
    moved = 2 * size
    med = statistics.median(times)
    res = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "buffer_bytes": size, "bytes_moved_per_copy": moved, "reps": len(times),
        "median_s": med, "best_s": min(times),
        "bytes_per_s": moved / med, "best_bytes_per_s": moved / min(times),
        "torch": torch.__version__,
    }
    if cuda:
        p = torch.cuda.get_device_properties(0)
        res["total_memory_bytes"] = p.total_memory
    print(f"copy bandwidth on {res['device']}: {moved / med / 1e12:.3f} TB/s (read + write, median of "
          f"{len(times)} copies of {size / 2**30:g} GiB; best {moved / min(times) / 1e12:.3f} TB/s)")
    if args.json:
        with open(args.json + ".part", "w") as f:
            json.dump(res, f, indent=1)
        os.replace(args.json + ".part", args.json)


if __name__ == "__main__":
    main()
