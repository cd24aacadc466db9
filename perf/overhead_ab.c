/*
 * overhead_ab.c — recstrata's own per-call overhead over the bare TensorFlow C
 * API, measured in ONE process with interleaved blocks so that load swings on
 * a shared machine hit every system alike (driven by perf/bench_overhead.py).
 *
 * Systems (same SavedModel, same threading config: inter -1, intra 1):
 *   tf_c_api          TF_SessionRun on input TF_Tensors built once (the floor)
 *   tf_fresh_tensors  TF_SessionRun on TF_Tensors made per call (TF_NewTensor
 *                     over the data, no copy): what any server pays for new
 *                     request data
 *   rs_model_run      rs_model_run on the same data (validation, selection,
 *                     tensor wrapping, result object)
 *   rs_model_predict  rs_model_predict on a serialized PredictRequest
 *                     (decode + run + encode)
 *   tf_fresh_session2 tf_fresh_tensors on a second bare session of the same
 *                     model: the session-to-session spread (weights placed
 *                     elsewhere in memory), to judge the rs figures, which
 *                     necessarily run on recstrata's own session
 * Rounds of BLOCK calls per system, rotating; the first WARM calls of each
 * block are dropped (cache refill after the previous system ran).
 *
 * Usage: overhead_ab SPEC_FILE CALLS_PER_SYSTEM
 * SPEC_FILE: the format of perf/serving_loop.c (written by bench_serving.py's
 * write_c_spec). Output: one line per system: "name median_us p99_us calls".
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recstrata.h"
#include "tensorflow/c/c_api.h"

#define BLOCK 50
#define WARM 5
#define NSYS 5
#define MAX_IN 256

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}
static int cmp(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}
static void die(const char* a, const char* b) {
  fprintf(stderr, "overhead_ab: %s: %s\n", a, b);
  exit(1);
}
static void* slurp(const char* p, size_t* n) {
  FILE* f = fopen(p, "rb");
  if (!f) die("open", p);
  fseek(f, 0, SEEK_END);
  *n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  void* b = malloc(*n + 1);
  if (fread(b, 1, *n, f) != *n) die("read", p);
  fclose(f);
  return b;
}
static void noop(void* a, size_t b, void* c) { (void)a; (void)b; (void)c; }

int main(int argc, char** argv) {
  if (argc < 3) die("usage", "overhead_ab SPEC_FILE CALLS");
  static char key[64], model[4096], hex[8192], rsc[8192], reqp[4096], alias[MAX_IN][256], ops[MAX_IN][512];
  static int idx[MAX_IN], dts[MAX_IN], nds[MAX_IN];
  static int64_t dims[MAX_IN][8];
  static void* data[MAX_IN];
  static size_t bytes[MAX_IN], offs[MAX_IN];
  static TF_Output tin[MAX_IN];
  static TF_Tensor* tval[MAX_IN];
  static rs_tensor rin[MAX_IN];
  int nin, nout, oidx;
  char oalias[256], oop[512];
  FILE* f = fopen(argv[1], "r");
  if (!f) die("open", argv[1]);
  if (fscanf(f, "%63s %4095s %63s %8191s %63s %8191s %63s %4095s %63s %d", key, model, key, hex, key, rsc, key, reqp,
             key, &nin) != 10 || nin > MAX_IN)
    die("spec", argv[1]);
  size_t stage_bytes = 0;
  for (int i = 0; i < nin; i++) {
    char path[4096];
    if (fscanf(f, "%255s %511s %d %d %d", alias[i], ops[i], &idx[i], &dts[i], &nds[i]) != 5) die("spec", "input");
    for (int d = 0; d < nds[i]; d++)
      if (fscanf(f, "%ld", &dims[i][d]) != 1) die("spec", "dims");
    if (fscanf(f, "%4095s", path) != 1) die("spec", "path");
    data[i] = slurp(path, &bytes[i]);
    offs[i] = stage_bytes;
    stage_bytes += (bytes[i] + 63) / 64 * 64;
  }
  if (fscanf(f, "%63s %d %255s %511s %d", key, &nout, oalias, oop, &oidx) != 5) die("spec", "outputs");
  fclose(f);

  rs_model* m = NULL;
  rs_error* e = NULL;
  if (rs_model_open(model, "{\"session_num\":1}", &m, &e)) die("rs_model_open", rs_error_message(e));

  size_t hl = strlen(hex) / 2;
  unsigned char* cfg = malloc(hl);
  for (size_t i = 0; i < hl; i++) sscanf(hex + 2 * i, "%2hhx", &cfg[i]);
  TF_Status* st = TF_NewStatus();
  TF_SessionOptions* so = TF_NewSessionOptions();
  TF_SetConfig(so, cfg, hl, st);
  TF_Graph* g = TF_NewGraph();
  const char* tags[] = {"serve"};
  TF_Session* s = TF_LoadSessionFromSavedModel(so, NULL, model, tags, 1, g, NULL, st);
  if (TF_GetCode(st)) die("TF_LoadSessionFromSavedModel", TF_Message(st));
  TF_SessionOptions* so2 = TF_NewSessionOptions();
  TF_SetConfig(so2, cfg, hl, st);
  TF_Graph* g2 = TF_NewGraph();
  TF_Session* s2 = TF_LoadSessionFromSavedModel(so2, NULL, model, tags, 1, g2, NULL, st);
  if (TF_GetCode(st)) die("TF_LoadSessionFromSavedModel", TF_Message(st));
  static TF_Output tin2[MAX_IN];
  char* stage = aligned_alloc(64, stage_bytes + 64);
  for (int i = 0; i < nin; i++) {
    tin[i].oper = TF_GraphOperationByName(g, ops[i]);
    tin[i].index = idx[i];
    if (!tin[i].oper) die("no op", ops[i]);
    tin2[i].oper = TF_GraphOperationByName(g2, ops[i]);
    tin2[i].index = idx[i];
    tval[i] = TF_AllocateTensor(dts[i], dims[i], nds[i], bytes[i]);
    memcpy(TF_TensorData(tval[i]), data[i], bytes[i]);
    memcpy(stage + offs[i], data[i], bytes[i]);
    rin[i].name = alias[i]; rin[i].dtype = dts[i]; rin[i].ndim = nds[i]; rin[i].shape = dims[i];
    rin[i].data = data[i]; rin[i].byte_size = bytes[i];
  }
  TF_Output tout = {TF_GraphOperationByName(g, oop), oidx};
  TF_Output tout2 = {TF_GraphOperationByName(g2, oop), oidx};
  size_t rn;
  void* req = slurp(reqp, &rn);
  const char* on[1] = {oalias};

  int N = atoi(argv[2]);
  double* lat[NSYS];
  int cnt[NSYS] = {0};
  for (int k = 0; k < NSYS; k++) lat[k] = malloc(sizeof(double) * (size_t)N);
  for (int round = 0; cnt[NSYS - 1] < N; round++) {
    for (int k = 0; k < NSYS; k++) {
      for (int j = 0; j < BLOCK && cnt[k] < N; j++) {
        double t = now_us();
        if (k == 0) {
          TF_Tensor* o = NULL;
          TF_SessionRun(s, NULL, tin, tval, nin, &tout, &o, 1, NULL, 0, NULL, st);
          if (TF_GetCode(st)) die("TF_SessionRun", TF_Message(st));
          TF_DeleteTensor(o);
        } else if (k == 1 || k == 4) {
          TF_Tensor* o = NULL;
          TF_Tensor* fresh[MAX_IN];
          for (int i = 0; i < nin; i++)
            fresh[i] = TF_NewTensor(dts[i], dims[i], nds[i], stage + offs[i], bytes[i], noop, NULL);
          TF_SessionRun(k == 1 ? s : s2, NULL, k == 1 ? tin : tin2, fresh, nin, k == 1 ? &tout : &tout2, &o, 1, NULL,
                        0, NULL, st);
          if (TF_GetCode(st)) die("TF_SessionRun", TF_Message(st));
          TF_DeleteTensor(o);
          for (int i = 0; i < nin; i++) TF_DeleteTensor(fresh[i]);
        } else if (k == 2) {
          rs_result* r;
          if (rs_model_run(m, rin, (size_t)nin, on, 1, &r, &e)) die("rs_model_run", rs_error_message(e));
          rs_result_free(r);
        } else if (k == 3) {
          void* o;
          size_t osz;
          if (rs_model_predict(m, req, rn, &o, &osz, &e)) die("rs_model_predict", rs_error_message(e));
          rs_free(o);
        }
        if (j >= WARM && round > 0) lat[k][cnt[k]++] = now_us() - t;
      }
    }
  }
  const char* names[NSYS] = {"tf_c_api", "tf_fresh_tensors", "rs_model_run", "rs_model_predict",
                             "tf_fresh_session2"};
  for (int k = 0; k < NSYS; k++) {
    qsort(lat[k], (size_t)N, sizeof(double), cmp);
    printf("%s %.2f %.2f %d\n", names[k], lat[k][N / 2], lat[k][(int)(N * 0.99)], N);
  }
  rs_model_close(m);
  TF_CloseSession(s, st);
  TF_DeleteSession(s, st);
  TF_CloseSession(s2, st);
  TF_DeleteSession(s2, st);
  return 0;
}
