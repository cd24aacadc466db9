/*
 * recstrata.h — the one public header of librecstrata.so.
 *
 * recstrata is an embeddable inference processor for recommendation models:
 * TensorFlow SavedModels (or recstrata model bundles) run in a SessionGroup,
 * with sparse embeddings read from a tiered store (DRAM cache over an SSD
 * hash store).
 *
 * Conventions (the same for every function below; docs/c-abi.md says more):
 *
 *  - C99-clean. Everything not marked RS_API is hidden.
 *  - Errors: fallible functions return an rs_status (RS_OK == 0) and take a
 *    last argument `rs_error** error`. When it is non-NULL and the call fails,
 *    *error receives a new error object (code + message) that the caller owns
 *    and releases with rs_error_free(). Pass NULL to ignore messages. There is
 *    no thread-local "last error": the message travels with the call, which
 *    is what Go hosts (goroutines hop OS threads) need.
 *  - No C++ exception ever crosses this boundary and nothing here aborts the
 *    host process, whatever bytes arrive.
 *  - Ownership: inputs are borrowed for the duration of the call only; the
 *    library never keeps a caller pointer. Memory the library returns is
 *    released by the library: rs_free() for buffers and strings, the matching
 *    *_free / *_close function for objects. Never call plain free() on it.
 *  - Handles are opaque. Every destroy/close/free function accepts NULL.
 *  - Threading is stated on each object; in short, a loaded model and an open
 *    store are shared read-mostly objects that many threads may use at once.
 *  - Evolution is append-only: signatures never change, new variants get a
 *    _v2 suffix, enums only grow.
 *
 * Lines between RS_CDEF_BEGIN and RS_CDEF_END are read verbatim (minus RS_API,
 * RS_NOEXCEPT and preprocessor lines) by the Python binding's cffi cdef, so keep them to
 * plain C declarations and integer #defines.
 */
#ifndef RECSTRATA_H_
#define RECSTRATA_H_

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#define RS_API __declspec(dllexport)
#else
#define RS_API __attribute__((visibility("default")))
#endif

/* Every entry point catches all exceptions at the boundary; C++ callers see
 * that as noexcept. */
#ifdef __cplusplus
#define RS_NOEXCEPT noexcept
#else
#define RS_NOEXCEPT
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* RS_CDEF_BEGIN */

/* ---- Version ---------------------------------------------------------- */

/* Compile-time version of this header. RS_VERSION_NUMBER is
 * major * 10000 + minor * 100 + patch. RS_ABI_VERSION changes only when an
 * existing declaration would change meaning (it never should). */
#define RS_VERSION_MAJOR 0
#define RS_VERSION_MINOR 1
#define RS_VERSION_PATCH 0
#define RS_VERSION_NUMBER 100
#define RS_ABI_VERSION 1

/* Runtime version of the loaded library; compare with RS_VERSION_NUMBER to
 * detect a header/library mismatch. Thread-safe, never fails. */
RS_API int rs_version_number(void) RS_NOEXCEPT;
RS_API const char* rs_version_string(void) RS_NOEXCEPT; /* static string, do not free */
RS_API int rs_abi_version(void) RS_NOEXCEPT;

/* ---- Status and errors ------------------------------------------------ */

/* Status codes. New codes may be added; treat unknown ones as errors. */
typedef enum rs_status {
  RS_OK = 0,
  RS_ERR_INVALID_ARGUMENT = 1,   /* bad input: names, dtypes, shapes, bytes */
  RS_ERR_NOT_FOUND = 2,          /* missing file, model, signature, table */
  RS_ERR_ALREADY_EXISTS = 3,
  RS_ERR_FAILED_PRECONDITION = 4,/* object in the wrong state for the call */
  RS_ERR_OUT_OF_RANGE = 5,
  RS_ERR_IO = 6,                 /* the OS refused a read/write/fsync */
  RS_ERR_CORRUPTION = 7,         /* checksum or structure mismatch on disk */
  RS_ERR_INCOMPATIBLE = 8,       /* written by an incompatible format version */
  RS_ERR_RESOURCE_EXHAUSTED = 9, /* out of memory or over a configured cap */
  RS_ERR_UNIMPLEMENTED = 10,
  RS_ERR_INTERNAL = 11           /* a bug in recstrata or TensorFlow */
} rs_status;

typedef struct rs_error rs_error;

/* Accessors of an error object. The message is valid until rs_error_free.
 * All three are NULL-safe (NULL reads as RS_OK / ""). Thread-compatible: an
 * error belongs to the caller that received it. */
RS_API int rs_error_code(const rs_error* error) RS_NOEXCEPT;
RS_API const char* rs_error_message(const rs_error* error) RS_NOEXCEPT;
RS_API void rs_error_free(rs_error* error) RS_NOEXCEPT;

/* Static name of a status code ("RS_ERR_NOT_FOUND"), "RS_UNKNOWN" otherwise. */
RS_API const char* rs_status_name(int code) RS_NOEXCEPT;

/* Releases any buffer or string returned by this library (JSON texts,
 * serialized responses). NULL-safe. Thread-safe. */
