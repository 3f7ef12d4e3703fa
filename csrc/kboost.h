/* kboost-rt native core: stable C ABI.
 *
 * The engine: one streaming step (8 ms, 128 samples) of a small, boosted or
 * large knowledge-boosting model. It is built once from a config and named
 * float32 tensors (the names and shapes of a kboost-rt model folder's
 * weights.safetensors, see docs/model-files.md); kb_engine_process never
 * allocates, locks or blocks. One engine must not be used from two threads
 * at once.
 *
 * The model (ABI 3): the packed weights alone, read-only once built. Any
 * number of engines, on any threads, can share one model; each engine is
 * then one stream's state (a server's streams, a plugin's instances), and
 * costs kb_engine_state_bytes instead of the weights again.
 *
 * The processor (ABI 2): what a plugin host runs in its audio callback. It
 * owns an engine (and the small-model fallback), takes hints from a hint
 * link, and mixes under live parameters with one-chunk ramps. The link is two
 * lock-free rings: the audio thread's processor queues input chunks and takes
 * hints; the host's network thread takes the chunks (kb_link_next_chunk)
 * and files the hints the server sends back (kb_link_deliver), by chunk
 * number. kb_processor_process never allocates, locks or blocks;
 * kb_processor_set_params and the link's network side may be called from
 * other threads at any time.
 */
#ifndef KBOOST_H
#define KBOOST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define KB_API __declspec(dllexport)
#else
#define KB_API __attribute__((visibility("default")))
#endif

#define KB_ABI_VERSION 4
#define KB_SAMPLE_RATE 16000
#define KB_CHUNK 128
#define KB_BINS 97

typedef enum { KB_ROLE_SMALL = 0, KB_ROLE_LARGE = 1, KB_ROLE_BOOSTED = 2 } kb_role;

typedef struct {
  int32_t role;            /* kb_role */
  int32_t channels;        /* M: 1 or 2 */
  int32_t sources;         /* S: 1 or 2 */
  int32_t dim, hidden, blocks;
  int32_t attention_heads; /* large model: > 0; else 0 */
  int32_t attention_e;     /* ceil(attention_qk_dim / 97) */
  int32_t attention_frames;
  int32_t hint_channels;   /* boosted: hints in; large: > 0 adds the hint generator */
  int32_t delay;           /* boosted: chunks */
  int32_t merge_heads, merge_e, merge_frames; /* boosted */
  int32_t max_age;         /* boosted: 0 fixed delay; N > 0 any-delay, hint ages 1..N, delay 0 (ABI 4) */
  /* ABI 4 appended max_age: a host built against an older kboost.h passes a
   * shorter struct; rebuild it (kb_abi_version() says what the library is). */
} kb_config;

typedef struct {
  const char* name;        /* e.g. "small.encoder.weight" */
  const float* data;       /* C-contiguous float32 */
  int32_t ndim;
  const int64_t* shape;
} kb_tensor;

typedef struct kb_model kb_model;
typedef struct kb_engine kb_engine;

typedef struct {
  uint64_t chunks;
  uint64_t nonfinite_resets; /* chunks with NaN/Inf: silenced, state reset */
} kb_stats;

KB_API int kb_abi_version(void);

/* The kernel set in use on this CPU: "avx512", "avx2", "neon" or "generic". */
KB_API const char* kb_simd(void);
/* Use another kernel set this CPU runs (for tests and benchmarks; not while
 * any engine processes): 1 if selected, 0 if this CPU or build lacks it. */
KB_API int kb_select_simd(const char* name);

/* NULL on failure, with a message in `error` (if not NULL). The tensors are
 * copied into the engine's own layout; the caller may free them after. */
KB_API kb_engine* kb_engine_create(const kb_config* config, const kb_tensor* tensors,
                                   int32_t n_tensors, char* error, size_t error_size);

/* ---- the model / state split (ABI 3) ---- */

/* The packed weights; NULL on failure, with a message in `error`. The
 * tensors are copied; the caller may free them after. */
KB_API kb_model* kb_model_create(const kb_config* config, const kb_tensor* tensors,
                                 int32_t n_tensors, char* error, size_t error_size);
/* A new stream of `model` from zeroed state. The engine keeps the model's
 * weights alive: kb_model_destroy may come before its engines'. */
KB_API kb_engine* kb_engine_create_from_model(const kb_model* model, char* error,
                                              size_t error_size);
KB_API size_t kb_model_weight_bytes(const kb_model* model);
KB_API size_t kb_engine_state_bytes(const kb_engine* engine); /* its own, not the model's */
KB_API void kb_model_destroy(kb_model* model);

/* input: [channels][128] planar. hint: [hint_channels][97] or NULL (boosted
 * only; NULL = no hint arrived). output: [sources][channels][128].
 * hint_out: [hint_channels][97] or NULL (large with hint generator).
 * Returns 0, 1 if NaN/Inf was met (output silenced, state reset), or -1 for
 * a NULL engine/input/output. The output lags the input by 64 samples. */
KB_API int kb_engine_process(kb_engine* engine, const float* input, const float* hint,
                             float* output, float* hint_out);

