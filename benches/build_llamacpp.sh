#!/usr/bin/env bash
# Build llama.cpp's quantization tools (llama-quantize, llama-imatrix, llama-perplexity) from the
# source package of llama-cpp-python on PyPI, which carries llama.cpp's whole tree under
# vendor/llama.cpp.
#
#     benches/build_llamacpp.sh OUT_DIR [PYTHON]
#
# OUT_DIR    where the source package is downloaded, unpacked and built (for example
#            target/llama.cpp); made if absent
# PYTHON     a Python whose pip downloads the package (default: python3). The download runs
#            `pip download --no-binary :all: --no-deps --no-build-isolation`, so that Python needs
#            scikit-build-core (pip only reads the package's metadata with it; without
#            --no-build-isolation pip builds cmake from source just to do that): when that Python
#            lacks it, the script installs scikit-build-core and cmake into it with its pip. cmake
#            (3.21 or newer) is taken from PATH, or else from that Python's scripts folder.
#
# Environment:
#   LLAMA_CPP_PYTHON_VERSION  pin the package version (default: a package already in OUT_DIR, else
#                             the newest on PyPI; BENCHMARKS.md's rows name the version they used)
#   JOBS                      parallel build jobs (default 2)
#   LLAMACPP_CMAKE_ARGS       extra cmake arguments (default none; the build is portable:
#                             GGML_NATIVE=OFF)
#
# Idempotent: a downloaded package, an unpacked tree and a configured build are reused; the last
# lines printed are the tool paths, as NAME=PATH, and LLAMACPP_BIN=<folder>.
set -euo pipefail

if [ $# -lt 1 ]; then
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
out=$(mkdir -p "$1" && cd "$1" && pwd)
python=${2:-python3}
jobs=${JOBS:-2}
spec=llama-cpp-python
if [ -n "${LLAMA_CPP_PYTHON_VERSION:-}" ]; then
    spec="llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}"
fi

pybin=$(dirname "$(command -v "$python")")
if ! "$python" -c 'import scikit_build_core' >/dev/null 2>&1; then
    echo "build_llamacpp.sh: installing scikit-build-core and cmake into $python (pip reads the package's metadata with them)" >&2
    "$python" -m pip install scikit-build-core cmake >&2
fi
# cmake from the Python's scripts folder when it is not on PATH.
if ! command -v cmake >/dev/null 2>&1 && [ -x "$pybin/cmake" ]; then
    export PATH="$pybin:$PATH"
fi
command -v cmake >/dev/null || { echo "build_llamacpp.sh: cmake not found (pip install cmake)" >&2; exit 1; }

cd "$out"
sdist=$(ls -1 llama_cpp_python-*.tar.gz 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "${LLAMA_CPP_PYTHON_VERSION:-}" ]; then
    sdist=$(ls -1 "llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz" 2>/dev/null || true)
fi
if [ -z "$sdist" ]; then
    "$python" -m pip download --no-binary :all: --no-deps --no-build-isolation "$spec" -d "$out" >&2
    sdist=$(ls -1 llama_cpp_python-*.tar.gz | sort -V | tail -n 1)
fi
src_root=${sdist%.tar.gz}
if [ ! -f "$src_root/vendor/llama.cpp/CMakeLists.txt" ]; then
    tar xzf "$sdist"
fi
src="$out/$src_root/vendor/llama.cpp"
build="$out/build-$src_root"

if [ ! -f "$build/CMakeCache.txt" ]; then
    # shellcheck disable=SC2086
    cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_TOOLS=ON \
        ${LLAMACPP_CMAKE_ARGS:-} >&2
fi
cmake --build "$build" --config Release -j "$jobs" \
    --target llama-quantize llama-imatrix llama-perplexity >&2

echo "LLAMACPP_SOURCE=$src"
for tool in llama-quantize llama-imatrix llama-perplexity; do
    path="$build/bin/$tool"
    [ -x "$path" ] || { echo "build_llamacpp.sh: $path was not built" >&2; exit 1; }
    echo "$tool=$path"
done
echo "LLAMACPP_BIN=$build/bin"
