// The source (TF Serving's file-system source): which versions of a model
// exist under its base directory, and which of them its policy wants served
// (the aspired versions). Opens nothing, holds no state: every Scan looks at
// the disk afresh. Thread-safe (pure functions).
//
// Layout: BASE/<n>/ with n a decimal integer >= 1 is a version (0 is not: a
// version argument of 0 means "the default"); it is
// complete once it holds saved_model.pb, saved_model.pbtxt or bundle.json
// (an incomplete one, a copy in progress, is reported, never aspired).
// Anything else under BASE (3.tmp, .3, files) is ignored.
#ifndef RECSTRATA_HOST_SOURCE_H_
#define RECSTRATA_HOST_SOURCE_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace recstrata::host {
class VersionPolicy;
}

namespace rs::host {

struct VersionPolicy {
  enum Kind { kLatest, kAll, kSpecific };
  Kind kind = kLatest;
  int num_latest = 1;
  std::vector<int64_t> versions;  // kSpecific: sorted, unique, non-empty

  // The versions to serve out of the complete ones on disk.
  std::set<int64_t> Select(const std::map<int64_t, std::string>& complete) const;
  // "latest", "latest:2", "all", "specific:1,3".
  std::string Describe() const;
  bool operator==(const VersionPolicy& o) const {
    return kind == o.kind && num_latest == o.num_latest && versions == o.versions;
  }
};

// From the config message. Throws rs::Error RS_ERR_INVALID_ARGUMENT.
VersionPolicy PolicyFromProto(const recstrata::host::VersionPolicy& p, const std::string& model);
// From JSON text ({"latest":{"num_versions":2}} | {"all":{}} |
// {"specific":{"versions":[1,3]}}). Throws RS_ERR_INVALID_ARGUMENT.
VersionPolicy ParsePolicyJson(const char* json, const std::string& model);

struct Scan {
  std::map<int64_t, std::string> complete;  // version -> directory
  std::vector<int64_t> incomplete;
  std::set<int64_t> aspired;
  std::string error;  // non-empty: BASE could not be listed (the rest is empty)
};

Scan ScanVersions(const std::string& base, const VersionPolicy& policy);

// (relative path, size, mtime) of every file under `dir`, as one string:
// changes while a copy into `dir` runs. "" when `dir` cannot be read.
std::string Fingerprint(const std::string& dir);

}  // namespace rs::host

#endif  // RECSTRATA_HOST_SOURCE_H_
