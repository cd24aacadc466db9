// Directory helpers of the dynamic store's snapshots (tfops/dynamic_store.cc):
// POSIX calls that throw DynError (tfops/dyn_errors.h) on failure. The clone
// of a store directory is CloneStoreDir (tfops/dynamic_table.h).
#ifndef RECSTRATA_TFOPS_STORE_FILES_H_
#define RECSTRATA_TFOPS_STORE_FILES_H_

#include <string>

namespace rs {
namespace tfops {

bool IsDir(const std::string& p);
// mkdir -p
void MakeDirs(const std::string& p);
// rm -r; a missing path is no error.
void RemoveTree(const std::string& p);
// fsync of a file or directory, best effort (errors ignored).
void SyncPath(const std::string& p);

}  // namespace tfops
}  // namespace rs

#endif  // RECSTRATA_TFOPS_STORE_FILES_H_
