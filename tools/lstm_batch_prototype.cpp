// Prototype for issue 18's batched step: the paper-size large model's
// frequency-LSTM recurrence (hidden 64, 97 sequential bins, both directions)
// for N streams stepped together, against the same recurrence one stream at a
// time. Stepped together, each recurrent weight vector loaded serves all N
// streams; one at a time, every stream streams the 2 x 64 kB of weights from
// L2 at every bin. Not part of the engine: it measures what the engine's
// batched step would buy before it is built.
//
//   g++ -O3 -std=c++17 -march=native tools/lstm_batch_prototype.cpp -o /tmp/lstm_batch
//   /tmp/lstm_batch 1,4,16 [--json F]
//
// Prints, per N, the recurrence's time per stream: one stream at a time in two
// passes over h (8 gate vectors each, the engine before) and in one pass (all
// 16, the engine now), and N streams together; and checks that all three give
// the same hidden states bit for bit.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

constexpr int kH = 64, kG = 4 * kH, kSteps = 97;
typedef float v16 __attribute__((vector_size(64)));
constexpr int kL = 16, kVectors = kG / kL;  // 16 gate vectors of 16 floats

inline v16 ld(const float* p) { v16 v; std::memcpy(&v, p, sizeof v); return v; }
inline void st(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }
inline v16 splat(float x) { return x - v16{}; }

// A cheap stand-in for the LSTM cell (softsign gates, vectorised): the
// engine's cell costs the same per stream either way, and this measures the
// recurrent products that batching changes.
inline float squash(float x) { return x / (1.f + std::fabs(x)); }

void cell(const float* g, float* c, float* h) {
  for (int j = 0; j < kH; ++j) {
    const float cj = 0.5f * (squash(g[kH + j]) + 1.f) * c[j] + squash(g[j]) * squash(g[2 * kH + j]);
    c[j] = cj;
    h[j] = 0.5f * (squash(g[3 * kH + j]) + 1.f) * squash(cj);
  }
}

// One stream, as the engine ran it before: two passes over h, 8 gate vectors each.
void one_in_two_passes(const float* gates_in, const float* whh_t, float* out) {
  alignas(64) float h[kH] = {}, c[kH] = {}, g[kG];
  for (int t = 0; t < kSteps; ++t) {
    const float* gi = gates_in + t * kG;
    for (int wb = 0; wb < kVectors; wb += 8) {
      v16 acc[8];
      for (int w = 0; w < 8; ++w) acc[w] = ld(gi + kL * (wb + w));
      for (int p = 0; p < kH; ++p) {
        const v16 hp = splat(h[p]);
        const float* wp = whh_t + p * kG + kL * wb;
        for (int w = 0; w < 8; ++w) acc[w] += hp * ld(wp + kL * w);
      }
      for (int w = 0; w < 8; ++w) st(g + kL * (wb + w), acc[w]);
    }
    cell(g, c, h);
    std::memcpy(out + t * kH, h, sizeof h);
  }
}

