/* Checks the engine, through the C ABI only, against stored test vectors
 * (tools/record_kernel_vectors.py, computed on x86-64), with every kernel set
 * this CPU runs. Built and run under qemu by `make test-aarch64`.
 *
 *   kernel_check [--require SET] [--only SET] [--repeat N] FILE.kbv ...
 *
 * --repeat runs the chunks N times per set (for perf or callgrind: the
 * instructions of one chunk are those of the run over N x chunks).
 * Prints one line per file and kernel set, the largest error of the outputs
 * (and made hints), and exits 1 if any exceeds 1e-4, if a file is malformed,
 * or if a --require'd kernel set is missing. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../csrc/kboost.h"

#define TOLERANCE 1e-4
#define MAX_TENSORS 512

typedef struct {
  const uint8_t* p;
  const uint8_t* end;
  int ok;
} reader;

static const void* take(reader* r, size_t n) {
  if (!r->ok || (size_t)(r->end - r->p) < n) {
    r->ok = 0;
    return NULL;
  }
  const void* at = r->p;
  r->p += n;
  return at;
}

static uint32_t take_u32(reader* r) {
  uint32_t v = 0;
  const void* at = take(r, 4);
  if (at) memcpy(&v, at, 4);
  return v;
}

static uint8_t* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t* data = n > 0 ? malloc((size_t)n) : NULL;
  if (data && fread(data, 1, (size_t)n, f) != (size_t)n) {
    free(data);
    data = NULL;
  }
  fclose(f);
  *size = (size_t)n;
  return data;
}

static double max_error(const float* got, const float* want, size_t n) {
  double worst = 0.0;
  for (size_t i = 0; i < n; ++i) {
    double e = fabs((double)got[i] - (double)want[i]);
    if (!(e <= worst)) worst = e; /* NaN counts as the worst */
  }
  return worst;
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* 0: all within tolerance; 1: a kernel set is off; 2: the file is malformed. */
static int g_repeat = 1;
static const char* g_only = NULL;

