// CPU lists in the kernel's text form ("0-3,8,10-11"), as used by cpusets,
// taskset and the core allocator's plans.
#ifndef RECSTRATA_SCHED_CPU_LIST_H_
#define RECSTRATA_SCHED_CPU_LIST_H_

#include <string>
#include <vector>

namespace rs {

// Parses "0-3,8" into sorted, distinct CPU ids. Throws rs::Error
// (RS_ERR_INVALID_ARGUMENT) naming `what` on malformed text or ids >= 4096.
std::vector<int> ParseCpuList(const std::string& text, const char* what);

// Formats sorted ids compactly: {0,1,2,3,8} -> "0-3,8". {} -> "".
std::string FormatCpuList(const std::vector<int>& cpus);

// The CPUs this process may run on (sched_getaffinity), sorted.
std::vector<int> AllowedCpus();

}  // namespace rs

#endif  // RECSTRATA_SCHED_CPU_LIST_H_
