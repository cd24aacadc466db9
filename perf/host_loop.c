/*
 * host_loop.c — native callers of rs_host for perf/bench_host.py.
 *
 * Usage: host_loop CONFIG_FILE MODEL CALLERS SECONDS IN_DIM
 * Opens a host with the JSON in CONFIG_FILE, then runs CALLERS threads that
 * call rs_host_run(MODEL, version 0) back to back with x = [1, IN_DIM]
 * float32 (each thread its own values) for SECONDS after a 20-call warm-up,
 * and prints one line:
 *   calls N seconds S p50_us P p99_us Q failed F
 * (latencies over every call of every thread).
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recstrata.h"

static rs_host* host;
static const char* model;
static int in_dim;
static double seconds;
static volatile int go = 0;

typedef struct {
  int id;
  long n, cap, failed;
  int64_t* lat;
} caller;

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void* run(void* arg) {
  caller* c = (caller*)arg;
  float* x = aligned_alloc(64, (size_t)in_dim * sizeof(float) + 64);
  for (int k = 0; k < in_dim; ++k) x[k] = (float)((c->id * 31 + k) % 17) / 17.0f;
  int64_t shape[2] = {1, in_dim};
  rs_tensor in = {"x", RS_DT_FLOAT, 2, shape, x, (size_t)in_dim * sizeof(float)};
  for (int w = 0; w < 20; ++w) {
    rs_result* r = NULL;
    if (rs_host_run(host, model, 0, &in, 1, NULL, 0, &r, NULL, NULL) == RS_OK) rs_result_free(r);
  }
  while (!go) {
  }
  int64_t end = now_ns() + (int64_t)(seconds * 1e9);
  while (1) {
    int64_t t0 = now_ns();
    if (t0 >= end) break;
    rs_result* r = NULL;
    if (rs_host_run(host, model, 0, &in, 1, NULL, 0, &r, NULL, NULL) != RS_OK) {
      ++c->failed;
      continue;
    }
    rs_result_free(r);
    if (c->n == c->cap) {
      c->cap = c->cap ? c->cap * 2 : 65536;
      c->lat = realloc(c->lat, (size_t)c->cap * sizeof(int64_t));
    }
    c->lat[c->n++] = now_ns() - t0;
  }
  free(x);
  return NULL;
}

static int cmp(const void* a, const void* b) {
  int64_t x = *(const int64_t*)a, y = *(const int64_t*)b;
  return (x > y) - (x < y);
}

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: host_loop CONFIG_FILE MODEL CALLERS SECONDS IN_DIM\n");
    return 2;
  }
  FILE* f = fopen(argv[1], "rb");
  if (!f) return 2;
  static char config[65536];
  size_t len = fread(config, 1, sizeof config - 1, f);
  fclose(f);
  config[len] = '\0';
  model = argv[2];
  int callers = atoi(argv[3]);
  seconds = atof(argv[4]);
  in_dim = atoi(argv[5]);
  rs_error* err = NULL;
  if (rs_host_open(config, &host, &err) != RS_OK) {
    fprintf(stderr, "rs_host_open: %s\n", rs_error_message(err));
    return 1;
  }
  pthread_t* th = calloc((size_t)callers, sizeof(pthread_t));
  caller* cs = calloc((size_t)callers, sizeof(caller));
  for (int i = 0; i < callers; ++i) {
    cs[i].id = i;
    pthread_create(&th[i], NULL, run, &cs[i]);
  }
  struct timespec pause = {0, 200000000L};
  nanosleep(&pause, NULL);
  int64_t t0 = now_ns();
  go = 1;
  long total = 0, failed = 0;
  for (int i = 0; i < callers; ++i) {
    pthread_join(th[i], NULL);
    total += cs[i].n;
    failed += cs[i].failed;
  }
  double secs = (double)(now_ns() - t0) / 1e9;
  int64_t* all = malloc((size_t)(total ? total : 1) * sizeof(int64_t));
  long k = 0;
  for (int i = 0; i < callers; ++i) {
    memcpy(all + k, cs[i].lat, (size_t)cs[i].n * sizeof(int64_t));
    k += cs[i].n;
  }
  qsort(all, (size_t)total, sizeof(int64_t), cmp);
  double p50 = total ? all[total / 2] / 1e3 : 0, p99 = total ? all[(long)(total * 0.99)] / 1e3 : 0;
  printf("calls %ld seconds %.3f p50_us %.1f p99_us %.1f failed %ld\n", total, secs, p50, p99, failed);
  rs_host_close(host);
  return 0;
}
