/* libkboost_alloc_counter.so: a malloc counter for tests and `kboost-rt bench`.
 * LD_PRELOADed, it counts the heap allocations this thread makes while
 * counting is on; kb_count_process drives kb_engine_process from C so that
 * nothing but the engine runs while it counts (kboost_rt/alloc_check.py);
 * kb_count_processor does the same for the processor and its hint link.
 * It is also a C user of kboost.h. Not for production processes. */
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>

#include "kboost.h"

extern void* __libc_malloc(size_t);
extern void* __libc_calloc(size_t, size_t);
extern void* __libc_realloc(void*, size_t);
extern void* __libc_memalign(size_t, size_t);
extern void __libc_free(void*);

static __thread int counting;
static __thread long allocations;

static void note(void) {
  if (counting) ++allocations;
}

void* malloc(size_t n) { note(); return __libc_malloc(n); }
void* calloc(size_t n, size_t size) { note(); return __libc_calloc(n, size); }
void* realloc(void* p, size_t n) { note(); return __libc_realloc(p, n); }
void* memalign(size_t align, size_t n) { note(); return __libc_memalign(align, n); }
void* aligned_alloc(size_t align, size_t n) { note(); return __libc_memalign(align, n); }
void* valloc(size_t n) { note(); return __libc_memalign(4096, n); }
int posix_memalign(void** out, size_t align, size_t n) {
  note();
  *out = __libc_memalign(align, n);
  return *out ? 0 : 12; /* ENOMEM */
}
void free(void* p) { __libc_free(p); }

void kb_count_begin(void) { allocations = 0; counting = 1; }
long kb_count_end(void) { counting = 0; return allocations; }

/* Runs `chunks` steps; hints may be NULL; hint_every > 1 passes a hint only on
 * every hint_every-th chunk (the rest get NULL, as when hints are lost). */
long kb_count_process(kb_engine* engine, const float* input, long input_stride,
                      const float* hints, long hint_stride, int hint_every, float* output,
                      float* hint_out, int chunks) {
  kb_count_begin();
  for (int i = 0; i < chunks; ++i) {
    const float* hint = hints && (hint_every <= 1 || i % hint_every) ? hints + i * hint_stride : 0;
    kb_engine_process(engine, input + i * input_stride, hint, output, hint_out);
  }
  return kb_count_end();
}

/* An any-delay engine: at chunk i the hints of chunks i-1 (age 1) and i-5
 * (age 5) arrive together, the older one second. */
long kb_count_process_aged(kb_engine* engine, const float* input, long input_stride,
                           const float* hints, long hint_stride, float* output, int chunks) {
  const int32_t ages[2] = {1, 5};
  kb_count_begin();
  for (int i = 0; i < chunks; ++i)
    kb_engine_process_aged(engine, input + i * input_stride, hints + i * hint_stride, ages,
                           i >= 5 ? 2 : 0, output);
  return kb_count_end();
}

/* Runs `chunks` chunks through the processor as an audio callback would, with
 * the network side on the same thread: before chunk t the hint of chunk t - d
 * is filed unless lost (every third, and chunks 200..259 of each 1000, long
 * enough for the small-model fallback to take over), the queued input is
 * drained, and every 97th chunk the parameters change. */
long kb_count_processor(kb_processor* processor, kb_link* link, const float* input,
                        long input_stride, const float* hints, long hint_stride, int delay,
                        float* mix, float* sources, float* drained, int chunks) {
  kb_params params = {0.0, 1.0, 0, 0, 1};
  int64_t seq;
  kb_count_begin();
  for (int t = 0; t < chunks; ++t) {
    /* delay < 0: an any-delay link, hints coming back 1..7 chunks late, out of order */
    const int j = delay >= 0 ? t - delay : t - 1 - (t * 3) % 7;
    if (j >= 0 && j % 3 != 0 && !(j % 1000 >= 200 && j % 1000 < 260))
      kb_link_deliver(link, j, hints + (long)j * hint_stride);
    if (t % 97 == 0) {
      params.gain_db = -6.0 * (t / 97 % 3);
      params.wet = 1.0 - 0.25 * (t / 97 % 4);
      params.source = t / 97 % 3;
      params.bypass = t / 97 % 5 == 4;
      params.boost = t / 97 % 7 != 6;
      kb_processor_set_params(processor, &params);
    }
    kb_processor_process(processor, input + (long)t * input_stride, mix, sources);
    while (kb_link_next_chunk(link, &seq, drained)) {
    }
  }
  return kb_count_end();
}
