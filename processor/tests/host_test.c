/* host_test: a C99 host of two versioned models through rs_host (recstrata.h
 * only), swapping and rolling back while threads call it.
 *
 * Usage: host_test <base_a> <base_b> <request_file>
 * Prepared by tests/test_host_c.py: each base holds versions 1 and 2 and a
 * staged copy of version 3 at BASE/.3.tmp (ignored until renamed to BASE/3).
 * Every version of model "a" answers y = version, of "b" y = 10 * version
 * (input x float32 [-1, 2], output y float32 [-1]); request_file is a
 * serialized PredictRequest of x = ones(3, 2).
 *
 * Callers (tensor form and PredictRequest bytes) check every answer against
 * the version that reported it, and, for a call that started and ended
 * inside one stable phase (no swap running), that the version is the one the
 * phase expects. Then callers race rs_host_shutdown: each call answers
 * correctly or is refused with "host is closed". Prints "OK <checks> <calls>
 * <stable calls>" and exits 0, or the failed check and exits 1. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "recstrata.h"

static int checks = 0;
#define CHECK(cond, ...)                                     \
  do {                                                       \
    ++checks;                                                \
    if (!(cond)) {                                           \
      fprintf(stderr, "FAILED %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                          \
      fprintf(stderr, "\n");                                 \
      exit(1);                                               \
    }                                                        \
  } while (0)
#define OK(call)                                                                                   \
  do {                                                                                             \
    rs_error* e_ = NULL;                                                                           \
    int c_ = (call);                                                                               \
    CHECK(c_ == RS_OK, "%s: %s %s", #call, rs_status_name(c_), rs_error_message(e_));              \
  } while (0)

static void expect(int code, rs_error* err, int want, const char* needle, const char* what) {
  CHECK(code == want, "%s: got %s, want %s (%s)", what, rs_status_name(code), rs_status_name(want),
        rs_error_message(err));
  CHECK(strstr(rs_error_message(err), needle) != NULL, "%s: message '%s' lacks '%s'", what, rs_error_message(err),
        needle);
  rs_error_free(err);
}

/* Evaluates `call` (which writes `err`) before reading err. */
#define EXPECT(call, want, needle, what) \
  do {                                   \
    int code_ = (call);                  \
    expect(code_, err, want, needle, what); \
  } while (0)

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static float scale_of(const char* model) { return model[0] == 'a' ? 1.0f : 10.0f; }

/* ---- shared state --------------------------------------------------------- */

static rs_host* host;
static char* request;
static size_t request_size;
static const int64_t shape[2] = {3, 2};
static float xs[6] = {1, 1, 1, 1, 1, 1};

/* phase: even = stable (expect_a/expect_b hold), odd = a swap is running. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int phase = 0;
static int64_t expect_a = 2, expect_b = 2;
static int stop = 0;

typedef struct {
  int id;
  int shutdown_ok; /* "host is closed" ends this worker instead of failing it */
  int last_code;
  long calls, failed, wrong, stable_checked, refused;
  char msg[512];
} worker;

static void snapshot(int* ph, int64_t* ea, int64_t* eb, int* st) {
  pthread_mutex_lock(&mu);
  *ph = phase;
  *ea = expect_a;
  *eb = expect_b;
  if (st) *st = stop;
  pthread_mutex_unlock(&mu);
}

/* Calls `model` once (tensor form or bytes), returns the answering version, or
 * -1 on failure (message in w->msg). *value receives y[0] (all y equal). */
