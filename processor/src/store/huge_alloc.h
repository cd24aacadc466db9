// Allocation of large read-mostly arrays (index arrays, row chunks) on
// transparent huge pages where the kernel allows it (THP "madvise" mode):
// random lookups over hundreds of MiB otherwise pay a TLB miss per access.
// numpy does the same for its arrays, which is what the np.take ceiling in
// perf/bench_store.py enjoys.
#ifndef RECSTRATA_STORE_HUGE_ALLOC_H_
#define RECSTRATA_STORE_HUGE_ALLOC_H_

#include <sys/mman.h>

#include <cstddef>
#include <cstdlib>
#include <new>

namespace rs {
namespace store {

constexpr size_t kHugePage = size_t{2} << 20;

// Throws std::bad_alloc on failure; release with FreeHuge.
inline void* AllocHuge(size_t bytes) {
  if (bytes < kHugePage) {
    void* p = std::malloc(bytes);
    if (!p) throw std::bad_alloc();
    return p;
  }
  size_t rounded = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, rounded);
  if (!p) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
  ::madvise(p, rounded, MADV_HUGEPAGE);  // advisory; failure is harmless
#endif
  return p;
}
inline void FreeHuge(void* p) { std::free(p); }

}  // namespace store
}  // namespace rs

#endif  // RECSTRATA_STORE_HUGE_ALLOC_H_