RS_API void rs_free(void* ptr) RS_NOEXCEPT;

/* ---- Tensors ---------------------------------------------------------- */

/* Element types. The numbers equal TensorFlow's TF_DataType and the
 * ArrayDataType of DeepRec's predict.proto, so they travel unchanged. */
typedef enum rs_dtype {
  RS_DT_INVALID = 0,
  RS_DT_FLOAT = 1,
  RS_DT_DOUBLE = 2,
  RS_DT_INT32 = 3,
  RS_DT_UINT8 = 4,
  RS_DT_INT16 = 5,
  RS_DT_INT8 = 6,
  RS_DT_STRING = 7,
  RS_DT_INT64 = 9,
  RS_DT_BOOL = 10,
  RS_DT_BFLOAT16 = 14,
  RS_DT_UINT16 = 17,
  RS_DT_HALF = 19
} rs_dtype;

/* One element of a string tensor: bytes, not NUL-terminated. */
typedef struct rs_bytes {
  const char* data;
  size_t size;
} rs_bytes;

/* A view of a dense row-major tensor.
 * As an input: every pointer is borrowed for the duration of the call.
 *   `data` holds element_count(shape) elements of `dtype`; for RS_DT_STRING
 *   it points to an array of rs_bytes. `byte_size` is the size of that array
 *   in bytes and is checked against the shape. Inputs aligned to 64 bytes are
 *   handed to TensorFlow without a copy.
 * As an output (from rs_result_output): every pointer is owned by the
 *   rs_result and valid until rs_result_free. */
typedef struct rs_tensor {
  const char* name;      /* signature alias (input or output key) */
  int dtype;             /* an rs_dtype */
  int32_t ndim;
  const int64_t* shape;  /* ndim entries, all >= 0 */
  const void* data;
  size_t byte_size;
} rs_tensor;

/* ---- Models ----------------------------------------------------------- */

/* A loaded model: a SavedModel signature (or a recstrata bundle) served by a
 * SessionGroup. Immutable once open.
 * Threading: rs_model_run, rs_model_predict, rs_model_describe_json,
 * rs_model_stats_json, rs_model_trace_json, rs_model_serving_info and the
 * signature accessors may be called by any number of threads at once on the
 * same model. rs_model_close must not overlap any other call on that model
 * (the host must stop its callers first); results (rs_result) and buffers
 * already returned stay valid after it. Different models are independent.
 * A bundle model owns split_parts - 1 worker threads (see split_min_batch):
 * a large call that finds no other call of the model in flight runs parts
 * of its rows on them while the calling thread runs the first part. */
typedef struct rs_model rs_model;

/* Opens a model.
 * `model_dir`: a SavedModel directory or a recstrata bundle directory. May be
 *   NULL when the config names `savedmodel_dir`.
 * `config_json`: NULL, "" or a JSON object. Keys (DeepRec model_config names):
 *   signature_name ("serving_default"), session_num (1),
 *   select_session_policy ("MOD" | "RR" | "LEAST_LOADED"; "MOD"),
 *   use_per_session_threads (false), cpusets ("0-1;2-3": one core set per
 *   session; inline sessions pin the calling thread for the duration of a
 *   run, pooled sessions pin their own pool threads),
 *   inter_op_parallelism_threads (-1: ops run inline in the caller's
 *   thread), intra_op_parallelism_threads (1), warmup_file_name (a
 *   serialized PredictRequest), warmup_runs (5; 0 disables),
 *   serialize_protocol ("protobuf"), savedmodel_dir, tags ("serve"),
 *   precision ("fp32" | "bf16": the dense network's matmuls in bfloat16 with
 *   fp32 accumulation; RS_ERR_FAILED_PRECONDITION on a CPU without
 *   AVX512-BF16 or AMX-BF16),
 *   and for bundles split_min_batch (64: calls of at least this many rows
 *   that have the model to themselves are cut into row ranges served at
 *   once, with identical outputs; 0 never splits) and split_parts (the CPUs
 *   the process may use, at most 8; 1 never splits), and the bundle serving
 *   options ev_storage_type ("DRAM" | "DRAM+SSDHASH", DeepRec's names),
 *   ev_storage_size (DRAM bytes per table), bundle_store_tiers ("dram" |
 *   "dram+ssd"; wins over ev_storage_type), bundle_dram_capacity_bytes,
 *   bundle_cache_policy ("lfu" | "lru"), bundle_store_dir (serve the tables
 *   from another store directory) and bundle_read_path ("pread" | "mmap").
 *   Unknown DeepRec keys are accepted and ignored; malformed values are an
 *   RS_ERR_INVALID_ARGUMENT. docs/processor.md explains every key.
 * Warmup runs on every session before this returns (generated inputs that
 *   the model rejects do not fail the open; see "warmup" in describe_json;
 *   a warmup file that fails does).
 * A directory holding bundle.json is opened as a recstrata bundle
 *   (RS_ERR_UNIMPLEMENTED if bundle support is not built in).
 * Thread-safe (several models may be opened at once).
 * On success *out receives the model; on failure *out is set to NULL. */