static int64_t call_once(worker* w, const char* model, int wire, float* value) {
  rs_error* err = NULL;
  int64_t version = 0;
  if (!wire) {
    rs_tensor in = {"x", RS_DT_FLOAT, 2, shape, xs, sizeof xs};
    rs_result* res = NULL;
    int code = rs_host_run(host, model, 0, &in, 1, NULL, 0, &res, &version, &err);
    w->last_code = code;
    if (code != RS_OK) {
      snprintf(w->msg, sizeof w->msg, "run %s: %s %s", model, rs_status_name(code), rs_error_message(err));
      rs_error_free(err);
      return -1;
    }
    rs_tensor y;
    code = rs_result_output(res, 0, &y, NULL);
    int good = code == RS_OK && y.ndim == 1 && y.shape[0] == 3;
    const float* v = good ? (const float*)y.data : NULL;
    if (good && !(v[0] == v[1] && v[1] == v[2])) good = 0;
    if (good) *value = v[0];
    rs_result_free(res);
    if (!good) {
      snprintf(w->msg, sizeof w->msg, "run %s: bad output", model);
      return -1;
    }
    return version;
  }
  void* resp = NULL;
  size_t n = 0;
  int code = rs_host_predict(host, model, 0, request, request_size, &resp, &n, &version, &err);
  w->last_code = code;
  if (code != RS_OK) {
    snprintf(w->msg, sizeof w->msg, "predict %s: %s %s", model, rs_status_name(code), rs_error_message(err));
    rs_error_free(err);
    return -1;
  }
  /* The response carries y's three floats packed side by side: find the
   * expected ones for the reported version. */
  float want = scale_of(model) * (float)version;
  float three[3] = {want, want, want};
  int found = 0;
  for (size_t i = 0; i + sizeof three <= n && !found; ++i) found = memcmp((char*)resp + i, three, sizeof three) == 0;
  rs_free(resp);
  *value = found ? want : -1.0f;
  return version;
}

static void* work(void* arg) {
  worker* w = (worker*)arg;
  for (long i = 0;; ++i) {
    int ph0, ph1, st;
    int64_t ea, eb, ea1, eb1;
    snapshot(&ph0, &ea, &eb, &st);
    if (st) break;
    const char* model = (i + w->id) % 2 ? "b" : "a";
    int wire = w->id % 3 == 2;
    float value = 0;
    int64_t v = call_once(w, model, wire, &value);
    snapshot(&ph1, &ea1, &eb1, NULL);
    ++w->calls;
    if (v < 0 && w->shutdown_ok && w->last_code == RS_ERR_FAILED_PRECONDITION && strstr(w->msg, "host is closed")) {
      ++w->refused;
      break;
    }
    if (v < 0) {
      ++w->failed;
      continue;
    }
    if (value != scale_of(model) * (float)v) {
      ++w->wrong;
      snprintf(w->msg, sizeof w->msg, "%s answered %g but reported version %lld", model, value, (long long)v);
      continue;
    }
    if (ph0 == ph1 && ph0 % 2 == 0) { /* the whole call ran in one stable phase */
      int64_t want = model[0] == 'a' ? ea : eb;
      ++w->stable_checked;
      if (v != want) {
        ++w->wrong;
        snprintf(w->msg, sizeof w->msg, "phase %d: %s answered by version %lld, expected %lld", ph0, model,
                 (long long)v, (long long)want);
      }
    }
  }
  return NULL;
}

/* Runs `op` as a swap: phase odd while it runs, then the new expectations. */
#define SWAP(op, new_a, new_b)      \
  do {                              \
    pthread_mutex_lock(&mu);        \
    ++phase;                        \
    pthread_mutex_unlock(&mu);      \
    op;                             \
    pthread_mutex_lock(&mu);        \
    expect_a = (new_a);             \
    expect_b = (new_b);             \
    ++phase;                        \
    pthread_mutex_unlock(&mu);      \
    sleep_ms(40);                   \
  } while (0)

static void publish(const char* base, int v) {
  char from[4096], to[4096];
  snprintf(from, sizeof from, "%s/.%d.tmp", base, v);
  snprintf(to, sizeof to, "%s/%d", base, v);
  CHECK(rename(from, to) == 0, "rename %s -> %s", from, to);
}

