#!/usr/bin/env bash
# Builds llama.cpp's CPU tools (llama-bench, llama-completion, llama-simple) from the llama.cpp source vendored in
# the llama-cpp-python sdist, so that bench/compare_llama_cpp.py races hearth against a pinned, known llama.cpp
# compiled for this machine's CPU (GGML_NATIVE=ON), not a prebuilt wheel tuned for some other CPU.
#
# usage:
#   bench/build_llama_cpp.sh                       # download the sdist with pip, build into the cache dir
#   bench/build_llama_cpp.sh --pack DIR            # write DIR/llama.cpp-src-<version>.tar.xz (no build)
#   bench/build_llama_cpp.sh --from-tarball FILE   # build from such a tarball, no network needed
#   bench/build_llama_cpp.sh --print-source        # download and unpack only; print the source dir
# options:
#   --build-dir DIR   cache dir (default: <repo>/target/llama.cpp-build; /target is git-ignored)
#   --jobs N          parallel compile jobs (default 2: the dev VM's 2 cores are shared)
#   --version V       llama-cpp-python version whose vendored llama.cpp is built (default 0.3.36)
#   --force           rebuild even when the tools for this source are already built
#   --sdist FILE      use this already-downloaded llama-cpp-python sdist instead of fetching one with pip
#
# The tools land in BUILD_DIR/bin. A second run with the same source skips the build and just prints that path.
# cmake and ninja come from PATH; when missing (and the network is there) they are installed from PyPI into
# BUILD_DIR/venv. Compiles run under `nice -n 19` so other people's builds on the same cores keep going.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=0.3.36
build_dir="$repo_root/target/llama.cpp-build"
jobs=2
pack_dir=""
tarball=""
force=0
print_source=0
sdist_given=""

die() { echo "build_llama_cpp: $*" >&2; exit 1; }
say() { echo "build_llama_cpp: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --build-dir) build_dir=$2; shift 2 ;;
        --jobs) jobs=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --pack) pack_dir=$2; shift 2 ;;
        --from-tarball) tarball=$2; shift 2 ;;
        --force) force=1; shift ;;
        --print-source) print_source=1; shift ;;
        --sdist) sdist_given=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[ -n "$pack_dir" ] && [ -n "$tarball" ] && die "--pack and --from-tarball do not go together"

mkdir -p "$build_dir"
build_dir=$(cd "$build_dir" && pwd)
src_dir="$build_dir/src/llama.cpp"
bin_dir="$build_dir/bin"
tools=(llama-bench llama-completion llama-simple)
# Top-level folders of llama.cpp that no CPU tool build reads: vocab test files, documentation, unit tests; and
# .git, the sdist's submodule pointer, which leads nowhere once unpacked.
pack_excludes=(models docs tests .git)

# Where the source comes from, written into the stamp so a different source triggers a rebuild.
if [ -n "$tarball" ]; then
    [ -f "$tarball" ] || die "no such tarball: $tarball"
    tarball=$(cd "$(dirname "$tarball")" && pwd)/$(basename "$tarball")
    source_id="tarball $(basename "$tarball") $(cksum <"$tarball" | cut -d' ' -f1)"
else
    source_id="llama-cpp-python $version sdist"
fi
cmake_flags=(
    -DCMAKE_BUILD_TYPE=Release
    -DGGML_NATIVE=ON
    -DBUILD_SHARED_LIBS=OFF
    -DLLAMA_CURL=OFF
    -DLLAMA_OPENSSL=OFF
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_SERVER=OFF
    -DLLAMA_BUILD_APP=OFF
    -DLLAMA_BUILD_EXAMPLES=ON
    -DLLAMA_BUILD_TOOLS=ON
)
stamp_text="source: $source_id
cmake: ${cmake_flags[*]}
host: $(uname -m) $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"

have() { command -v "$1" >/dev/null 2>&1; }

# cmake and ninja on PATH, from PyPI into a venv when the system lacks them.
ensure_build_tools() {
    if [ -x "$build_dir/venv/bin/cmake" ]; then
        export PATH="$build_dir/venv/bin:$PATH"
    fi
    if have cmake && { have ninja || have make; }; then
        return
    fi
    [ -n "$tarball" ] && die "cmake (and ninja or make) are needed; this offline build cannot fetch them"
    say "installing cmake and ninja from PyPI into $build_dir/venv"
    python3 -m venv "$build_dir/venv"
    "$build_dir/venv/bin/python" -m pip install --quiet cmake ninja
    export PATH="$build_dir/venv/bin:$PATH"
}

