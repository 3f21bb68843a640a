#!/usr/bin/env python3
"""Compiles CUDA C sources with NVRTC (no GPU needed), as hearth's CUDA backend does at run time.

The backend's kernels are compiled by NVRTC from text: headers such as quant.cuh are prepended to a kernel
file (NVRTC here has no CUDA headers and the Rust side passes no include files), so this script does the
same: it concatenates the given files in order and compiles the result for sm_90. It prints NVRTC's log and
exits non-zero if any compile fails or logs anything (warnings count as failures). With --no-local it also
fails when the PTX uses local memory, i.e. when an array meant for registers (wt_deq32's 32 outputs) spilled.

    scripts/nvrtc_check.py --all-types                      # quant.cuh + deq_probe.cu for every weight type
    scripts/nvrtc_check.py -D WT_Q4_K a.cuh b.cu            # one configuration of given files
    scripts/nvrtc_check.py --resources -D WT_Q8_0 ...       # and each kernel's registers and spills

Only the standard library is used; libnvrtc comes from $HEARTH_NVRTC_LIB (default: the nvrtc venv's
libnvrtc.so.13). Its directory must be on LD_LIBRARY_PATH so libnvrtc finds libnvrtc-builtins; the script
re-executes itself with it added when it is not.
"""

import argparse
import ctypes
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "crates/hearth-engine/src/backend/cuda/kernels")
DEFAULT_LIB = "/work/venvs/nvrtc/nvidia/cu13/lib/libnvrtc.so.13"
# The backend's own options (nvrtc.rs): no -default-device, which would accept helpers (a generic lambda,
# say) that the backend's compile rejects.
BASE_OPTIONS = ["--gpu-architecture=sm_90", "--std=c++17"]


def all_type_configs():
    """Every weight type quant.cuh decodes: floats, GGML types, and MLX affine (every bits x group x float
    dtype hearth accepts) plus the three fp formats."""
    configs = [[f"WT_{t}"] for t in
               ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]]
    for bits in [1, 2, 3, 4, 5, 6, 8]:
        for group in [32, 64, 128]:
            for fl in [0, 1, 2]:
                configs.append(["WT_MLX", "MLX_MODE=0", f"MLX_BITS={bits}", f"MLX_GROUP={group}",
                                f"MLX_FLOAT={fl}"])
    configs += [["WT_MLX", "MLX_MODE=1", "MLX_BITS=4", "MLX_GROUP=32"],
                ["WT_MLX", "MLX_MODE=2", "MLX_BITS=4", "MLX_GROUP=16"],
                ["WT_MLX", "MLX_MODE=3", "MLX_BITS=8", "MLX_GROUP=32"]]
    return configs


def ensure_library_path(lib):
    """Re-executes this script with the library's folder on LD_LIBRARY_PATH (the dynamic loader reads it
    only at process start) unless it is there already."""
    folder = os.path.dirname(os.path.abspath(lib))
    paths = os.environ.get("LD_LIBRARY_PATH", "").split(":")
    if folder in paths:
        return
    if os.environ.get("HEARTH_NVRTC_REEXEC"):
        sys.exit(f"LD_LIBRARY_PATH still lacks {folder} after re-executing")
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join([folder] + [p for p in paths if p])
    env["HEARTH_NVRTC_REEXEC"] = "1"
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


class Nvrtc:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = f"{major.value}.{minor.value}"

    def check(self, res, what):
        if res != 0:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(res).decode()}")

    def compile(self, source, name, options):
        """Returns (ok, log, ptx) for one program."""
        prog = ctypes.c_void_p()
        self.check(self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(),
                                               0, None, None), "nvrtcCreateProgram")
        try:
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            res = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self.check(self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "log size")
            buf = ctypes.create_string_buffer(size.value)
            self.check(self.lib.nvrtcGetProgramLog(prog, buf), "log")
            log = buf.value.decode(errors="replace")
            ptx = ""
            if res == 0:
                self.check(self.lib.nvrtcGetPTXSize(prog, ctypes.byref(size)), "PTX size")
                buf = ctypes.create_string_buffer(size.value)
                self.check(self.lib.nvrtcGetPTX(prog, buf), "PTX")
                ptx = buf.value.decode(errors="replace")
            return res == 0, log, ptx
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


