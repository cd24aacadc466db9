// TEMPORARY ADAPTER (issue 5, until the store component's Store::Open lands):
// a weak definition so that the library links while src/store is incomplete.
// The store's real (strong) definition replaces it automatically at link
// time; delete this file once store.cc is committed.
#include "api/status.h"
#include "store/store.h"

namespace rs {
namespace store {

__attribute__((weak)) std::unique_ptr<Store> Store::Open(const std::string& dir,
                                                        const std::string&) {
  Fail(RS_ERR_UNIMPLEMENTED, "the tiered store is not built into this library (store " + dir +
                                 ")");
}

}  // namespace store
}  // namespace rs