// R streams at once: each weight vector loaded once, used R times.
template <int R>
void together(const float* const* gates_in, const float* whh_t, float* const* out) {
  constexpr int B = 16 / R < 2 ? 2 : 16 / R;  // R x B accumulators stay in registers
  alignas(64) float h[R][kH] = {}, c[R][kH] = {}, g[R][kG];
  for (int t = 0; t < kSteps; ++t) {
    for (int wb = 0; wb < kVectors; wb += B) {
      v16 acc[R][B];
      for (int r = 0; r < R; ++r)
        for (int w = 0; w < B; ++w) acc[r][w] = ld(gates_in[r] + t * kG + kL * (wb + w));
      for (int p = 0; p < kH; ++p) {
        const float* wp = whh_t + p * kG + kL * wb;
        v16 wv[B];
        for (int w = 0; w < B; ++w) wv[w] = ld(wp + kL * w);
        for (int r = 0; r < R; ++r) {
          const v16 hp = splat(h[r][p]);
          for (int w = 0; w < B; ++w) acc[r][w] += hp * wv[w];
        }
      }
      for (int r = 0; r < R; ++r)
        for (int w = 0; w < B; ++w) st(g[r] + kL * (wb + w), acc[r][w]);
    }
    for (int r = 0; r < R; ++r) {
      cell(g[r], c[r], h[r]);
      std::memcpy(out[r] + t * kH, h[r], sizeof h[r]);
    }
  }
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> counts = {1, 4, 16};
  const char* json = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc) {
      json = argv[++i];
    } else {
      counts.clear();
      for (char* s = std::strtok(argv[i], ","); s; s = std::strtok(nullptr, ","))
        counts.push_back(std::atoi(s));
    }
  }
  std::mt19937 rng(0);
  std::normal_distribution<float> normal(0.f, 0.1f);
  std::vector<float> whh(kH * kG);
  for (auto& w : whh) w = normal(rng);
  std::string rows;
  std::printf("%7s %16s %16s %12s %8s\n", "streams", "one, 2 passes us", "one, 1 pass us",
              "together us", "ratio");
  for (const int n : counts) {
    if (n < 1 || (n % 4 && n != 1 && n != 2)) {
      std::fprintf(stderr, "stream counts must be 1, 2 or multiples of 4\n");
      return 2;
    }
    std::vector<std::vector<float>> gates(n, std::vector<float>(kSteps * kG));
    std::vector<std::vector<float>> a(n, std::vector<float>(kSteps * kH));
    std::vector<std::vector<float>> b(n, std::vector<float>(kSteps * kH));
    for (auto& s : gates)
      for (auto& x : s) x = normal(rng) * 10.f;
    std::vector<const float*> gp(n);
    std::vector<float*> bp(n);
    for (int r = 0; r < n; ++r) gp[r] = gates[r].data(), bp[r] = b[r].data();
    std::vector<std::vector<float>> a2(n, std::vector<float>(kSteps * kH));
    std::vector<float*> a2p(n);
    for (int r = 0; r < n; ++r) a2p[r] = a2[r].data();
    std::vector<double> two_passes, alone, joint;
    for (int rep = 0; rep < 60; ++rep) {  // alternate the two, so that drift hits both
      auto start = std::chrono::steady_clock::now();
      for (int r = 0; r < n; ++r) one_in_two_passes(gates[r].data(), whh.data(), a[r].data());
      two_passes.push_back(seconds_since(start) / n * 1e6);
      start = std::chrono::steady_clock::now();
      for (int r = 0; r < n; ++r) together<1>(gp.data() + r, whh.data(), a2p.data() + r);
      alone.push_back(seconds_since(start) / n * 1e6);
      start = std::chrono::steady_clock::now();
      if (n == 1) {
        together<1>(gp.data(), whh.data(), bp.data());
      } else if (n == 2) {
        together<2>(gp.data(), whh.data(), bp.data());
      } else {
        for (int r = 0; r < n; r += 4) together<4>(gp.data() + r, whh.data(), bp.data() + r);
      }
      joint.push_back(seconds_since(start) / n * 1e6);
    }
    for (int r = 0; r < n; ++r)
      if (std::memcmp(a[r].data(), b[r].data(), a[r].size() * sizeof(float)) ||
          std::memcmp(a2[r].data(), b[r].data(), a[r].size() * sizeof(float))) {
        std::fprintf(stderr, "stream %d: together differs from one by one\n", r);
        return 1;
      }
    const double w = median(two_passes), x = median(alone), y = median(joint);
    std::printf("%7d %16.1f %16.1f %12.1f %8.2f\n", n, w, x, y, x / y);
    char row[200];
    std::snprintf(row, sizeof row,
                  "%s{\"streams\": %d, \"one_two_passes_us\": %.2f, \"one_one_pass_us\": %.2f, "
                  "\"together_us\": %.2f}",
                  rows.empty() ? "" : ", ", n, w, x, y);
    rows += row;
  }
  std::printf("(one direction of one block's recurrence, per stream, median of 60; the step "
              "has 2 directions x 3 blocks; ratio: one pass / together)\n");
  if (json) {
    FILE* f = std::fopen(json, "w");
    if (!f) return 2;
    std::fprintf(f, "{\"hidden\": %d, \"steps\": %d, \"results\": [%s]}\n", kH, kSteps,
                 rows.c_str());
    std::fclose(f);
  }
  return 0;
}
