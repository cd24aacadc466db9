#include "core/cpu_features.h"

#include <cpuid.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace rs {
namespace {

// XCR0 bits 5-7 (opmask, ZMM upper halves, ZMM16-31): the OS saves AVX-512 state.
bool OsSavesAvx512() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return false;
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 0xe6) == 0xe6;
}

bool Detect() {
  unsigned a, b, c, d;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 0, a, b, c, d);
  const bool amx_bf16 = d & (1u << 22);
  const bool avx512f = b & (1u << 16);
  __cpuid_count(7, 1, a, b, c, d);
  const bool avx512_bf16 = a & (1u << 5);
  return (avx512f && avx512_bf16 && OsSavesAvx512()) || amx_bf16;
}

}  // namespace

bool CpuHasBf16() {
  const char* off = std::getenv("RECSTRATA_CPU_NO_BF16");
  if (off && std::strcmp(off, "1") == 0) return false;
  static const bool has = Detect();
  return has;
}

}  // namespace rs
