/* kboost-rt native engine: stable C ABI.
 *
 * One streaming step (8 ms, 128 samples) of a small, boosted or large
 * knowledge-boosting model, for C/C++ hosts and plugins. The engine is built
 * once from a config and named float32 tensors (the names and shapes of a
 * kboost-rt model folder's weights.safetensors, see docs/model-files.md);
 * kb_engine_process never allocates, locks or blocks. One engine must not be
 * used from two threads at once.
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

#define KB_ABI_VERSION 1
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
} kb_config;

typedef struct {
  const char* name;        /* e.g. "small.encoder.weight" */
  const float* data;       /* C-contiguous float32 */
  int32_t ndim;
  const int64_t* shape;
} kb_tensor;

typedef struct kb_engine kb_engine;

typedef struct {
  uint64_t chunks;
  uint64_t nonfinite_resets; /* chunks with NaN/Inf: silenced, state reset */
} kb_stats;

KB_API int kb_abi_version(void);

/* The kernel set in use on this CPU: "avx512", "avx2" or "generic". */
KB_API const char* kb_simd(void);

/* NULL on failure, with a message in `error` (if not NULL). The tensors are
 * copied into the engine's own layout; the caller may free them after. */
KB_API kb_engine* kb_engine_create(const kb_config* config, const kb_tensor* tensors,
                                   int32_t n_tensors, char* error, size_t error_size);

/* input: [channels][128] planar. hint: [hint_channels][97] or NULL (boosted
 * only; NULL = no hint arrived). output: [sources][channels][128].
 * hint_out: [hint_channels][97] or NULL (large with hint generator).
 * Returns 0, 1 if NaN/Inf was met (output silenced, state reset), or -1 for
 * a NULL engine/input/output. The output lags the input by 64 samples. */
KB_API int kb_engine_process(kb_engine* engine, const float* input, const float* hint,
                             float* output, float* hint_out);

KB_API void kb_engine_reset(kb_engine* engine);
KB_API kb_stats kb_engine_stats(const kb_engine* engine);
KB_API void kb_engine_destroy(kb_engine* engine);

#ifdef __cplusplus
}
#endif

#endif /* KBOOST_H */
