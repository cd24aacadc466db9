#include "bundle/manifest.h"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "base/status.h"
#include "google/protobuf/json/json.h"

namespace rs {
namespace bundle {

void ParseJson(const std::string& text, google::protobuf::Message* msg, bool ignore_unknown,
               int code, const std::string& context) {
  google::protobuf::json::ParseOptions options;
  options.ignore_unknown_fields = ignore_unknown;
  auto status = google::protobuf::json::JsonStringToMessage(text, msg, options);
  if (!status.ok())
    Fail(static_cast<rs_status>(code), context + ": " + std::string(status.message()));
}

std::string JoinInside(const std::string& bundle_dir, const std::string& rel,
                       const std::string& what) {
  if (rel.empty()) Fail(RS_ERR_INVALID_ARGUMENT, "bundle manifest: " + what + " path is empty");
  if (rel[0] == '/' || rel == ".." || rel.rfind("../", 0) == 0 ||
      rel.find("/../") != std::string::npos ||
      (rel.size() >= 3 && rel.compare(rel.size() - 3, 3, "/..") == 0))
    Fail(RS_ERR_INVALID_ARGUMENT,
         "bundle manifest: " + what + " path '" + rel + "' must stay inside the bundle");
  return bundle_dir + "/" + rel;
}

namespace {

std::string ReadManifestText(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    Fail(RS_ERR_NOT_FOUND, "bundle manifest " + path + " is missing");
  if (!S_ISREG(st.st_mode)) Fail(RS_ERR_CORRUPTION, "bundle manifest " + path + " is not a file");
  if (static_cast<uint64_t>(st.st_size) > kMaxManifestBytes)
    Fail(RS_ERR_CORRUPTION, "bundle manifest " + path + " is larger than 64 MiB");
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail(RS_ERR_IO, "cannot read bundle manifest " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

recstrata::bundle::Manifest LoadManifest(const std::string& bundle_dir) {
  const std::string path = bundle_dir + "/bundle.json";
  const std::string text = ReadManifestText(path);
  if (text.find_first_not_of(" \t\r\n") == std::string::npos)
    Fail(RS_ERR_CORRUPTION, "bundle manifest " + path + " is empty (half-written bundle?)");

  // Pass 1, lenient: identify the format and version before judging fields a
  // newer writer may have added.
  recstrata::bundle::Manifest m;
  ParseJson(text, &m, /*ignore_unknown=*/true, RS_ERR_CORRUPTION,
            "bundle manifest " + path + " is not valid manifest JSON");
  if (m.format() != kFormatName)
    Fail(RS_ERR_CORRUPTION, "bundle manifest " + path + ": format is '" + m.format() +
                                "', expected '" + kFormatName + "'");
  if (m.format_version() == 0 || m.format_version() > kFormatVersion)
    Fail(RS_ERR_INCOMPATIBLE, "bundle " + bundle_dir + " has format version " +
                                  std::to_string(m.format_version()) +
                                  "; this library reads versions 1 to " +
                                  std::to_string(kFormatVersion));
  if (m.key_schema_version() != 1)
    Fail(RS_ERR_INCOMPATIBLE, "bundle " + bundle_dir + " uses key schema version " +
                                  std::to_string(m.key_schema_version()) +
                                  "; this library implements version 1");
  // Pass 2, strict: a manifest of a version we know has no fields we do not know.
  m.Clear();
  ParseJson(text, &m, /*ignore_unknown=*/false, RS_ERR_CORRUPTION,
            "bundle manifest " + path + " is malformed");

  if (m.dense().dir().empty())
    Fail(RS_ERR_CORRUPTION, "bundle manifest " + path + " names no dense stage");
  if (m.store().dir().empty() && m.tables_size() > 0)
    Fail(RS_ERR_CORRUPTION, "bundle manifest " + path + " names no store");
  if (m.files_size() == 0)
    Fail(RS_ERR_CORRUPTION, "bundle manifest " + path + " lists no files");

  // Every listed file must exist with its recorded size.
  for (const auto& f : m.files()) {
    const std::string p = JoinInside(bundle_dir, f.path(), "file");
    struct stat st;
    if (::stat(p.c_str(), &st) != 0)
      Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir + " is incomplete: " + f.path() +
                                  " is missing (damaged or half-written bundle)");
    if (static_cast<uint64_t>(st.st_size) != f.size())
      Fail(RS_ERR_CORRUPTION, "bundle " + bundle_dir + " is damaged: " + f.path() + " is " +
                                  std::to_string(st.st_size) + " bytes, the manifest says " +
                                  std::to_string(f.size()));
  }
  return m;
}

}  // namespace bundle
}  // namespace rs