RS_API int rs_model_open(const char* model_dir, const char* config_json,
                         rs_model** out, rs_error** error) RS_NOEXCEPT;

/* Closes a model and frees everything it owns. NULL-safe. */
RS_API void rs_model_close(rs_model* model) RS_NOEXCEPT;

/* Signature description. Indices run from 0 to count-1. The returned
 * rs_tensor has name, dtype, ndim and shape set (-1 marks an unknown
 * dimension; ndim -1 an unknown rank); data is NULL. Pointers stay valid
 * until rs_model_close. Out-of-range index: RS_ERR_OUT_OF_RANGE. */
RS_API size_t rs_model_num_inputs(const rs_model* model) RS_NOEXCEPT;
RS_API size_t rs_model_num_outputs(const rs_model* model) RS_NOEXCEPT;
RS_API int rs_model_input(const rs_model* model, size_t index, rs_tensor* out,
                          rs_error** error) RS_NOEXCEPT;
RS_API int rs_model_output(const rs_model* model, size_t index,
                           rs_tensor* out, rs_error** error) RS_NOEXCEPT;

/* JSON description of the model: signature inputs/outputs (dtype, shape),
 * session group layout, bundle features when serving a bundle. The string is
 * released with rs_free. */
RS_API int rs_model_describe_json(const rs_model* model, char** out_json,
                                  rs_error** error) RS_NOEXCEPT;

/* JSON counters of the model: requests, errors, per-session calls and
 * in-flight counts, latency summary, embedding tier hits when serving a
 * bundle. Released with rs_free. */
RS_API int rs_model_stats_json(const rs_model* model, char** out_json,
                               rs_error** error) RS_NOEXCEPT;

/* The result of one run: the requested outputs, owned together. */
typedef struct rs_result rs_result;

/* Runs the model once.
 * `inputs`: n_inputs tensors keyed by signature input alias; every input of
 *   the signature must be given exactly once, with its dtype, and with a
 *   shape compatible with the signature.
 * `output_names`: n_outputs aliases to fetch; n_outputs == 0 fetches every
 *   output in signature order.
 * On success *out receives a result (release with rs_result_free); it
 * stays valid after rs_model_close. On failure *out is set to NULL.
 * Errors: RS_ERR_INVALID_ARGUMENT (an input missing, repeated, unknown, of
 * the wrong dtype, shape or byte size; an unknown output name; NULL
 * arguments), RS_ERR_RESOURCE_EXHAUSTED (out of memory), RS_ERR_INTERNAL
 * (TensorFlow failed the run; the message carries its status). */
RS_API int rs_model_run(rs_model* model, const rs_tensor* inputs,
                        size_t n_inputs, const char* const* output_names,
                        size_t n_outputs, rs_result** out, rs_error** error) RS_NOEXCEPT;

/* Outputs of a result, in the order requested. Views stay valid until
 * rs_result_free. rs_result_find returns -1 for an unknown name. A result
 * may be read by several threads; it must be freed once. */
RS_API size_t rs_result_count(const rs_result* result) RS_NOEXCEPT;
RS_API int rs_result_output(const rs_result* result, size_t index,
                            rs_tensor* out, rs_error** error) RS_NOEXCEPT;
RS_API int64_t rs_result_find(const rs_result* result, const char* name) RS_NOEXCEPT;
RS_API void rs_result_free(rs_result* result) RS_NOEXCEPT;

/* DeepRec wire format: `request` is a serialized tensorflow.eas.PredictRequest
 * (schema: processor/proto/recstrata/wire/predict.proto; docs/processor.md). On success *out_response receives a serialized
 * PredictResponse of *out_size bytes, released with rs_free. A request of
 * size 0 returns the signature description as JSON text instead (as DeepRec
 * does). Thread-safe like rs_model_run. */
RS_API int rs_model_predict(rs_model* model, const void* request,
                            size_t request_size, void** out_response,
                            size_t* out_size, rs_error** error) RS_NOEXCEPT;

/* Runs one generated warmup request (batch 1) on session 0 with
 * RunOptions FULL_TRACE and returns JSON:
 *   {"partition_graphs":[{"ops":{"<OpType>":count,...}},...],
 *    "executed":{"<OpType>":count,...}}
 * ("ops": nodes of each executed partition graph after Grappler/oneDNN
 * rewrites; "executed": op types seen in the step stats). Used to prove that
 * fused oneDNN kernels ran. Released with rs_free. Thread-safe like
 * rs_model_run (slow: for diagnostics, not serving). */
RS_API int rs_model_trace_json(rs_model* model, char** out_json,
                               rs_error** error) RS_NOEXCEPT;

/* Serialized ServingModelInfo{model_path} (predict.proto), as DeepRec's
 * get_serving_model_info returns it. *out is released with rs_free.
 * Thread-safe. */
RS_API int rs_model_serving_info(const rs_model* model, void** out,
                                 size_t* out_size, rs_error** error) RS_NOEXCEPT;

