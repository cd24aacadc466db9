// Reading and validating a bundle manifest (bundle.json, format versions 1..kFormatVersion).
//
// LoadManifest refuses, with a clear rs::Error, anything that is not a whole,
// well-formed bundle: missing or unparsable bundle.json (RS_ERR_CORRUPTION),
// a newer format or key-schema version (RS_ERR_INCOMPATIBLE), inconsistent
// tables/features (RS_ERR_INVALID_ARGUMENT), and dense-stage files whose size
// differs from the manifest (RS_ERR_CORRUPTION: damaged or half-written).
// The embedding rows themselves are checked by the store (checksummed records).
#ifndef RECSTRATA_BUNDLE_MANIFEST_H_
#define RECSTRATA_BUNDLE_MANIFEST_H_

#include <string>

#include "recstrata/bundle/manifest.pb.h"

namespace rs {
namespace bundle {

inline constexpr const char* kFormatName = "recstrata.bundle";
inline constexpr uint32_t kFormatVersion = 2;  // newest format this reader knows
// Largest manifest we read (a bundle with thousands of features is ~1 MiB).
inline constexpr size_t kMaxManifestBytes = 64u << 20;

// Reads `bundle_dir`/bundle.json and checks it (structure only; tables and
// key schemes are checked when the stage is built).
recstrata::bundle::Manifest LoadManifest(const std::string& bundle_dir);

// Parses a JSON text into `msg` (strict: unknown fields are errors unless
// ignore_unknown). Throws rs::Error(code, context + parser message).
void ParseJson(const std::string& text, google::protobuf::Message* msg, bool ignore_unknown,
               int code, const std::string& context);

// bundle_dir + "/" + rel, refusing absolute paths and ".." components.
std::string JoinInside(const std::string& bundle_dir, const std::string& rel,
                       const std::string& what);

}  // namespace bundle
}  // namespace rs

#endif  // RECSTRATA_BUNDLE_MANIFEST_H_