# The llama-cpp-python sdist in BUILD_DIR/sdist (pip keeps its own download cache, so this is cheap twice).
fetch_sdist() {
    local sdist_dir="$build_dir/sdist"
    sdist="$sdist_dir/llama_cpp_python-$version.tar.gz"
    [ -f "$sdist" ] && return
    if [ -n "$sdist_given" ]; then
        [ -f "$sdist_given" ] || die "no such sdist: $sdist_given"
        mkdir -p "$sdist_dir"
        cp "$sdist_given" "$sdist.part" && mv "$sdist.part" "$sdist"
        return
    fi
    ensure_build_tools
    mkdir -p "$sdist_dir"
    say "downloading the llama-cpp-python==$version sdist"
    # Only llama-cpp-python itself is forced to its source distribution. `--no-binary :all:` would also force
    # the build backend's own needs (cmake among them) to build from source while pip reads the sdist's
    # metadata, which takes most of an hour on two cores; the file this writes is the same sdist either way.
    # With cmake and ninja already on PATH (ensure_build_tools), the backend does not ask for them at all.
    python3 -m pip download --quiet --no-binary llama-cpp-python --no-deps \
        "llama-cpp-python==$version" -d "$sdist_dir"
    [ -f "$sdist" ] || die "pip did not write $sdist"
}

# BUILD_DIR/src/llama.cpp holds the llama.cpp tree, from the sdist or the tarball.
unpack_source() {
    local marker="$build_dir/src/.source"
    if [ -f "$src_dir/CMakeLists.txt" ] && [ "$(cat "$marker" 2>/dev/null)" = "$source_id" ]; then
        return
    fi
    rm -rf "$build_dir/src"
    mkdir -p "$build_dir/src"
    if [ -n "$tarball" ]; then
        say "unpacking $tarball"
        tar -xJf "$tarball" -C "$build_dir/src"
    else
        fetch_sdist
        say "unpacking vendor/llama.cpp from $(basename "$sdist")"
        tar -xzf "$sdist" -C "$build_dir/src" --strip-components=2 "llama_cpp_python-$version/vendor/llama.cpp"
        # A submodule pointer into the sdist's own .git, which is not unpacked: without it, git stays quiet.
        rm -rf "$src_dir/.git"
    fi
    [ -f "$src_dir/CMakeLists.txt" ] || die "no llama.cpp/CMakeLists.txt in the unpacked source"
    echo "$source_id" >"$marker"
}

pack() {
    unpack_source
    mkdir -p "$pack_dir"
    local out excludes=()
    out="$(cd "$pack_dir" && pwd)/llama.cpp-src-$version.tar.xz"
    for d in "${pack_excludes[@]}"; do excludes+=("--exclude=llama.cpp/$d"); done
    say "writing $out (without ${pack_excludes[*]})"
    # --anchored: exclude only the top-level folders, not src/models (model sources) and the like.
    nice -n 19 tar --anchored "${excludes[@]}" -cJf "$out.part" -C "$build_dir/src" llama.cpp
    mv "$out.part" "$out"
    ls -l "$out" >&2
    echo "$out"
}

build() {
    if [ "$force" = 0 ] && [ "$(cat "$bin_dir/.stamp" 2>/dev/null)" = "$stamp_text" ]; then
        local ok=1
        for t in "${tools[@]}"; do [ -x "$bin_dir/$t" ] || ok=0; done
        if [ "$ok" = 1 ]; then
            say "already built: $bin_dir (--force rebuilds)"
            echo "$bin_dir"
            return
        fi
    fi
    ensure_build_tools
    unpack_source
    local gen=()
    have ninja && gen=(-G Ninja)
    # The source sits inside hearth's git checkout; stop llama.cpp's build-info from reading hearth's commit.
    export GIT_CEILING_DIRECTORIES="$build_dir/src"
    if [ "$force" = 1 ] || [ "$(cat "$build_dir/build/.configured" 2>/dev/null)" != "$stamp_text" ]; then
        rm -rf "$build_dir/build"
        say "configuring (${gen[*]:-make}) in $build_dir/build"
        cmake -S "$src_dir" -B "$build_dir/build" "${gen[@]}" "${cmake_flags[@]}" >"$build_dir/configure.log" 2>&1 ||
            { tail -30 "$build_dir/configure.log" >&2; die "cmake configure failed (log: $build_dir/configure.log)"; }
        echo "$stamp_text" >"$build_dir/build/.configured"
    fi
    say "building ${tools[*]} with $jobs jobs (log: $build_dir/build.log)"
    local t0=$SECONDS
    nice -n 19 cmake --build "$build_dir/build" --config Release -j "$jobs" --target "${tools[@]}" \
        >"$build_dir/build.log" 2>&1 ||
        { tail -30 "$build_dir/build.log" >&2; die "build failed (log: $build_dir/build.log)"; }
    mkdir -p "$bin_dir"
    for t in "${tools[@]}"; do
        local f
        f=$(find "$build_dir/build" -type f -name "$t" -perm -u+x | head -1)
        [ -n "$f" ] || die "built, but found no $t under $build_dir/build"
        cp "$f" "$bin_dir/$t"
    done
    echo "$stamp_text" >"$bin_dir/.stamp"
    say "built in $((SECONDS - t0)) s: $bin_dir"
    echo "$bin_dir"
}

if [ "$print_source" = 1 ]; then
    unpack_source
    echo "$src_dir"
elif [ -n "$pack_dir" ]; then
    pack
else
    build
fi
