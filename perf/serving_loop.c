/*
 * serving_loop.c — native baseline loops for perf/bench_serving.py.
 *
 * Modes (argv[1]):
 *   tf          the bare TensorFlow C API: TF_LoadSessionFromSavedModel once,
 *               input TF_Tensors built once, then TF_SessionRun in a loop.
 *               This is the floor every serving layer sits on.
 *   tf_fresh    the same, but every call builds its input TF_Tensors anew
 *               (TF_AllocateTensor + memcpy), as a host must for new data.
 *   rs_run      librecstrata's tensor API (rs_model_run) on the same inputs.
 *   rs_predict  librecstrata's wire API (rs_model_predict) on a serialized
 *               PredictRequest: decode + session selection + run + encode.
 * The process loads the model of SPEC_FILE once, prints "ready", then reads
 * commands on stdin:
 *   spec SPEC_FILE                 switches to the inputs (and request) of another
 *                                  spec of the same model; answers "done"
 *   run CALLERS SECONDS LAT_FILE   runs CALLERS native threads back to back for
 *                                  SECONDS after a 20-call warm-up each, writes
 *                                  int64 callers, one int64 count per thread,
 *                                  then every latency in ns (int64) thread by
 *                                  thread, and answers "done" (or "failed")
 *   quit
 *
 * Usage: serving_loop MODE SPEC_FILE
 * SPEC_FILE (written by bench_serving.py, whitespace separated):
 *   model_dir PATH
 *   config_hex HEX            serialized tensorflow.ConfigProto (tf mode)
 *   rs_config JSON_NO_SPACES  rs_model_open config (rs modes)
 *   request PATH              serialized PredictRequest (rs_predict)
 *   inputs N                  then N lines: alias graph_op graph_index dtype ndim dims... data_path
 *   outputs M                 then M lines: alias graph_op graph_index
 * Only fixed-width dtypes are supported (the benchmark model has no strings).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recstrata.h"
#include "tensorflow/c/c_api.h"

#define MAX_IO 128
#define MAX_DIMS 8

typedef struct {
  char alias[256], op[512];
  int index, dtype, ndim;
  int64_t dims[MAX_DIMS];
  void* data;
  size_t bytes;
} io_spec;

static char g_model_dir[4096], g_config_hex[8192], g_rs_config[8192], g_request_path[4096];
static io_spec g_in[MAX_IO], g_out[MAX_IO];
static int g_nin, g_nout;

/* tf mode */
static TF_Session* g_sess;
static TF_Output g_tf_in[MAX_IO], g_tf_out[MAX_IO];
static TF_Tensor* g_tf_vals[MAX_IO];
/* rs modes */
static rs_model* g_model;
static rs_tensor g_rs_in[MAX_IO];
static void* g_request;
static size_t g_request_size;

static int g_mode; /* 0 tf, 1 rs_run, 2 rs_predict, 3 tf_fresh */
static double g_seconds;
static pthread_barrier_t g_barrier;

static void die(const char* what, const char* msg) {
  fprintf(stderr, "serving_loop: %s: %s\n", what, msg);
  exit(1);
}

static void* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f) die("open", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void* buf = aligned_alloc(64, (size_t)(n + 64) / 64 * 64);
  if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) die("read", path);
  fclose(f);
  *size = (size_t)n;
  return buf;
}

static void parse_spec(const char* path) {
  FILE* f = fopen(path, "r");
  if (!f) die("open spec", path);
  char key[64];
  while (fscanf(f, "%63s", key) == 1) {
    if (!strcmp(key, "model_dir")) {
      if (fscanf(f, "%4095s", g_model_dir) != 1) die("spec", "model_dir");
    } else if (!strcmp(key, "config_hex")) {
      if (fscanf(f, "%8191s", g_config_hex) != 1) die("spec", "config_hex");
    } else if (!strcmp(key, "rs_config")) {
      if (fscanf(f, "%8191s", g_rs_config) != 1) die("spec", "rs_config");
    } else if (!strcmp(key, "request")) {
      if (fscanf(f, "%4095s", g_request_path) != 1) die("spec", "request");
    } else if (!strcmp(key, "inputs")) {
      if (fscanf(f, "%d", &g_nin) != 1 || g_nin > MAX_IO) die("spec", "inputs");
      for (int i = 0; i < g_nin; i++) {
        io_spec* s = &g_in[i];
        char data_path[4096];
        if (fscanf(f, "%255s %511s %d %d %d", s->alias, s->op, &s->index, &s->dtype, &s->ndim) != 5 ||
            s->ndim > MAX_DIMS)
          die("spec", "input line");
        for (int d = 0; d < s->ndim; d++)
          if (fscanf(f, "%ld", &s->dims[d]) != 1) die("spec", "dims");
        if (fscanf(f, "%4095s", data_path) != 1) die("spec", "data path");
        s->data = read_file(data_path, &s->bytes);
      }
    } else if (!strcmp(key, "outputs")) {
      if (fscanf(f, "%d", &g_nout) != 1 || g_nout > MAX_IO) die("spec", "outputs");
      for (int i = 0; i < g_nout; i++)
        if (fscanf(f, "%255s %511s %d", g_out[i].alias, g_out[i].op, &g_out[i].index) != 3)
          die("spec", "output line");
    } else {
      die("spec key", key);
    }
  }
  fclose(f);
}

