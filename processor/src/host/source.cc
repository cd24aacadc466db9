#include "host/source.h"

#include <google/protobuf/json/json.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "base/status.h"
#include "recstrata/host/host_config.pb.h"

namespace fs = std::filesystem;

namespace rs::host {

std::set<int64_t> VersionPolicy::Select(const std::map<int64_t, std::string>& complete) const {
  std::set<int64_t> out;
  if (kind == kAll) {
    for (const auto& [v, dir] : complete) out.insert(v);
  } else if (kind == kLatest) {
    int n = 0;
    for (auto it = complete.rbegin(); it != complete.rend() && n < num_latest; ++it, ++n) out.insert(it->first);
  } else {
    for (int64_t v : versions)
      if (complete.count(v)) out.insert(v);
  }
  return out;
}

std::string VersionPolicy::Describe() const {
  if (kind == kAll) return "all";
  if (kind == kLatest) return num_latest == 1 ? "latest" : "latest:" + std::to_string(num_latest);
  std::string s = "specific:";
  for (size_t i = 0; i < versions.size(); ++i) s += (i ? "," : "") + std::to_string(versions[i]);
  return s;
}

VersionPolicy PolicyFromProto(const recstrata::host::VersionPolicy& p, const std::string& model) {
  VersionPolicy out;
  switch (p.policy_case()) {
    case recstrata::host::VersionPolicy::kAll:
      out.kind = VersionPolicy::kAll;
      break;
    case recstrata::host::VersionPolicy::kSpecific: {
      out.kind = VersionPolicy::kSpecific;
      for (int64_t v : p.specific().versions()) {
        if (v < 1)
          Fail(RS_ERR_INVALID_ARGUMENT, "model '" + model + "': specific version " + std::to_string(v) + " is not >= 1");
        out.versions.push_back(v);
      }
      std::sort(out.versions.begin(), out.versions.end());
      out.versions.erase(std::unique(out.versions.begin(), out.versions.end()), out.versions.end());
      if (out.versions.empty())
        Fail(RS_ERR_INVALID_ARGUMENT, "model '" + model + "': the specific policy needs at least one version");
      break;
    }
    case recstrata::host::VersionPolicy::kLatest:
      if (p.latest().num_versions() > 1000000)
        Fail(RS_ERR_INVALID_ARGUMENT, "model '" + model + "': latest.num_versions is too large");
      out.num_latest = std::max<int>(1, static_cast<int>(p.latest().num_versions()));
      break;
    default:
      break;  // latest 1
  }
  return out;
}

VersionPolicy ParsePolicyJson(const char* json, const std::string& model) {
  if (json == nullptr || *json == '\0') Fail(RS_ERR_INVALID_ARGUMENT, "policy JSON is empty");
  recstrata::host::VersionPolicy pb;
  auto st = google::protobuf::json::JsonStringToMessage(json, &pb);
  if (!st.ok())
    Fail(RS_ERR_INVALID_ARGUMENT, "model '" + model + "': bad version policy JSON (" + std::string(st.message()) +
                                      "); expected {\"latest\":{\"num_versions\":N}}, {\"all\":{}} or "
                                      "{\"specific\":{\"versions\":[...]}}");
  return PolicyFromProto(pb, model);
}

static bool ParseVersionName(const std::string& name, int64_t* v) {
  if (name.empty() || name.size() > 18 || name.find_first_not_of("0123456789") != std::string::npos) return false;
  *v = std::stoll(name);
  return *v >= 1;
}

Scan ScanVersions(const std::string& base, const VersionPolicy& policy) {
  Scan scan;
  std::error_code ec;
  fs::directory_iterator it(base, ec), end;
  if (ec) {
    scan.error = "cannot list base path " + base + ": " + ec.message();
    return scan;
  }
  for (; it != end; it.increment(ec)) {
    if (ec) {
      scan.error = "cannot list base path " + base + ": " + ec.message();
      scan.complete.clear();
      scan.incomplete.clear();
      return scan;
    }
    int64_t v;
    std::error_code ec2;
    if (!ParseVersionName(it->path().filename().string(), &v) || !it->is_directory(ec2)) continue;
    bool done = false;
    for (const char* marker : {"saved_model.pb", "saved_model.pbtxt", "bundle.json"})
      done = done || fs::is_regular_file(it->path() / marker, ec2);
    if (done)
      scan.complete[v] = it->path().string();
    else
      scan.incomplete.push_back(v);
  }
  std::sort(scan.incomplete.begin(), scan.incomplete.end());
  scan.aspired = policy.Select(scan.complete);
  return scan;
}

std::string Fingerprint(const std::string& dir) {
  std::vector<std::string> items;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, ec), end;
  if (ec) return "";
  for (; it != end; it.increment(ec)) {
    if (ec) break;
    std::error_code ec2;
    // Deltas (bundle/delta.h) arrive while a version serves and are applied in
    // place; they do not make it another version.
    if (it.depth() == 0 && it->path().filename() == "deltas" && it->is_directory(ec2)) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec2)) continue;
    auto size = it->file_size(ec2);
    auto mtime = it->last_write_time(ec2).time_since_epoch().count();
    items.push_back(fs::relative(it->path(), dir, ec2).string() + ":" + std::to_string(size) + ":" +
                    std::to_string(mtime));
  }
  std::sort(items.begin(), items.end());
  std::string out;
  for (const auto& s : items) out += s + "\n";
  return out;
}

}  // namespace rs::host