/* TEST HOOKS, outside the append-only promise: may change or go away in any
 * release. Bundle key derivation, exposed for cross-language parity tests
 * (the serving path uses the same code). `scheme_json` is a key scheme as in a
 * bundle manifest (recstrata.training.keys KeyScheme.to_dict()). Writes the
 * row keys of n ids as [n, S] int64 (S = sub-tables, also stored in
 * *out_num_subtables when non-NULL); out_capacity is the element count of
 * out_keys (too small: RS_ERR_OUT_OF_RANGE, *out_num_subtables still set).
 * rs_bundle_string_ids maps string ids to int64 ids (FNV-1a 64).
 * Thread-safe, pure. See docs/bundle-format.md. */
RS_API int rs_bundle_row_keys(const char* scheme_json, const int64_t* ids,
                              size_t n, int64_t* out_keys, size_t out_capacity,
                              size_t* out_num_subtables, rs_error** error) RS_NOEXCEPT;
RS_API int rs_bundle_string_ids(const rs_bytes* strings, size_t n,
                                int64_t* out_ids, rs_error** error) RS_NOEXCEPT;

/* CRC-32C (Castagnoli) of `size` bytes extending `crc` (0 to start): the
 * checksum of the store's records and of bundle delta files
 * (docs/bundle-format.md, "Deltas"); the training package's delta writer
 * uses it so that writer and reader share one implementation.
 * Thread-safe, pure. */
RS_API int rs_crc32c(const void* data, size_t size, uint32_t crc, uint32_t* out,
                     rs_error** error) RS_NOEXCEPT;

/* ---- Tiered embedding store -------------------------------------------- */

/* A directory of embedding tables: fixed-dimension float32 rows keyed by
 * int64 ids, in a DRAM tier over an optional SSD hash tier (docs/store.md).
 * Threading: rs_table_lookup may run on any number of threads at once,
 * concurrently with writes, and never waits for a writer or for compaction
 * (readers take no lock). Writes (upsert, delete, bulk load, flush, compact,
 * create table) may be called from any thread; they are serialized per table.
 * A reader sees each row either wholly before or wholly after a concurrent
 * write, never a mix. rs_store_close must not overlap any other call on that
 * store or its tables. rs_store_table, rs_store_table_names_json,
 * rs_store_stats_json and rs_table_dim are thread-safe; rs_store_create_table
 * is a write. One process at a time may open a store directory
 * (a second open fails with RS_ERR_FAILED_PRECONDITION). */
typedef struct rs_store rs_store;
/* A table inside a store. Owned by the store: valid until rs_store_close. */
typedef struct rs_table rs_table;

/* Opens (or creates) a store directory. `dir` NULL or "" opens a volatile
 * in-memory store (tiers "dram" only, nothing written to disk).
 * `options_json`: NULL, "" or a JSON object; absent keys take the value
 * recorded in the store's MANIFEST, else the default:
 *   create_if_missing (true), tiers ("dram" | "dram+ssd"; "dram"),
 *   dram_capacity_bytes (per table, "dram+ssd" only; 67108864),
 *   cache_policy ("lfu" | "lru"; "lfu"),
 *   compaction ("async" | "sync" | "off"; "async"),
 *   compaction_stale_ratio (0.34), durability ("fsync" | "none"; "fsync"),
 *   file_target_bytes (67108864), read_path ("mmap" | "pread"; "mmap"),
 *   shard_bits (4), skip_corrupt_records (false),
 *   cache_admission ("doorkeeper": admit an SSD row on its second recent
 *   miss | "always"; "doorkeeper"); per open only: recovery ("strict" |
 *   "repair" | "require_clean"; "strict"), verify ("auto" | "full": the
 *   clean-close record is required and every data file's whole-file CRC-32C
 *   is compared with it too; "auto").
 * Unknown keys and bad values: RS_ERR_INVALID_ARGUMENT. A store written by
 * another format version: RS_ERR_INCOMPATIBLE. Damage: RS_ERR_CORRUPTION
 * naming file and offset. After a clean close (rs_store_close records the
 * files, their sizes and the row counts in the MANIFEST) any bad record,
 * missing or resized file is damage; after a crash only a torn final batch
 * of the newest append file (never acknowledged) is cut, and is listed
 * under "dropped" in the stats. On failure *out is set to NULL. */
RS_API int rs_store_open(const char* dir, const char* options_json,
                         rs_store** out, rs_error** error) RS_NOEXCEPT;
/* Opens the store at `dir` with recovery "repair" (options_json as for
 * rs_store_open, or NULL), then closes it. Repair keeps every record that
 * passes its checksum, rewrites damaged files without the bad ones (the
 * damaged file is renamed to *.corrupt) and sets aside files with a bad
 * header. *out_report_json (may be NULL; rs_free it) receives the stats JSON
 * of that open: "dropped" lists every range left out as {table, file,
 * offset, bytes, records, reason}. Fails with RS_ERR_FAILED_PRECONDITION
 * while any process has the store open. */
