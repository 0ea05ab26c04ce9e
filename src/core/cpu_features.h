// CPU features that __builtin_cpu_supports cannot name with every compiler (clang 14 does not
// know "f16c"), read from CPUID directly.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace trit::engine {

// F16C (half <-> float conversions): CPUID leaf 1, ECX bit 29.
inline bool cpu_has_f16c() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  return (c & (1u << 29)) != 0;
#else
  return false;
#endif
}

// AVX-VNNI (VEX-encoded vpdpbusd on 256-bit registers): CPUID leaf 7, sub-leaf 1, EAX bit 4.
// Only the instruction's presence: the caller uses it where AVX2 is usable (OS state saved).
inline bool cpu_has_avx_vnni() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
  return (a & (1u << 4)) != 0;
#else
  return false;
#endif
}

}  // namespace trit::engine