/* ---- hint ages (ABI 4) ---- */

/* Any-delay boosted models (max_age > 0) take every hint that arrived at
 * this chunk with its age: hints [count][hint_channels][97], ages[i] the
 * chunks between the chunk hint i was made from and this one. Ages outside
 * 1..max_age are ignored; of two hints of one age the later counts. Returns
 * like kb_engine_process, and -1 for another model or count < 0. kb_engine_process
 * runs an any-delay model without hints (hint NULL), and returns -1 for a
 * hint: it would not know its age. */
KB_API int kb_engine_process_aged(kb_engine* engine, const float* input, const float* hints,
                                  const int32_t* ages, int32_t count, float* output);

KB_API void kb_engine_reset(kb_engine* engine);
KB_API kb_stats kb_engine_stats(const kb_engine* engine);
KB_API void kb_engine_destroy(kb_engine* engine);

/* ---- the real-time processor (ABI 2) ---- */

typedef struct kb_link kb_link;
typedef struct kb_processor kb_processor;

typedef struct {
  double gain_db;  /* output gain, -60 .. 12 */
  double wet;      /* 1: model output only, 0: the input (delayed like the model) only */
  int32_t source;  /* 0: all sources summed, 1..S: one of them */
  int32_t bypass;  /* 1: the delayed input, crossfaded like wet = 0 */
  int32_t boost;   /* 0: run without the hints (they are still taken and counted) */
} kb_params;

typedef struct {
  uint64_t chunks;
  uint64_t hints_used;       /* chunks the engine was given a hint */
  uint64_t chunks_on_small;  /* chunks the small-model fallback played */
  uint64_t nonfinite_resets;
  uint64_t hints_on_time;    /* needed and there in time */
  uint64_t hints_late;       /* filed after the chunk that needed it ran */
  uint64_t hints_lost;       /* needed and not there (late ones included) */
  uint64_t chunks_queued;    /* input chunks queued for the server */
  uint64_t chunks_dropped;   /* input chunks dropped: nobody took them in time */
  uint64_t nonfinite_inputs; /* chunks whose NaN/Inf input samples were silenced */
} kb_processor_stats;

/* A hint link for a boosted model with these channels, hint channels and
 * delay (chunks); NULL for bad sizes. */
KB_API kb_link* kb_link_create(int32_t channels, int32_t hint_channels, int32_t delay);
/* ABI 4: the link of an any-delay boosted model (kb_config.max_age > 0): the
 * processor takes every hint of the last max_age chunks as it arrives and
 * gives it to the engine with its age. NULL for bad sizes. */
KB_API kb_link* kb_link_create_any_delay(int32_t channels, int32_t hint_channels,
                                         int32_t max_age);
/* Network side: the oldest queued input chunk ([channels][128] into `chunk`,
 * its number into `seq`); 1 if there was one, else 0. */
KB_API int kb_link_next_chunk(kb_link* link, int64_t* seq, float* chunk);
/* Network side: file the hint ([hint_channels][97]) made from chunk `seq`;
 * 1 if filed, 0 if it came too late to be used (counted). One thread only. */
KB_API int kb_link_deliver(kb_link* link, int64_t seq, const float* hint);
/* The chunk the processor is at (-1 before the first): for round trips. */
KB_API int64_t kb_link_now(const kb_link* link);
/* The link lives on while a processor uses it. */
KB_API void kb_link_destroy(kb_link* link);

/* The processor takes over `engine` (small or boosted) and `fallback` (a
 * small model with the same channels and sources, or NULL): on success the
 * handles are consumed and must not be used or destroyed again; on failure
 * (NULL, message in `error`) they stay the caller's. `link`: NULL for no
 * hints (then no fallback). `fallback_after`: chunks without a hint before
 * the small model plays. `initial`: NULL for the defaults (0 dB, wet 1,
 * all sources, boost on). */
KB_API kb_processor* kb_processor_create(kb_engine* engine, kb_link* link, kb_engine* fallback,
                                         int32_t fallback_after, const kb_params* initial,
                                         char* error, size_t error_size);
/* input [channels][128] -> mix [channels][128]; sources [sources][channels][128]
 * or NULL. The output lags the input by 64 samples. */
KB_API void kb_processor_process(kb_processor* processor, const float* input, float* mix,
                                 float* sources);
/* Any thread (one writer at a time); -1 and no change for values out of range. */
KB_API int kb_processor_set_params(kb_processor* processor, const kb_params* params);
KB_API kb_processor_stats kb_processor_get_stats(const kb_processor* processor);
/* ABI 4: counts[a] = hints used a chunks after their own chunk, for a < n
 * (ages run 1..8; n = 9 gets them all). Returns the number filled, -1 for bad
 * arguments. Any thread. */
KB_API int kb_processor_hint_ages(const kb_processor* processor, uint64_t* counts, int32_t n);
/* A new stream (not while process runs). */
KB_API void kb_processor_reset(kb_processor* processor);
KB_API void kb_processor_destroy(kb_processor* processor);

#ifdef __cplusplus
}
#endif

#endif /* KBOOST_H */
