#include "core/rewritten_savedmodel.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "base/status.h"

namespace rs {

namespace {

bool Exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}

std::string Absolute(const std::string& p) {
  if (!p.empty() && p[0] == '/') return p;
  char buf[4096];
  if (::getcwd(buf, sizeof buf) == nullptr) Fail(RS_ERR_INTERNAL, "getcwd failed: " + std::string(std::strerror(errno)));
  return std::string(buf) + "/" + p;
}

}  // namespace

std::unique_ptr<RewrittenSavedModel> RewrittenSavedModel::Make(const std::string& dir, const std::string& signature, GraphRewriteReport* report) {
  const std::string pb = dir + "/saved_model.pb";
  if (!Exists(pb)) {
    report->note = "not rewritten: the model has no binary saved_model.pb";
    return nullptr;
  }
  std::ifstream in(pb, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in.good() && !in.eof()) Fail(RS_ERR_INTERNAL, "could not read " + pb);
  std::string rewritten = RewriteSavedModel(ss.str(), signature, report);
  if (rewritten.empty()) {
    report->note = "no rule applied";
    return nullptr;
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/recstrata-rewrite-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr)
    Fail(RS_ERR_INTERNAL, "could not make a directory for the rewritten graph (" + tmpl + "): " + std::strerror(errno));
  std::unique_ptr<RewrittenSavedModel> out(new RewrittenSavedModel());
  out->path_ = buf.data();
  {
    std::ofstream f(out->path_ + "/saved_model.pb", std::ios::binary | std::ios::trunc);
    out->has_pb_ = true;
    f.write(rewritten.data(), static_cast<std::streamsize>(rewritten.size()));
    f.close();
    if (!f) Fail(RS_ERR_INTERNAL, "could not write the rewritten graph to " + out->path_);
  }
  const std::string abs = Absolute(dir);
  for (const char* sub : {"variables", "assets", "assets.extra"}) {
    std::string target = abs + "/" + sub;
    if (!Exists(target)) continue;
    std::string link = out->path_ + "/" + sub;
    if (::symlink(target.c_str(), link.c_str()) != 0)
      Fail(RS_ERR_INTERNAL, "could not link " + link + " -> " + target + ": " + std::strerror(errno));
    out->links_.push_back(link);
  }
  return out;
}

RewrittenSavedModel::~RewrittenSavedModel() {
  for (const auto& l : links_) ::unlink(l.c_str());
  if (has_pb_) ::unlink((path_ + "/saved_model.pb").c_str());
  ::rmdir(path_.c_str());
}

}  // namespace rs