RS_API int rs_store_repair(const char* dir, const char* options_json,
                           char** out_report_json, rs_error** error) RS_NOEXCEPT;
/* Stops background compaction and closes the store. NULL-safe. */
RS_API void rs_store_close(rs_store* store) RS_NOEXCEPT;

/* Creates a table. `dim` in 1..65536. `options_json`: NULL or a JSON object
 * with default_value (dim floats returned for missing keys; zeros) and
 * dram_capacity_bytes (overrides the store's value). RS_ERR_ALREADY_EXISTS if
 * the name is taken. `out` may be NULL. */
RS_API int rs_store_create_table(rs_store* store, const char* name,
                                 int32_t dim, const char* options_json,
                                 rs_table** out, rs_error** error) RS_NOEXCEPT;
/* Finds an existing table. RS_ERR_NOT_FOUND if absent. */
RS_API int rs_store_table(rs_store* store, const char* name, rs_table** out,
                          rs_error** error) RS_NOEXCEPT;
/* JSON array of the table names, released with rs_free. */
RS_API int rs_store_table_names_json(rs_store* store, char** out_json,
                                     rs_error** error) RS_NOEXCEPT;
/* Dimension of a table's rows (0 for NULL). Thread-safe. */
RS_API int32_t rs_table_dim(const rs_table* table) RS_NOEXCEPT;

/* Looks up n keys into `out` ([n, dim] float32, caller-allocated). Keys that
 * are absent get the table's default vector and found[i] = 0; present keys
 * found[i] = 1; `found` may be NULL. A record failing its checksum fails the
 * call with RS_ERR_CORRUPTION (a corrupt vector is never returned).
 * Thread-safe, lock-free; the hot path of the store. */
RS_API int rs_table_lookup(rs_table* table, const int64_t* keys, size_t n,
                           float* out, uint8_t* found, rs_error** error) RS_NOEXCEPT;

/* Inserts or overwrites n rows ([n, dim] float32) as one committed batch:
 * with durability "fsync" the batch survives kill -9 and power loss once
 * this returns; after a crash a batch is either wholly present or absent.
 * A key repeated in the batch takes its last row. */
RS_API int rs_table_upsert(rs_table* table, const int64_t* keys, size_t n,
                           const float* rows, rs_error** error) RS_NOEXCEPT;
/* Deletes n keys as one committed batch; absent keys are ignored. */
RS_API int rs_table_delete(rs_table* table, const int64_t* keys, size_t n,
                           rs_error** error) RS_NOEXCEPT;
/* Loads n rows ([n, dim] float32) as one committed batch written in large
 * sequential pieces to a file of its own (one fsync at the end), without
 * filling the DRAM cache in "dram+ssd" mode. For exporting trained tables. */
RS_API int rs_table_bulk_load(rs_table* table, const int64_t* keys, size_t n,
                              const float* rows, rs_error** error) RS_NOEXCEPT;

/* Makes every committed write durable (fsync), also with durability
 * "none". */
RS_API int rs_store_flush(rs_store* store, rs_error** error) RS_NOEXCEPT;
/* Compacts, in the calling thread, every data file whose stale share passes
 * compaction_stale_ratio. Readers are not blocked. */
RS_API int rs_store_compact(rs_store* store, rs_error** error) RS_NOEXCEPT;
/* JSON counters: {"dir", "tiers", "format_version", "last_sequence",
 * "recovery" ("new" | "clean" | "crash" | "repair": how the open found it),
 * "dropped" ([{table, file, offset, bytes, records, reason}]: what the open
 * left out), "tables": {name: {dim, rows, dram_rows, dram_bytes, dram_capacity_bytes,
 * dram_hits, dram_misses, ssd_hits, ssd_misses, evictions, admissions, files,
 * disk_bytes, live_payload_bytes, payload_bytes_written, disk_bytes_written,
 * write_amplification, compactions, compaction_bytes_written,
 * corrupt_records, recovered_records, truncated_bytes, remote_hits,
 * remote_misses, remote_errors, remote_corrupt, failed_lookups}}, and with
 * tiers "dram+redis" "remote": {url, model, key_space, round_trips, errors,
 * timeouts, moved, ask, bytes_in, bytes_out, ...} (docs/store.md)}. rs_free it. */
RS_API int rs_store_stats_json(rs_store* store, char** out_json,
                               rs_error** error) RS_NOEXCEPT;
/* Tiers "dram+redis" only (else RS_ERR_FAILED_PRECONDITION): the model's
 * serving pointer in Redis. op "get" | "publish" (this store's key space
 * becomes serving, the previous serving one backup) | "rollback" (serving
 * and backup swap, atomically) | "drop" (deletes key space `arg`; refused
 * for the serving or backup one) | "bind_base" (binds this store's key space
 * to the bundle whose bundle.json has CRC-32C `arg`, 8 lowercase hex digits;
 * the export does it so the bundle's deltas reach the space once;
 * RS_ERR_FAILED_PRECONDITION if it is bound to another). *out_json (rs_free it) receives
 * {"serving", "backup", "active"}. Redis failures are RS_ERR_IO.
 * Thread-safe. */
