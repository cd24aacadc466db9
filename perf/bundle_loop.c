/*
 * bundle_loop.c — native caller loop for perf/bench_bundle.py: serves a
 * recstrata model (a bundle or a plain SavedModel) through rs_model_run from
 * native threads, cycling through R different prebuilt requests so that an
 * embedding cache is not flattered by one repeated request.
 *
 * Usage: bundle_loop MODE SPEC_FILE      (MODE is ignored; "rs_run")
 * SPEC_FILE (written by bench_bundle.py, whitespace separated):
 *   model_dir PATH
 *   rs_config JSON_NO_SPACES
 *   then one or more request sets (e.g. one per batch size), each:
 *   set
 *   requests R
 *   inputs N      then N lines: alias dtype ndim dims... data_prefix
 *                 (request r of that input is the file data_prefix.r.bin)
 * Protocol on stdin/stdout (like perf/serving_loop.c, plus a set index):
 *   prints "ready" once loaded, then
 *   run SET CALLERS SECONDS LAT_FILE  -> runs CALLERS threads back to back
 *       for SECONDS after a warm-up pass over every request of SET; writes
 *       int64 callers, one int64 count per thread, then the latencies in ns
 *       thread by thread; answers "done" (or "failed")
 *   quit
 * Only fixed-width dtypes (the benchmark model has int64 ids and floats).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recstrata.h"

#define MAX_IN 128
#define MAX_REQ 256
#define MAX_DIMS 4

typedef struct {
  char alias[256];
  int dtype, ndim;
  int64_t dims[MAX_DIMS];
  void* data[MAX_REQ];
  size_t bytes[MAX_REQ];
} in_spec;

#define MAX_SETS 8
typedef struct {
  in_spec in[MAX_IN];
  int nin, nreq;
} req_set;

static char g_model_dir[4096], g_rs_config[8192];
static req_set g_sets[MAX_SETS];
static int g_nsets;
static req_set* g_cur;
static rs_model* g_model;
static double g_seconds;
static pthread_barrier_t g_barrier;
static volatile int g_failed;

static void die(const char* what, const char* msg) {
  fprintf(stderr, "bundle_loop: %s: %s\n", what, msg);
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

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int run_one(int r) {
  rs_tensor in[MAX_IN];
  const in_spec* g_in = g_cur->in;
  const int g_nin = g_cur->nin;
  for (int i = 0; i < g_nin; ++i) {
    in[i].name = g_in[i].alias;
    in[i].dtype = g_in[i].dtype;
    in[i].ndim = g_in[i].ndim;
    in[i].shape = g_in[i].dims;
    in[i].data = g_in[i].data[r];
    in[i].byte_size = g_in[i].bytes[r];
  }
  rs_result* res = NULL;
  rs_error* err = NULL;
  int rc = rs_model_run(g_model, in, (size_t)g_nin, NULL, 0, &res, &err);
  if (rc != RS_OK) {
    fprintf(stderr, "bundle_loop: run: %s\n", rs_error_message(err));
    rs_error_free(err);
    return rc;
  }
  rs_result_free(res);
  return 0;
}

typedef struct {
  int id;
  int64_t* lat;
  size_t cap, count;
} thread_arg;

static void* worker(void* p) {
  thread_arg* a = (thread_arg*)p;
  const int g_nreq = g_cur->nreq;
  for (int r = 0; r < g_nreq; ++r)
    if (run_one(r)) g_failed = 1;
  pthread_barrier_wait(&g_barrier);
  double end = now_s() + g_seconds;
  int r = (a->id * 7) % g_nreq;
  for (;;) {
    double t0 = now_s();
    if (run_one(r)) { g_failed = 1; break; }
    double t1 = now_s();
    if (a->count == a->cap) {
      a->cap *= 2;
      a->lat = realloc(a->lat, a->cap * sizeof(int64_t));
    }
    a->lat[a->count++] = (int64_t)((t1 - t0) * 1e9);
    r = (r + 1) % g_nreq;
    if (t1 >= end) break;
  }
  return NULL;
}

static void load_spec(const char* path) {
  FILE* f = fopen(path, "r");
  if (!f) die("open", path);
  char key[64];
  while (fscanf(f, "%63s", key) == 1) {
    if (!strcmp(key, "model_dir")) {
      if (fscanf(f, "%4095s", g_model_dir) != 1) die("spec", "model_dir");
    } else if (!strcmp(key, "rs_config")) {
      if (fscanf(f, "%8191s", g_rs_config) != 1) die("spec", "rs_config");
    } else if (!strcmp(key, "set")) {
      if (g_nsets == MAX_SETS) die("spec", "too many sets");
      g_cur = &g_sets[g_nsets++];
    } else if (!strcmp(key, "requests")) {
      if (!g_cur) die("spec", "requests before set");
      if (fscanf(f, "%d", &g_cur->nreq) != 1 || g_cur->nreq < 1 || g_cur->nreq > MAX_REQ)
        die("spec", "requests");
    } else if (!strcmp(key, "inputs")) {
      if (!g_cur) die("spec", "inputs before set");
      if (fscanf(f, "%d", &g_cur->nin) != 1 || g_cur->nin < 1 || g_cur->nin > MAX_IN)
        die("spec", "inputs");
      for (int i = 0; i < g_cur->nin; ++i) {
        in_spec* s = &g_cur->in[i];
        char prefix[4096];
        if (fscanf(f, "%255s %d %d", s->alias, &s->dtype, &s->ndim) != 3 || s->ndim > MAX_DIMS)
          die("spec", "input");
        for (int d = 0; d < s->ndim; ++d)
          if (fscanf(f, "%ld", (long*)&s->dims[d]) != 1) die("spec", "dims");
        if (fscanf(f, "%4095s", prefix) != 1) die("spec", "data");
        for (int r = 0; r < g_cur->nreq; ++r) {
          char p[4200];
          snprintf(p, sizeof p, "%s.%d.bin", prefix, r);
          s->data[r] = read_file(p, &s->bytes[r]);
        }
      }
    } else {
      die("spec key", key);
    }
  }
  fclose(f);
}

int main(int argc, char** argv) {
  if (argc != 3) die("usage", "bundle_loop MODE SPEC_FILE");
  load_spec(argv[2]);
  rs_error* err = NULL;
  if (rs_model_open(g_model_dir, g_rs_config, &g_model, &err) != RS_OK)
    die("rs_model_open", rs_error_message(err));
  printf("ready\n");
  fflush(stdout);
  char cmd[64];
  while (scanf("%63s", cmd) == 1) {
    if (!strcmp(cmd, "quit")) break;
    if (strcmp(cmd, "run")) die("command", cmd);
    int set, callers;
    char lat_path[4096];
    if (scanf("%d %d %lf %4095s", &set, &callers, &g_seconds, lat_path) != 4 || callers < 1 ||
        callers > 64 || set < 0 || set >= g_nsets)
      die("run", "arguments");
    g_cur = &g_sets[set];
    pthread_barrier_init(&g_barrier, NULL, (unsigned)callers);
    pthread_t th[64];
    thread_arg args[64];
    g_failed = 0;
    for (int t = 0; t < callers; ++t) {
      args[t].id = t;
      args[t].cap = 1 << 16;
      args[t].count = 0;
      args[t].lat = malloc(args[t].cap * sizeof(int64_t));
      pthread_create(&th[t], NULL, worker, &args[t]);
    }
    for (int t = 0; t < callers; ++t) pthread_join(th[t], NULL);
    pthread_barrier_destroy(&g_barrier);
    FILE* out = fopen(lat_path, "wb");
    int64_t c = callers;
    fwrite(&c, sizeof c, 1, out);
    for (int t = 0; t < callers; ++t) {
      int64_t n = (int64_t)args[t].count;
      fwrite(&n, sizeof n, 1, out);
    }
    for (int t = 0; t < callers; ++t) {
      fwrite(args[t].lat, sizeof(int64_t), args[t].count, out);
      free(args[t].lat);
    }
    fclose(out);
    printf(g_failed ? "failed\n" : "done\n");
    fflush(stdout);
  }
  rs_model_close(g_model);
  return 0;
}
