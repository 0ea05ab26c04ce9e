// What the CPU's lane-parallel loops share: a vector of eight floats in GCC/Clang's vector types
// (lowered to the instruction set of the function it is inlined into), its loads and stores, and
// on x86 the target attributes of the AVX2 and AVX-512 copies of a loop (kernels_impl.h explains
// why only those functions carry them).
#pragma once

#include <cstring>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include "backend/cpu/x86_intrinsics.h"
#define TRIT_LANES_X86 1
#define TRIT_LANES_AVX2 __attribute__((target("avx2")))
#define TRIT_LANES_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq")))
#endif

#if defined(__GNUC__)
#define TRIT_LANES_INLINE inline __attribute__((always_inline))
#else
#define TRIT_LANES_INLINE inline
#endif

namespace trit::engine::lanes {

using Lane = float __attribute__((vector_size(32)));
constexpr int kLane = 8;

// Through references: a vector passed or returned by value changes the baseline's ABI.
TRIT_LANES_INLINE void load(Lane& v, const float* p) {
  std::memcpy(&v, p, sizeof v);
}
TRIT_LANES_INLINE void store(float* p, const Lane& v) {
  std::memcpy(p, &v, sizeof v);
}

#ifdef TRIT_LANES_X86
// The first n lanes of 16 (all from 16 on).
TRIT_LANES_AVX512 TRIT_LANES_INLINE __mmask16 first_lanes(int64_t n) {
  return n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1u);
}
#endif

}  // namespace trit::engine::lanes