RS_API int rs_store_remote_pointer(rs_store* store, const char* op, const char* arg,
                                   char** out_json, rs_error** error) RS_NOEXCEPT;

/* ---- Core allocator ---------------------------------------------------- */

/* Divides CPUs between models the way the host's core allocator does: each
 * baseline gets a dedicated core set sized to its load (requests/s x CPU ms
 * per request / target utilization, at least its floor), the experiment
 * models share the cores the baselines leave; "dynamic" mode keeps
 * `previous` while every change is within the hysteresis. Exposed so that
 * planning tools and simulators use the allocator itself.
 * `request_json`: a CorePlanRequest (processor/proto/recstrata/config/
 * core_plan.proto; docs/cost-model.md): {"mode", "cpus", "models": [{"name",
 * "role", "requests_per_second", "cpu_ms_per_request", "p99_ms",
 * "latency_target_ms", "min_cores", "fixed_cpus"}], "target_utilization",
 * "min_shared_cores", "previous", "hysteresis"}. On success *out_plan_json is
 * a CorePlan {"mode", "models": [{"name", "role", "cpus", "cores",
 * "dedicated", "demand_cores", "reason"}], "shared_cpus", "changed",
 * "summary"}, released with rs_free; on failure it is NULL.
 * Errors: RS_ERR_INVALID_ARGUMENT (malformed request), RS_ERR_FAILED_PRECONDITION
 * (the floors do not fit the CPUs). Pure and thread-safe. */
RS_API int rs_core_plan_json(const char* request_json, char** out_plan_json,
                             rs_error** error) RS_NOEXCEPT;

/* ---- Model host -------------------------------------------------------- */

/* A host serves named models, each from a base directory of integer version
 * sub-directories (BASE/1/, BASE/2/, ...: SavedModels or bundles), the way
 * TF Serving lays them out (docs/host.md). It discovers versions, loads and
 * warms each one completely before it takes traffic, routes calls by model
 * name and version, keeps a version that is being replaced open until its
 * last call or lease is gone, and keeps the old version serving when a new
 * one fails to load (the failure is reported in rs_host_status_json).
 * Threading: every rs_host_* function except rs_host_close may be called by
 * any number of threads at once on the same host (passes that load or
 * unload versions are serialized inside; calls never wait for a load).
 * rs_host_close must not overlap other calls on that host (stop the callers
 * first, e.g. with rs_host_shutdown); leases may outlive it. */
typedef struct rs_host rs_host;
/* A reference to one serving version of a model: every call through it hits
 * that version, which stays open (also after it is unloaded, and after
 * rs_host_close) until rs_lease_release. Thread-safe like rs_model. */
typedef struct rs_lease rs_lease;

/* Opens a host. `config_json` (HostConfig in
 * processor/proto/recstrata/host/host_config.proto):
 *   {"models": [{"name": "ctr", "base_path": "/models/ctr",
 *                "version_policy": {"latest": {"num_versions": 1}}
 *                                | {"all": {}}
 *                                | {"specific": {"versions": [1, 3]}},
 *                "model_config": {...rs_model_open config keys...},
 *                "batching": {"max_batch_size": 32,
 *                             "max_queue_delay_us": 500}}],
 *    "model_config": {...keys for every model, a model's own keys win...},
 *    "batching": {...for every model without its own; absent: off...},
 *    "poll_interval_seconds": 5,   (background discovery; 0 or absent: off)
 *    "retry_seconds": 30,          (a failed version is retried after this,
 *                                   or as soon as its directory changed)
 *    "load_nice": 10,              (versions whose session config runs ops
 *                                   inline load on a thread at this higher
 *                                   nice value; 0..19, 0: off)
 *    "core_allocation": "static",  ("off", the default, "static" or
 *                                   "dynamic": the core allocator, below)
 *    "core_cpus": "0-31", "core_target_utilization": 0.7,
 *    "min_shared_cores": 1,
 *    "core_replan_interval_ms": 1000, "core_hysteresis": 0.2}  (dynamic only)
 * and per model "cores": {"role": "baseline" | "experiment",
 * "requests_per_second", "cpu_ms_per_request", "latency_target_ms",
 * "min_cores", "fixed_cpus"}. In static mode the host plans the cores at
 * open (rs_core_plan_json's rule: baselines on dedicated sets sized to their
 * load, experiments share the rest) and every version a model loads gets its
 * set as "cpusets" (once per session) and "split_parts" (at most its cores);
 * a model whose model_config sets "cpusets" is planned as fixed there and
 * left untouched (docs/host.md "Cores"). Floors that do not fit:
 * RS_ERR_FAILED_PRECONDITION. "dynamic" starts from the static plan, then a
 * host thread re-plans every core_replan_interval_ms (0: only through
 * rs_host_replan_cores) from the measured request rate, calling-thread CPU
 * time per request and p99 (against latency_target_ms), with the
 * allocator's hysteresis and floors, and re-pins the inline sessions of
 * every loaded version of a moved model at run time (a run in flight
 * finishes on its old set); a model it places whose sessions use inter-op
 * pools (inter_op_parallelism_threads >= 0) is refused,
 * RS_ERR_INVALID_ARGUMENT.
 * A version directory is complete once it holds saved_model.pb,
 * saved_model.pbtxt or bundle.json; other entries (3.tmp, files, 0) are
 * ignored. Versions are >= 1. With batching (max_batch_size > 1), concurrent
 * calls of a version whose signature has only numeric inputs and outputs
 * with an unknown first dimension are merged into one run of at most
 * max_batch_size rows, a call waiting at most max_queue_delay_us for
 * company; calls that cannot be merged (other outputs requested, other
 * trailing shapes, too many rows) run alone (docs/host.md). The first load
 * of every model happens before
 * this returns; a model whose first load failed does not fail the open (see
 * status). Unknown keys, bad values, duplicate or malformed names:
 * RS_ERR_INVALID_ARGUMENT. On failure *out is set to NULL. */