def ptxas_usage(log):
    """Splits ptxas's -v report out of an NVRTC log: (the rest of the log, one line per kernel with its
    registers and spill bytes, the kernels that spill)."""
    rest, usage, spills = [], [], []
    kernel, spill = None, ""
    for line in log.splitlines():
        if not line.startswith("ptxas"):
            rest.append(line)
            continue
        if "Compiling entry function" in line:
            kernel = line.split("'")[1]
        elif "spill stores" in line:
            stores = int(line.split("bytes spill stores")[0].split(",")[-1].strip())
            loads = int(line.split("bytes spill loads")[0].split(",")[-1].strip())
            spill = f"{stores}/{loads} bytes spilled" if stores or loads else ""
            if spill:
                spills.append(kernel)
        elif "Used" in line and kernel:
            regs = line.split("Used")[1].split("registers")[0].strip()
            usage.append(f"{kernel}: {regs} registers" + (f", {spill}" if spill else ""))
            kernel, spill = None, ""
    return "\n".join(rest), usage, spills


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="sources to concatenate in order "
                    "(default: quant.cuh and deq_probe.cu)")
    ap.add_argument("-D", dest="defines", action="append", default=[], metavar="NAME[=VALUE]")
    ap.add_argument("--all-types", action="store_true",
                    help="compile once per weight-type configuration (added to any -D)")
    ap.add_argument("--no-local", action="store_true",
                    help="fail when the PTX uses local memory (register spills of the decoded values)")
    ap.add_argument("--ptx-dir", help="write each configuration's PTX here")
    ap.add_argument("--resources", action="store_true",
                    help="print ptxas's registers and spill bytes per kernel (the machine code's, which "
                    "the PTX cannot show)")
    args = ap.parse_args()

    lib = os.environ.get("HEARTH_NVRTC_LIB", DEFAULT_LIB)
    ensure_library_path(lib)
    nvrtc = Nvrtc(lib)

    files = args.files or [os.path.join(KERNELS, "quant.cuh"), os.path.join(KERNELS, "deq_probe.cu")]
    # A #line directive before each file keeps NVRTC's messages pointing at the right file and line.
    source = "".join(f'#line 1 "{os.path.basename(f)}"\n' + open(f).read() + "\n" for f in files)
    configs = all_type_configs() if args.all_types else [[]]
    failures = 0
    for config in configs:
        defines = args.defines + config
        label = " ".join(defines) or "(no defines)"
        extra = ["--ptxas-options=-v"] if args.resources else []
        ok, log, ptx = nvrtc.compile(source, os.path.basename(files[-1]),
                                     BASE_OPTIONS + extra + [f"-D{d}" for d in defines])
        problems = []
        usage = []
        if args.resources:
            log, usage, _ = ptxas_usage(log)
        if not ok:
            problems.append("compile failed")
        elif log.strip():
            problems.append("warnings")
        if ok and args.no_local and (".local" in ptx or "__local_depot" in ptx):
            problems.append("local memory in PTX")
        if args.ptx_dir and ok:
            os.makedirs(args.ptx_dir, exist_ok=True)
            name = "_".join(d.replace("=", "") for d in defines) or "default"
            with open(os.path.join(args.ptx_dir, name + ".ptx"), "w") as f:
                f.write(ptx)
        print(f"{'FAIL' if problems else 'ok  '} {label}" + (f": {', '.join(problems)}" if problems else ""))
        if args.resources:
            for line in usage:
                print("     " + line)
        if log.strip():
            print(log.rstrip())
        failures += bool(problems)
    print(f"NVRTC {nvrtc.version}, sm_90: {len(configs) - failures}/{len(configs)} configurations clean")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
