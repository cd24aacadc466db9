// RewrittenSavedModel: a SavedModel directory whose saved_model.pb is the
// graph-rewritten one (core/graph_rewrite.h), for TensorFlow's SavedModel
// loader to load. A private temporary directory (mkdtemp under $TMPDIR, else
// /tmp, mode 0700) holds the rewritten saved_model.pb and symlinks to the
// original's variables/, assets/ and assets.extra/; the destructor removes it
// (TensorFlow reads variables and assets during the load only).
//
// Not thread-safe (one loader owns one); distinct instances are independent.
#ifndef RECSTRATA_CORE_REWRITTEN_SAVEDMODEL_H_
#define RECSTRATA_CORE_REWRITTEN_SAVEDMODEL_H_

#include <memory>
#include <string>
#include <vector>

#include "core/graph_rewrite.h"

namespace rs {

class RewrittenSavedModel {
 public:
  // Rewrites `dir`'s saved_model.pb into `report`. NULL when no rule applied
  // or the model is not a binary saved_model.pb (report->note says which).
  // Throws rs::Error if the file cannot be read or parsed, or the temporary
  // directory cannot be made or written.
  static std::unique_ptr<RewrittenSavedModel> Make(const std::string& dir, const std::string& signature, GraphRewriteReport* report);
  ~RewrittenSavedModel();
  RewrittenSavedModel(const RewrittenSavedModel&) = delete;
  RewrittenSavedModel& operator=(const RewrittenSavedModel&) = delete;

  const std::string& path() const { return path_; }

 private:
  RewrittenSavedModel() = default;
  std::string path_;
  bool has_pb_ = false;
  std::vector<std::string> links_;
};

}  // namespace rs

#endif  // RECSTRATA_CORE_REWRITTEN_SAVEDMODEL_H_