RS_API int rs_host_open(const char* config_json, rs_host** out,
                        rs_error** error) RS_NOEXCEPT;

/* Stops discovery, refuses new calls (RS_ERR_FAILED_PRECONDITION), closes
 * every version no lease holds, then frees the host. NULL-safe. */
RS_API void rs_host_close(rs_host* host) RS_NOEXCEPT;

/* The first half of rs_host_close, safe to call while other threads are
 * calling the host: stops discovery and makes every later call fail with
 * RS_ERR_FAILED_PRECONDITION ("host is closed"); calls already running
 * finish on their version, which closes after them. Returns once every
 * version no call or lease holds is closed. Idempotent; rs_host_close is
 * still needed to free the host. */
RS_API int rs_host_shutdown(rs_host* host,
                            rs_error** error) RS_NOEXCEPT;

/* Runs one discovery pass now for `model` (NULL: every model): loads the
 * versions the policy wants that are not serving, then retires the ones it
 * no longer wants (only once a wanted version serves). Returns when the pass
 * is done. Unknown model: RS_ERR_NOT_FOUND. Load failures are not an error
 * of this call (they are in the status). */
RS_API int rs_host_reload(rs_host* host, const char* model,
                          rs_error** error) RS_NOEXCEPT;

/* Replaces a model's version policy at run time (and removes a pin), then
 * runs a pass for it. `policy_json`: {"latest": {"num_versions": N}} |
 * {"all": {}} | {"specific": {"versions": [...]}}. Bad JSON:
 * RS_ERR_INVALID_ARGUMENT; unknown model: RS_ERR_NOT_FOUND. */
RS_API int rs_host_set_policy(rs_host* host, const char* model,
                              const char* policy_json, rs_error** error) RS_NOEXCEPT;

/* Pins a model to one version (rollback / roll forward): loads it if it is
 * not serving, then serves only it. version 0 removes the pin (back to the
 * policy of the config or of the last rs_host_set_policy). A version that is
 * not a complete directory: RS_ERR_NOT_FOUND; one that fails to load: its
 * load error, and the previous policy stays in force (nothing changes). */
RS_API int rs_host_pin(rs_host* host, const char* model, int64_t version,
                       rs_error** error) RS_NOEXCEPT;

/* Like rs_model_run on a version of `model`: `version` 0 is the default
 * (the newest serving version), any other must be serving. *out_version
 * (may be NULL) receives the version that answered. Errors: unknown model or
 * version RS_ERR_NOT_FOUND; no version serving or host closed
 * RS_ERR_FAILED_PRECONDITION; the model's own errors as rs_model_run. */
RS_API int rs_host_run(rs_host* host, const char* model, int64_t version,
                       const rs_tensor* inputs, size_t n_inputs,
                       const char* const* output_names, size_t n_outputs,
                       rs_result** out, int64_t* out_version,
                       rs_error** error) RS_NOEXCEPT;

/* Like rs_model_predict (DeepRec PredictRequest bytes in, PredictResponse
 * bytes out, released with rs_free) on a version of `model`; routing and
 * errors as rs_host_run. */
RS_API int rs_host_predict(rs_host* host, const char* model, int64_t version,
                           const void* request, size_t request_size,
                           void** out_response, size_t* out_size,
                           int64_t* out_version, rs_error** error) RS_NOEXCEPT;

/* Takes a lease on a version of `model` (routing and errors as
 * rs_host_run). Release it with rs_lease_release. */
RS_API int rs_host_acquire(rs_host* host, const char* model, int64_t version,
                           rs_lease** out, rs_error** error) RS_NOEXCEPT;
/* The version a lease holds (0 for NULL). */
RS_API int64_t rs_lease_version(const rs_lease* lease) RS_NOEXCEPT;
/* rs_model_run / rs_model_predict on the leased version (counted in the
 * host's metrics like rs_host_run). */
RS_API int rs_lease_run(rs_lease* lease, const rs_tensor* inputs,
                        size_t n_inputs, const char* const* output_names,
                        size_t n_outputs, rs_result** out, rs_error** error) RS_NOEXCEPT;
