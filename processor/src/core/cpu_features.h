// What this CPU can do, for config options that need an instruction set.
#ifndef RECSTRATA_CORE_CPU_FEATURES_H_
#define RECSTRATA_CORE_CPU_FEATURES_H_

namespace rs {

// True when the CPU (and the OS, for the AVX-512 state) supports bfloat16
// arithmetic that oneDNN uses: AVX512-BF16 or AMX-BF16. The environment
// variable RECSTRATA_CPU_NO_BF16=1 makes it false, so that the refusal path
// can be tested on a machine that has BF16. Thread-safe.
bool CpuHasBf16();

}  // namespace rs

#endif  // RECSTRATA_CORE_CPU_FEATURES_H_