static int hexval(char c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

static TF_Graph* g_graph;

/* Loads the session once (model_dir and config of the first spec). */
static void load_tf(void) {
  TF_Status* st = TF_NewStatus();
  g_graph = TF_NewGraph();
  TF_SessionOptions* opts = TF_NewSessionOptions();
  size_t n = strlen(g_config_hex) / 2;
  unsigned char* proto = malloc(n + 1);
  for (size_t i = 0; i < n; i++) proto[i] = (unsigned char)(hexval(g_config_hex[2 * i]) << 4 | hexval(g_config_hex[2 * i + 1]));
  TF_SetConfig(opts, proto, n, st);
  if (TF_GetCode(st) != TF_OK) die("TF_SetConfig", TF_Message(st));
  const char* tags[] = {"serve"};
  g_sess = TF_LoadSessionFromSavedModel(opts, NULL, g_model_dir, tags, 1, g_graph, NULL, st);
  if (TF_GetCode(st) != TF_OK) die("load", TF_Message(st));
  free(proto);
  TF_DeleteSessionOptions(opts);
  TF_DeleteStatus(st);
}

/* Builds the inputs of the current spec (called again after "spec PATH"). */
static void prepare_tf(void) {
  for (int i = 0; i < g_nin; i++) {
    TF_Operation* op = TF_GraphOperationByName(g_graph, g_in[i].op);
    if (!op) die("no input op", g_in[i].op);
    g_tf_in[i] = (TF_Output){op, g_in[i].index};
    if (g_tf_vals[i]) TF_DeleteTensor(g_tf_vals[i]);
    TF_Tensor* t = TF_AllocateTensor((TF_DataType)g_in[i].dtype, g_in[i].dims, g_in[i].ndim, g_in[i].bytes);
    if (!t || TF_TensorByteSize(t) != g_in[i].bytes) die("tensor size", g_in[i].alias);
    memcpy(TF_TensorData(t), g_in[i].data, g_in[i].bytes);
    g_tf_vals[i] = t;  /* built once, reused by every call (TF_SessionRun borrows inputs) */
  }
  for (int i = 0; i < g_nout; i++) {
    TF_Operation* op = TF_GraphOperationByName(g_graph, g_out[i].op);
    if (!op) die("no output op", g_out[i].op);
    g_tf_out[i] = (TF_Output){op, g_out[i].index};
  }
}

static void load_rs(void) {
  rs_error* err = NULL;
  if (rs_model_open(g_model_dir, g_rs_config, &g_model, &err) != RS_OK) die("rs_model_open", rs_error_message(err));
}

static void prepare_rs(void) {
  for (int i = 0; i < g_nin; i++) {
    g_rs_in[i] = (rs_tensor){g_in[i].alias, g_in[i].dtype, g_in[i].ndim, g_in[i].dims, g_in[i].data, g_in[i].bytes};
  }
  free(g_request);
  g_request = NULL;
  if (g_mode == 2) g_request = read_file(g_request_path, &g_request_size);
}

/* Reads a spec; frees the input data of the previous one. */
static void load_spec(const char* path) {
  for (int i = 0; i < g_nin; i++) free(g_in[i].data);
  g_nin = g_nout = 0;
  parse_spec(path);
}

static int call_once(TF_Status* st) {
  if (g_mode == 0 || g_mode == 3) {
    TF_Tensor* outs[MAX_IO];
    TF_Tensor* fresh[MAX_IO];
    TF_Tensor** ins = g_tf_vals;
    if (g_mode == 3) {
      for (int i = 0; i < g_nin; i++) {
        fresh[i] = TF_AllocateTensor((TF_DataType)g_in[i].dtype, g_in[i].dims, g_in[i].ndim, g_in[i].bytes);
        memcpy(TF_TensorData(fresh[i]), g_in[i].data, g_in[i].bytes);
      }
      ins = fresh;
    }
    TF_SessionRun(g_sess, NULL, g_tf_in, ins, g_nin, g_tf_out, outs, g_nout, NULL, 0, NULL, st);
    if (g_mode == 3)
      for (int i = 0; i < g_nin; i++) TF_DeleteTensor(fresh[i]);
    if (TF_GetCode(st) != TF_OK) return -1;
    for (int i = 0; i < g_nout; i++) TF_DeleteTensor(outs[i]);
    return 0;
  }
  rs_error* err = NULL;
  if (g_mode == 1) {
    rs_result* r = NULL;
    if (rs_model_run(g_model, g_rs_in, (size_t)g_nin, NULL, 0, &r, &err) != RS_OK) {
      fprintf(stderr, "rs_model_run: %s\n", rs_error_message(err));
      rs_error_free(err);
      return -1;
    }
    rs_result_free(r);
    return 0;
  }
  void* resp = NULL;
  size_t size = 0;
  if (rs_model_predict(g_model, g_request, g_request_size, &resp, &size, &err) != RS_OK) {
    fprintf(stderr, "rs_model_predict: %s\n", rs_error_message(err));
    rs_error_free(err);
    return -1;
  }
  rs_free(resp);
  return 0;
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct {
  int64_t* lat;
  size_t n, cap;
  int failed;
} worker_out;

static void* worker(void* arg) {
  worker_out* w = arg;
  TF_Status* st = TF_NewStatus();
  for (int i = 0; i < 20; i++)  /* warm-up */
    if (call_once(st)) { w->failed = 1; break; }
  pthread_barrier_wait(&g_barrier);
  int64_t end = now_ns() + (int64_t)(g_seconds * 1e9);
  while (!w->failed) {
    int64_t t0 = now_ns();
    if (call_once(st)) { w->failed = 1; break; }
    int64_t t1 = now_ns();
    if (w->n == w->cap) {
      w->cap = w->cap ? w->cap * 2 : 4096;
      w->lat = realloc(w->lat, w->cap * sizeof(int64_t));
    }
    w->lat[w->n++] = t1 - t0;
    if (t1 >= end) break;
  }
  if (w->failed && (g_mode == 0 || g_mode == 3)) fprintf(stderr, "TF_SessionRun: %s\n", TF_Message(st));
  TF_DeleteStatus(st);
  return NULL;
}

/* Runs `callers` threads for g_seconds and writes their latencies to `path`. */
static int measure(int callers, const char* path) {
  pthread_barrier_init(&g_barrier, NULL, (unsigned)callers);
  pthread_t th[64];
  worker_out outs[64];
  memset(outs, 0, sizeof(outs));
  for (int i = 0; i < callers; i++) pthread_create(&th[i], NULL, worker, &outs[i]);
  for (int i = 0; i < callers; i++) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&g_barrier);

  FILE* f = fopen(path, "wb");
  if (!f) die("open", path);
  int failed = 0;
  /* layout: int64 callers, callers x int64 count, then the latencies thread by thread */
  int64_t header = callers;
  fwrite(&header, sizeof(int64_t), 1, f);
  for (int i = 0; i < callers; i++) {
    int64_t n = (int64_t)outs[i].n;
    fwrite(&n, sizeof(int64_t), 1, f);
  }
  for (int i = 0; i < callers; i++) {
    fwrite(outs[i].lat, sizeof(int64_t), outs[i].n, f);
    failed |= outs[i].failed;
    free(outs[i].lat);
  }
  fclose(f);
  return failed;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s tf|tf_fresh|rs_run|rs_predict SPEC  (then commands on stdin)\n", argv[0]);
    return 2;
  }
  const char* modes[] = {"tf", "rs_run", "rs_predict", "tf_fresh"};
  g_mode = -1;
  for (int i = 0; i < 4; i++)
    if (!strcmp(argv[1], modes[i])) g_mode = i;
  if (g_mode < 0) die("mode", argv[1]);
  load_spec(argv[2]);
  int is_tf = g_mode == 0 || g_mode == 3;
  if (is_tf) { load_tf(); prepare_tf(); } else { load_rs(); prepare_rs(); }
  printf("ready\n");
  fflush(stdout);
  /* Commands: "run CALLERS SECONDS LAT_FILE" (answers "done" or "failed"), "quit".
   * The process stays loaded between runs so that the benchmark can
   * interleave systems in rounds without reloading the model. */
  char cmd[16], path[4096];
  int callers;
  while (scanf("%15s", cmd) == 1 && strcmp(cmd, "quit") != 0) {
    if (!strcmp(cmd, "spec")) {  /* other inputs (another batch size), same loaded model */
      if (scanf("%4095s", path) != 1) die("command", cmd);
      load_spec(path);
      if (is_tf) prepare_tf(); else prepare_rs();
      printf("done\n");
      fflush(stdout);
      continue;
    }
    if (strcmp(cmd, "run") != 0 || scanf("%d %lf %4095s", &callers, &g_seconds, path) != 3 || callers < 1 ||
        callers > 64)
      die("command", cmd);
    int failed = measure(callers, path);
    printf(failed ? "failed\n" : "done\n");
    fflush(stdout);
  }
  if (g_model) rs_model_close(g_model);
  return 0;
}