RS_API int rs_lease_predict(rs_lease* lease, const void* request,
                            size_t request_size, void** out_response,
                            size_t* out_size, rs_error** error) RS_NOEXCEPT;
/* Drops the lease; the version closes if it was retired and this was its
 * last reference. NULL-safe. Must not overlap other calls on that lease. */
RS_API void rs_lease_release(rs_lease* lease) RS_NOEXCEPT;
/* rs_model_describe_json of the leased version (its signature: input and
 * output names, dtypes, shapes), released with rs_free. Not counted as a
 * request. Thread-safe like rs_lease_run. */
RS_API int rs_lease_describe_json(const rs_lease* lease, char** out_json,
                                  rs_error** error) RS_NOEXCEPT;

/* JSON status, released with rs_free:
 *   {"models": [{"name", "base_path", "policy" ("latest", "latest:2", "all",
 *    "specific:1,3"), "pinned", "serving": [versions], "default_version"
 *    (0: none), "ready", "incomplete_versions", "base_error",
 *    "versions": [{"version", "state" ("loading" | "ready" | "failed" |
 *    "unloading" | "end"), "path", "error", "load_ms", "load_failures",
 *    "batching" ("on: ..." | "off" | "off: why"), "loader" ("nice +N" |
 *    "normal priority"), "session_cpus" (per session of the loaded version),
 *    "split_parts" (a bundle's row ranges per split call; 0: SavedModel),
 *    "in_flight", "requests", "errors"}]}], "polls", "poll_interval_seconds",
 *    "cores": {"mode", "cpus", "shared_cpus", "summary", "models": [{"name",
 *    "role", "cpus", "cores", "dedicated", "demand_cores", "reason", "source",
 *    "cpusets", "split_parts"}]}}; in dynamic mode "cores" also has
 *    "replan_interval_ms", "hysteresis", "decisions", "replans",
 *    "last_decision": {"reason", "changed", "forced", "apply_errors",
 *    "seconds_ago"}, and per model "measured": {"window_seconds",
 *    "requests", "requests_per_second", "cpu_ms_per_request", "p99_ms",
 *    "p99_over_last_bucket", "latency_target_ms"}. */
RS_API int rs_host_status_json(rs_host* host, char** out_json,
                               rs_error** error) RS_NOEXCEPT;

/* Prometheus text exposition (format 0.0.4), released with rs_free: per
 * model rs_host_model_ready, rs_host_loads_total,
 * rs_host_load_failures_total, rs_host_revivals_total (draining versions
 * put back instead of reloaded); per model and version rs_host_version_ready,
 * rs_host_load_seconds, rs_host_requests_total, rs_host_errors_total,
 * rs_host_request_duration_seconds (histogram of successful calls), and with
 * batching rs_host_batch_size (histogram of calls per run) and
 * rs_host_queue_depth; per bundle store table rs_host_store_{rows,dram_rows,dram_bytes}, and
 * rs_host_store_{dram,ssd}_{hits,misses}_total; the core plan as
 * rs_host_core_allocation_info and per model rs_host_model_cores,
 * rs_host_model_demand_cores, rs_host_model_cores_dedicated,
 * rs_host_model_cpus_info; in dynamic mode rs_host_core_decisions_total,
 * rs_host_core_replans_total and per model rs_host_model_measured_rps,
 * rs_host_model_measured_cpu_ms_per_request, rs_host_model_measured_p99_ms.
 * Counters of a version live as long as the host. */
RS_API int rs_host_metrics_text(rs_host* host, char** out_text,
                                rs_error** error) RS_NOEXCEPT;

/* Dynamic core allocation: one re-plan decision now, over the window since
 * the previous decision (as the host's re-plan thread makes every
 * core_replan_interval_ms): measure, plan with the allocator's dynamic rule,
 * re-pin if the assignment changed. *out_json (may be NULL; else released
 * with rs_free) receives the decision {"decision" (its number), "changed",
 * "forced", "reason", "apply_errors", "plan" (the CorePlan in force)}. Host
 * not in "dynamic" mode, or closed: RS_ERR_FAILED_PRECONDITION. Thread-safe:
 * decisions are serialized with the re-plan thread's; calls keep running. */
RS_API int rs_host_replan_cores(rs_host* host, char** out_json,
                                rs_error** error) RS_NOEXCEPT;

/* TEST HOOK, outside the append-only promise: may change or go away in any
 * release. Imposes CPUs on some of the models the allocator places
 * (`plan_json`: {"models": [{"name", "cpus"}]}) and applies that like a
 * re-plan (re-pins, counted in "replans", reason "forced ..."); later
 * decisions start from it. Unknown or opted-out models, CPUs outside the
 * divided ones, bad JSON: RS_ERR_INVALID_ARGUMENT; otherwise as
 * rs_host_replan_cores (same *out_json, same thread-safety). */
RS_API int rs_host_force_core_plan(rs_host* host, const char* plan_json,
                                   char** out_json, rs_error** error) RS_NOEXCEPT;

/* RS_CDEF_END */

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RECSTRATA_H_ */
