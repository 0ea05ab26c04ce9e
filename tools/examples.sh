#!/usr/bin/env bash
# Checks that trit installs and is usable from outside: installs a build into a temporary
# prefix, checks what was installed (libraries, public headers that compile on their own, the
# CMake package, trit.pc), builds examples/ against the prefix with find_package(trit) (shared,
# then static) and the C example once more through pkg-config, and runs both examples on the
# shipped model on the CPU: the C one fine-tunes an adapter on data/demo and generates with it,
# the C++ one chats for two turns.
#   tools/examples.sh [BUILD_DIR]      (default: build; its targets trit_shared and trit_cli are
#                                       built first when out of date)
# Env: EXAMPLES_STEPS (fine-tuning steps, default 8), EXAMPLES_KEEP=1 keeps the temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${1:-build}
steps=${EXAMPLES_STEPS:-8}
model=$root/models/austen-tiny.gguf
tmp=$(mktemp -d "${TMPDIR:-/tmp}/trit-examples.XXXXXX")
prefix=$tmp/prefix
cleanup() {
  if [ "${EXAMPLES_KEEP:-0}" = 1 ]; then echo "examples: kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
fail() {
  echo "examples: FAILED: $*" >&2
  exit 1
}
start=$(date +%s)
step() { printf '== [%3d s] %s\n' "$(($(date +%s) - start))" "$*"; }

step "install $build into $prefix"
cmake --build "$build" --target trit_shared trit_cli -j "${JOBS:-2}" >/dev/null
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log"
for f in bin/trit lib/libtrit.a lib/libtrit.so lib/libtrit.so.0 lib/libtrit.so.0.1.0 \
  lib/cmake/trit/tritConfig.cmake lib/cmake/trit/tritConfigVersion.cmake \
  lib/cmake/trit/tritTargets.cmake lib/pkgconfig/trit.pc include/trit/trit.h \
  include/trit/trit.hpp include/trit/version.h; do
  [ -e "$prefix/$f" ] || fail "$f was not installed"
done
if [ ! -L "$prefix/lib/libtrit.so" ] || [ ! -L "$prefix/lib/libtrit.so.0" ]; then
  fail "libtrit.so and libtrit.so.0 should be links to libtrit.so.0.1.0"
fi
"$prefix/bin/trit" --help >/dev/null || fail "the installed CLI does not run"

step "installed headers compile on their own (no header of src/ needed)"
# shellcheck disable=SC2016  # $1 and $2 are the inner shell's
(cd "$prefix/include" && ls trit/*.h trit/*.hpp) |
  xargs -P "${JOBS:-2}" -I{} sh -c 'printf "#include <%s>\n" "$1" |
    c++ -std=c++20 -Wall -Wextra -Werror -fsyntax-only -I"$2" -x c++ - ||
    { echo "examples: $1 does not compile on its own as C++20" >&2; exit 1; }' sh {} \
  "$prefix/include" || fail "an installed header does not compile on its own"
printf '#include <trit/trit.h>\n' |
  cc -std=c99 -pedantic -Wall -Wextra -Werror -fsyntax-only -I"$prefix/include" -x c - ||
  fail "trit/trit.h does not compile as C99"

step "build examples/ with find_package(trit) (trit::trit, then trit::trit_static)"
cmake -S examples -B "$tmp/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_FLAGS=-Werror -DCMAKE_CXX_FLAGS=-Werror >/dev/null
cmake --build "$tmp/build" >/dev/null
ldd "$tmp/build/chat_stream" | grep -q "libtrit.so.0 => $prefix/lib/libtrit.so.0" ||
  fail "chat_stream does not load the installed libtrit.so.0"
cmake -S examples -B "$tmp/build-static" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DTRIT_EXAMPLES_STATIC=ON >/dev/null
cmake --build "$tmp/build-static" >/dev/null
! ldd "$tmp/build-static/finetune_then_generate" | grep -q libtrit ||
  fail "the static build links libtrit.so"
# The usage line (exit 2) shows the static program starts.
set +e
"$tmp/build-static/finetune_then_generate" >/dev/null 2>&1
[ $? = 2 ] || fail "the statically linked finetune_then_generate does not start"
set -e

step "compile the C example through pkg-config"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
# shellcheck disable=SC2046
cc -std=c99 -Wall -Wextra -Werror examples/finetune_then_generate.c -o "$tmp/finetune_pc" \
  $(pkg-config --cflags --libs trit) -Wl,-rpath,"$(pkg-config --variable=libdir trit)"
set +e
"$tmp/finetune_pc" >/dev/null 2>&1
[ $? = 2 ] || fail "finetune_then_generate built through pkg-config does not start"
set -e

step "run finetune_then_generate ($steps steps on data/demo)"
mkdir -p "$tmp/run"  # the trainer writes into an existing folder
"$tmp/build/finetune_then_generate" "$model" "$root/data/demo" "$tmp/run/adapter.gguf" \
  --device cpu --steps "$steps" --ctx 48 | tee "$tmp/finetune.out" ||
  fail "finetune_then_generate exited non-zero"
[ -s "$tmp/run/adapter.gguf" ] || fail "no adapter at $tmp/run/adapter.gguf"
grep -q "^step $steps/$steps | loss" "$tmp/finetune.out" || fail "no progress line for step $steps"
grep -q '^\[[0-9]* tokens, ' "$tmp/finetune.out" || fail "no generation after fine-tuning"

step "run chat_stream (two turns)"
printf 'Good morning, Miss Bennet.\nWhat do you think of Mr. Darcy?\n' |
  "$tmp/build/chat_stream" "$model" --device cpu -n 24 >"$tmp/chat.out" 2>"$tmp/chat.err" ||
  { cat "$tmp/chat.err" >&2; fail "chat_stream exited non-zero"; }
cat "$tmp/chat.out"
cat "$tmp/chat.err"
[ "$(grep -c ' generated, ' "$tmp/chat.err")" = 2 ] || fail "chat_stream did not reply twice"
[ "$(grep -c . "$tmp/chat.out")" -ge 2 ] || fail "chat_stream printed fewer than two replies"
grep ' generated, ' "$tmp/chat.err" | sed -n 2p | grep -q '^\[[1-9][0-9]* of ' ||
  fail "the second turn did not reuse the cache"

step "examples: ok"
