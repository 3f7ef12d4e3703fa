// A histogram of durations kept in atomics: the audio thread records, any
// thread reads quantiles. Fixed size; recording never allocates or locks.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>

namespace kb {

class TimeHistogram {
 public:
  static constexpr int kBucketNs = 5000;  // 5 us resolution
  static constexpr int kBuckets = 4000;   // up to 20 ms; longer ones land in the last

  void record(int64_t ns) {
    const int64_t b = std::clamp<int64_t>(ns / kBucketNs, 0, kBuckets - 1);
    counts_[static_cast<std::size_t>(b)].fetch_add(1, std::memory_order_relaxed);
    total_.fetch_add(1, std::memory_order_relaxed);
    int64_t seen = max_ns_.load(std::memory_order_relaxed);
    while (ns > seen && !max_ns_.compare_exchange_weak(seen, ns, std::memory_order_relaxed)) {
    }
  }

  uint64_t count() const { return total_.load(std::memory_order_relaxed); }
  int64_t max_ns() const { return max_ns_.load(std::memory_order_relaxed); }

  // The q-quantile (0..1) in ns: the upper edge of its bucket (at most the maximum).
  int64_t quantile_ns(double q) const {
    const uint64_t total = count();
    if (total == 0) return 0;
    const auto rank = static_cast<uint64_t>(q * static_cast<double>(total - 1)) + 1;
    uint64_t seen = 0;
    for (int b = 0; b < kBuckets; ++b) {
      seen += counts_[static_cast<std::size_t>(b)].load(std::memory_order_relaxed);
      if (seen >= rank) return std::min<int64_t>(int64_t{b + 1} * kBucketNs, max_ns());
    }
    return max_ns();
  }

 private:
  std::array<std::atomic<uint32_t>, kBuckets> counts_{};
  std::atomic<uint64_t> total_{0};
  std::atomic<int64_t> max_ns_{0};
};

}  // namespace kb