static void read_file(const char* path) {
  FILE* f = fopen(path, "rb");
  CHECK(f != NULL, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  request = malloc((size_t)n);
  CHECK(request && fread(request, 1, (size_t)n, f) == (size_t)n, "cannot read %s", path);
  request_size = (size_t)n;
  fclose(f);
}

static void error_paths(void) {
  rs_error* err = NULL;
  rs_result* res = NULL;
  rs_lease* lease = NULL;
  rs_host* h2 = (rs_host*)1;
  rs_tensor in = {"x", RS_DT_FLOAT, 2, shape, xs, sizeof xs};
  EXPECT(rs_host_run(host, "nope", 0, &in, 1, NULL, 0, &res, NULL, &err), RS_ERR_NOT_FOUND,
         "no model named 'nope'", "unknown model");
  CHECK(res == NULL, "result set on failure");
  EXPECT(rs_host_run(host, "a", 1, &in, 1, NULL, 0, &res, NULL, &err), RS_ERR_NOT_FOUND,
         "version 1 of model 'a' is not serving (serving: 2)", "unserved version");
  EXPECT(rs_host_acquire(host, "b", 7, &lease, &err), RS_ERR_NOT_FOUND, "version 7", "unknown version");
  CHECK(lease == NULL, "lease set on failure");
  EXPECT(rs_host_pin(host, "a", 9, &err), RS_ERR_NOT_FOUND, "not a complete version directory", "pin 9");
  EXPECT(rs_host_set_policy(host, "a", "{\"newest\":{}}", &err), RS_ERR_INVALID_ARGUMENT, "bad version policy",
         "bad policy");
  EXPECT(rs_host_reload(host, "zz", &err), RS_ERR_NOT_FOUND, "no model named 'zz'", "reload unknown");
  EXPECT(rs_host_open("{\"models\": []}", &h2, &err), RS_ERR_INVALID_ARGUMENT, "\"models\" is empty",
         "empty models");
  CHECK(h2 == NULL, "host set on failure");
  EXPECT(rs_host_open("{\"models\": [{\"name\": \"m\", \"base_path\": \"/x\", \"colour\": 1}]}", &h2, &err),
         RS_ERR_INVALID_ARGUMENT, "colour", "unknown key");
  EXPECT(rs_host_open("{\"models\": [{\"name\": \"m\", \"base_path\": \"/x\"}, {\"name\": \"m\", \"base_path\": \"/y\"}]}",
                      &h2, &err),
         RS_ERR_INVALID_ARGUMENT, "listed twice", "duplicate name");
  EXPECT(rs_host_open("{\"models\": [", &h2, &err), RS_ERR_INVALID_ARGUMENT, "host config", "bad JSON");
  EXPECT(rs_host_run(NULL, "a", 0, &in, 1, NULL, 0, &res, NULL, &err), RS_ERR_INVALID_ARGUMENT, "host is NULL",
         "NULL host");
  rs_host_close(NULL);
  rs_lease_release(NULL);
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: host_test <base_a> <base_b> <request_file>\n");
    return 2;
  }
  const char *base_a = argv[1], *base_b = argv[2];
  read_file(argv[3]);
  char config[8192];
  snprintf(config, sizeof config,
           "{\"models\": [{\"name\": \"a\", \"base_path\": \"%s\"},"
           " {\"name\": \"b\", \"base_path\": \"%s\", \"version_policy\": {\"latest\": {\"num_versions\": 2}},"
           "  \"model_config\": {\"session_num\": 2}}],"
           " \"model_config\": {\"warmup_runs\": 2}}",
           base_a, base_b);
  OK(rs_host_open(config, &host, &e_));

  /* Routing before any swap. */
  worker probe = {0};
  float value;
  CHECK(call_once(&probe, "a", 0, &value) == 2 && value == 2.0f, "a default: %s", probe.msg);
  CHECK(call_once(&probe, "b", 1, &value) == 2 && value == 20.0f, "b default (bytes): %s", probe.msg);
  {
    rs_lease* l = NULL;
    OK(rs_host_acquire(host, "b", 1, &l, &e_));
    CHECK(rs_lease_version(l) == 1, "lease version %lld", (long long)rs_lease_version(l));
    rs_lease_release(l);
  }
  error_paths();

  enum { kThreads = 6 };
  pthread_t th[kThreads];
  worker ws[kThreads];
  memset(ws, 0, sizeof ws);
  for (int i = 0; i < kThreads; ++i) {
    ws[i].id = i;
    CHECK(pthread_create(&th[i], NULL, work, &ws[i]) == 0, "pthread_create");
  }
  sleep_ms(50);
  /* A lease taken now stays on a:2 through the swaps below. */
  rs_lease* held = NULL;
  OK(rs_host_acquire(host, "a", 0, &held, &e_));
  CHECK(rs_lease_version(held) == 2, "held lease on %lld", (long long)rs_lease_version(held));

  SWAP(publish(base_a, 3); OK(rs_host_reload(host, "a", &e_)), 3, 2);   /* new version of a */
  SWAP(OK(rs_host_pin(host, "a", 1, &e_)), 1, 2);                        /* roll a back to 1 */
  SWAP(publish(base_b, 3); OK(rs_host_reload(host, NULL, &e_)), 1, 3);  /* b: versions 2, 3 */
  SWAP(OK(rs_host_pin(host, "b", 2, &e_)), 1, 2);                        /* roll b back to 2 */
  for (int round = 0; round < 3; ++round) {
    int64_t b_now = round == 0 ? 2 : 1;
    SWAP(OK(rs_host_pin(host, "a", 0, &e_)), 3, b_now); /* unpin: latest = 3 */
    SWAP(OK(rs_host_pin(host, "a", 2, &e_)), 2, b_now);
    SWAP(OK(rs_host_pin(host, "b", 0, &e_)), 2, 3); /* unpin: latest 2 = {2, 3} */
    SWAP(OK(rs_host_pin(host, "b", 1, &e_)), 2, 1);
  }
  SWAP(OK(rs_host_set_policy(host, "a", "{\"latest\": {\"num_versions\": 1}}", &e_)), 3, 1);

  /* The held lease still answers from a:2, although a:2 left the table. */
  {
    rs_tensor in = {"x", RS_DT_FLOAT, 2, shape, xs, sizeof xs};
    rs_result* res = NULL;
    OK(rs_lease_run(held, &in, 1, NULL, 0, &res, &e_));
    rs_tensor y;
    OK(rs_result_output(res, 0, &y, &e_));
    CHECK(((const float*)y.data)[0] == 2.0f, "held lease answered %g", ((const float*)y.data)[0]);
    rs_result_free(res);
  }

  pthread_mutex_lock(&mu);
  stop = 1;
  pthread_mutex_unlock(&mu);
  long calls = 0, stable = 0;
  for (int i = 0; i < kThreads; ++i) {
    pthread_join(th[i], NULL);
    CHECK(ws[i].failed == 0, "worker %d: %ld failed calls, last: %s", i, ws[i].failed, ws[i].msg);
    CHECK(ws[i].wrong == 0, "worker %d: %ld wrong answers, last: %s", i, ws[i].wrong, ws[i].msg);
    calls += ws[i].calls;
    stable += ws[i].stable_checked;
  }
  CHECK(stable > 0, "no call ran inside a stable phase");

  char* status = NULL;
  OK(rs_host_status_json(host, &status, &e_));
  printf("status %s\n", status);
  CHECK(strstr(status, "\"name\":\"a\",") && strstr(status, "\"policy\":\"latest\""), "status: %s", status);
  CHECK(strstr(status, "\"state\":\"unloading\"") != NULL, "a:2 is held by the lease: %s", status);
  rs_free(status);
  rs_lease_release(held);

  /* Shutdown racing with callers: every call either answers correctly or is
   * refused with "host is closed"; none fails otherwise, none crashes. */
  pthread_mutex_lock(&mu);
  stop = 0;
  phase = 1; /* no stable-phase expectations here */
  pthread_mutex_unlock(&mu);
  memset(ws, 0, sizeof ws);
  for (int i = 0; i < kThreads; ++i) {
    ws[i].id = i;
    ws[i].shutdown_ok = 1;
    CHECK(pthread_create(&th[i], NULL, work, &ws[i]) == 0, "pthread_create");
  }
  sleep_ms(30);
  OK(rs_host_shutdown(host, &e_));
  long refused = 0;
  for (int i = 0; i < kThreads; ++i) {
    pthread_join(th[i], NULL);
    CHECK(ws[i].failed == 0 && ws[i].wrong == 0, "worker %d during shutdown: %ld failed, %ld wrong, last: %s", i,
          ws[i].failed, ws[i].wrong, ws[i].msg);
    refused += ws[i].refused;
  }
  CHECK(refused == kThreads, "every worker was refused after shutdown (%ld)", refused);
  {
    rs_error* err = NULL;
    rs_tensor in = {"x", RS_DT_FLOAT, 2, shape, xs, sizeof xs};
    rs_result* res = NULL;
    EXPECT(rs_host_run(host, "a", 0, &in, 1, NULL, 0, &res, NULL, &err), RS_ERR_FAILED_PRECONDITION,
           "host is closed", "run after shutdown");
    EXPECT(rs_host_reload(host, NULL, &err), RS_ERR_FAILED_PRECONDITION, "host is closed", "reload after shutdown");
    OK(rs_host_shutdown(host, &e_)); /* idempotent */
    OK(rs_host_status_json(host, &status, &e_));
    CHECK(strstr(status, "\"ready\":true") == NULL, "nothing serves after shutdown: %s", status);
    rs_free(status);
  }
  rs_host_close(host);
  printf("OK %d %ld %ld\n", checks, calls, stable);
  return 0;
}