static int check_file(const char* path, const char* const* sets, int n_sets) {
  size_t size = 0;
  uint8_t* data = read_file(path, &size);
  if (!data) {
    fprintf(stderr, "%s: cannot read\n", path);
    return 2;
  }
  reader r = {data, data + size, 1};
  const void* magic = take(&r, 4);
  /* KBV1 files hold kb_config's first 14 fields (fixed-delay models); KBV2
   * files all 15, max_age last (an any-delay model, its hints with ages). */
  kb_config cfg;
  memset(&cfg, 0, sizeof cfg);
  const int v2 = magic && memcmp(magic, "KBV2", 4) == 0;
  const size_t n_fields = (v2 ? 15 : 14) * sizeof(int32_t);
  const void* fields = magic ? take(&r, n_fields) : NULL;
  if (!magic || (!v2 && memcmp(magic, "KBV1", 4) != 0) || !fields) {
    fprintf(stderr, "%s: not a kernel vector file\n", path);
    free(data);
    return 2;
  }
  memcpy(&cfg, fields, n_fields);
  uint32_t n_tensors = take_u32(&r);
  if (n_tensors > MAX_TENSORS) r.ok = 0;
  kb_tensor tensors[MAX_TENSORS];
  char names[MAX_TENSORS][128];
  int64_t shapes[MAX_TENSORS][8];
  for (uint32_t i = 0; r.ok && i < n_tensors; ++i) {
    uint32_t len = take_u32(&r);
    const void* name = take(&r, len);
    uint32_t ndim = take_u32(&r);
    if (!name || len >= sizeof names[i] || ndim > 8) {
      r.ok = 0;
      break;
    }
    memcpy(names[i], name, len);
    names[i][len] = 0;
    size_t count = 1;
    for (uint32_t d = 0; d < ndim; ++d) {
      const void* dim = take(&r, 8);
      if (dim) memcpy(&shapes[i][d], dim, 8);
      count *= (size_t)shapes[i][d];
    }
    /* The floats are copied out: a file's offsets need not be 4-byte aligned. */
    const void* values = take(&r, 4 * count);
    float* aligned = values ? malloc(4 * count + 4) : NULL;
    if (aligned) memcpy(aligned, values, 4 * count);
    tensors[i] = (kb_tensor){names[i], aligned, (int32_t)ndim, shapes[i]};
    if (!aligned) r.ok = 0;
  }
  uint32_t chunks = take_u32(&r);
  size_t in_n = (size_t)cfg.channels * KB_CHUNK;
  size_t out_n = (size_t)cfg.sources * cfg.channels * KB_CHUNK;
  size_t hint_n = (size_t)cfg.hint_channels * KB_BINS;
  int boosted = cfg.role == KB_ROLE_BOOSTED;
  int makes_hints = cfg.role == KB_ROLE_LARGE && cfg.hint_channels > 0;
  float* input = malloc(4 * chunks * in_n + 4);
  uint8_t* has_hint = malloc(chunks + 1);
  float* hints = malloc(4 * chunks * hint_n + 4);
  float* want = malloc(4 * chunks * out_n + 4);
  float* want_hints = malloc(4 * chunks * hint_n + 4);
  const void* at = take(&r, 4 * chunks * in_n);
  if (at) memcpy(input, at, 4 * chunks * in_n);
  if (boosted) {
    if ((at = take(&r, chunks))) memcpy(has_hint, at, chunks);
    if ((at = take(&r, 4 * chunks * hint_n))) memcpy(hints, at, 4 * chunks * hint_n);
  }
  if ((at = take(&r, 4 * chunks * out_n))) memcpy(want, at, 4 * chunks * out_n);
  if (makes_hints && (at = take(&r, 4 * chunks * hint_n)))
    memcpy(want_hints, at, 4 * chunks * hint_n);
  int status = 0;
  if (!r.ok || r.p != r.end) {
    fprintf(stderr, "%s: truncated or malformed\n", path);
    status = 2;
  }
  char error[256] = "";
  kb_engine* engine = status ? NULL : kb_engine_create(&cfg, tensors, (int32_t)n_tensors, error,
                                                       sizeof error);
  if (!status && !engine) {
    fprintf(stderr, "%s: kb_engine_create: %s\n", path, error);
    status = 2;
  }
  float* out = malloc(4 * out_n);
  float* made = malloc(4 * hint_n + 4);
  for (int s = 0; engine && s < n_sets; ++s) {
    if ((g_only && strcmp(g_only, sets[s]) != 0) || !kb_select_simd(sets[s])) continue;
    double worst = 0.0, worst_hint = 0.0;
    double start = now_seconds();
    for (uint32_t t = 0, rep = 0; t < chunks;) {
      if (t == 0) kb_engine_reset(engine);
      const float* hint = boosted && has_hint[t] ? hints + t * hint_n : NULL;
      if (cfg.max_age > 0) {
        const int32_t age = has_hint[t]; /* KBV2: the hint's age, 0 for none */
        kb_engine_process_aged(engine, input + t * in_n, hint, &age, hint ? 1 : 0, out);
      } else {
        kb_engine_process(engine, input + t * in_n, hint, out, makes_hints ? made : NULL);
      }
      double e = max_error(out, want + t * out_n, out_n);
      if (!(e <= worst)) worst = e;
      if (makes_hints) {
        e = max_error(made, want_hints + t * hint_n, hint_n);
        if (!(e <= worst_hint)) worst_hint = e;
      }
      if (++t == chunks && ++rep < (uint32_t)g_repeat) t = 0;
    }
    double per_chunk = (now_seconds() - start) / ((double)chunks * g_repeat);
    int bad = !(worst <= TOLERANCE && worst_hint <= TOLERANCE);
    printf("%-40s %-8s max error %.2e", path, sets[s], worst);
    if (makes_hints) printf(", hints %.2e", worst_hint);
    printf("  (%.0f us a chunk)  %s\n", per_chunk * 1e6, bad ? "FAILED" : "ok");
    if (bad) status = status ? status : 1;
  }
  kb_engine_destroy(engine);
  for (uint32_t i = 0; i < n_tensors && i < MAX_TENSORS; ++i) free((void*)tensors[i].data);
  free(out);
  free(made);
  free(input);
  free(has_hint);
  free(hints);
  free(want);
  free(want_hints);
  free(data);
  return status;
}

int main(int argc, char** argv) {
  static const char* const sets[] = {"generic", "avx2", "avx512", "neon"};
  const int n_sets = (int)(sizeof sets / sizeof sets[0]);
  const char* default_simd = kb_simd();
  int status = 0, files = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--require") == 0 && i + 1 < argc) {
      const char* name = argv[++i];
      if (!kb_select_simd(name)) {
        fprintf(stderr, "kernel set %s: not available on this CPU or build\n", name);
        status = 1;
      }
      kb_select_simd(default_simd);
      continue;
    }
    if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
      g_repeat = atoi(argv[++i]);
      if (g_repeat < 1) g_repeat = 1;
      continue;
    }
    if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      g_only = argv[++i];
      continue;
    }
    int s = check_file(argv[i], sets, n_sets);
    if (s > status) status = s;
    ++files;
  }
  if (!files) {
    fprintf(stderr, "usage: kernel_check [--require SET] [--only SET] [--repeat N] FILE.kbv ...\n");
    return 2;
  }
  printf("default kernel set on this CPU: %s\n", default_simd);
  return status;
}
