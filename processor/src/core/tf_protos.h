// The TensorFlow protocol buffers the core reads and writes (ConfigProto,
// RunOptions, RunMetadata, MetaGraphDef), behind byte strings and our own
// types. With the graph rewrite (core/graph_*), the only file that includes TensorFlow's proto headers:
// TensorFlow's messages are compiled into its (uninstrumented) libraries, and
// in a ThreadSanitizer build protobuf changes message layouts, so this file is
// built without TSan (processor/CMakeLists.txt) while the rest of the library
// is checked. Thread-safe, pure functions.
#ifndef RECSTRATA_CORE_TF_PROTOS_H_
#define RECSTRATA_CORE_TF_PROTOS_H_

#include <cstddef>
#include <memory>
#include <string>

#include "core/config.h"
#include "core/signature.h"
#include "tensorflow/c/c_api.h"

namespace rs {

// The signature `name` of a serialized MetaGraphDef (inputs and outputs sorted
// by alias). RS_ERR_CORRUPTION if the bytes do not parse, RS_ERR_NOT_FOUND if
// there is no such signature, RS_ERR_UNIMPLEMENTED for sparse/composite or
// unsupported dtypes.
std::shared_ptr<Signature> SignatureFromMetaGraph(const void* data, size_t size, const std::string& name,
                                                  const std::string& dir);

// Serialized ConfigProto of a model's session: thread counts, one inter-op
// pool per logical session when `session_pools`, the bf16 rewrite.
std::string SessionConfigBytes(const ModelConfig& cfg, bool session_pools);

// Serialized RunOptions: `base` (may be NULL) with inter_op_thread_pool = pool.
std::string RunOptionsWithPool(const TF_Buffer* base, int pool);

// Serialized RunOptions asking for a full trace and the partition graphs.
std::string FullTraceRunOptions();

// {"partition_graphs":[{"ops":{op:n}}...],"executed":{op:n}} of a serialized
// RunMetadata. RS_ERR_INTERNAL if it does not parse.
std::string OpCountsJson(const TF_Buffer* run_metadata);

}  // namespace rs

#endif  // RECSTRATA_CORE_TF_PROTOS_H_
