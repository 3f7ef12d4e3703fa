#include "hint_link.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "signal_path.h"

namespace kb {

HintLink::HintLink(int channels, int hint_channels, int delay, int max_age, int hint_slots,
                   int chunk_slots)
    : channels_(channels),
      hint_channels_(hint_channels),
      delay_(delay),
      max_age_(max_age),
      hint_size_(hint_channels * kBins),
      chunk_size_(channels * kChunk),
      hint_stamps_(static_cast<std::size_t>(hint_slots)),
      taken_(static_cast<std::size_t>(hint_slots), -1),
      hint_data_(static_cast<std::size_t>(hint_slots) * hint_channels * kBins),
      chunk_seqs_(static_cast<std::size_t>(chunk_slots)),
      chunk_data_(static_cast<std::size_t>(chunk_slots) * channels * kChunk) {
  if (channels < 1 || hint_channels < 1 || delay < 0 || max_age < 0 || (max_age && delay) ||
      hint_slots <= std::max(delay, max_age) + 1 || chunk_slots < 1)
    throw std::invalid_argument("HintLink: channels and hint channels >= 1, delay >= 0, "
                                "max_age >= 0 (and then delay 0), more hint slots than "
                                "delay + 1 and max_age + 1, chunk slots >= 1");
}

bool HintLink::send(int64_t seq, const float* chunk) {
  const uint64_t head = chunk_head_.load(std::memory_order_relaxed);
  const uint64_t tail = chunk_tail_.load(std::memory_order_acquire);
  if (head - tail >= chunk_seqs_.size()) {
    send_dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  const std::size_t slot = head % chunk_seqs_.size();
  chunk_seqs_[slot] = seq;
  std::memcpy(&chunk_data_[slot * chunk_size_], chunk, sizeof(float) * chunk_size_);
  chunk_head_.store(head + 1, std::memory_order_release);
  queued_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool HintLink::next_chunk(int64_t* seq, float* chunk) {
  const uint64_t tail = chunk_tail_.load(std::memory_order_relaxed);
  const uint64_t head = chunk_head_.load(std::memory_order_acquire);
  if (tail == head) return false;
  const std::size_t slot = tail % chunk_seqs_.size();
  *seq = chunk_seqs_[slot];
  std::memcpy(chunk, &chunk_data_[slot * chunk_size_], sizeof(float) * chunk_size_);
  chunk_tail_.store(tail + 1, std::memory_order_release);
  return true;
}

bool HintLink::claim(int64_t j, float* hint) {
  const std::size_t index = static_cast<std::size_t>(j) % hint_stamps_.size();
  Slot& slot = hint_stamps_[index];
  uint64_t stamp = slot.stamp.load(std::memory_order_seq_cst);
  if (seq_of(stamp) != static_cast<uint64_t>(j) + 1) return false;
  std::memcpy(hint, &hint_data_[index * hint_size_], sizeof(float) * hint_size_);
  std::atomic_thread_fence(std::memory_order_acquire);
  // Fails if the network thread rewrote the slot during the copy (the copy
  // may be torn) or took it back as late.
  return slot.stamp.compare_exchange_strong(stamp, emptied(stamp), std::memory_order_seq_cst);
}

bool HintLink::take(int64_t t, float* hint) {
  // Publishing "now" before looking at the slot, while deliver() files before
  // looking at "now" (both sequentially consistent), means at least one side
  // sees the other: a hint cannot be neither taken nor counted late.
  now_.store(t, std::memory_order_seq_cst);
  const int64_t j = t - delay_;
  if (j < 0) return false;
  if (!claim(j, hint)) {
    lost_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  on_time_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

int HintLink::take_fresh(int64_t t, float* hints, int* ages) {
  now_.store(t, std::memory_order_seq_cst);  // as in take()
  int count = 0;
  for (int age = 1; age <= max_age_; ++age) {
    const int64_t j = t - age;
    if (j < 0) break;
    int64_t& taken = taken_[static_cast<std::size_t>(j) % taken_.size()];
    if (taken != j && claim(j, hints + static_cast<std::size_t>(count) * hint_size_)) {
      taken = j;
      ages[count++] = age;
      on_time_.fetch_add(1, std::memory_order_relaxed);
    }
    // Its last chance was this chunk: never taken, it is lost.
    if (age == max_age_ && taken != j) lost_.fetch_add(1, std::memory_order_relaxed);
  }
  return count;
}

bool HintLink::deliver(int64_t seq, const float* hint) {
  if (seq < 0 || static_cast<uint64_t>(seq) >= kSeqMask) return false;
  // A hint of a chunk not sent yet is bogus: it must not evict one still needed.
  if (seq > now_.load(std::memory_order_seq_cst) + 1) return false;
  if (seq + window() <= now_.load(std::memory_order_seq_cst)) {
    late_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  const std::size_t index = static_cast<std::size_t>(seq) % hint_stamps_.size();
  Slot& slot = hint_stamps_[index];
  const uint64_t version = (slot.stamp.load(std::memory_order_relaxed) >> kSeqBits) + 1;
  const uint64_t busy = version << kSeqBits;
  slot.stamp.store(busy, std::memory_order_seq_cst);  // a reader mid-copy now fails its claim
  std::atomic_thread_fence(std::memory_order_release);
  std::memcpy(&hint_data_[index * hint_size_], hint, sizeof(float) * hint_size_);
  const uint64_t filed = busy | (static_cast<uint64_t>(seq) + 1);
  slot.stamp.store(filed, std::memory_order_seq_cst);
  if (seq + window() <= now_.load(std::memory_order_seq_cst)) {
    // The audio thread reached chunk seq + d while we filed: whoever claims wins.
    uint64_t expected = filed;
    if (slot.stamp.compare_exchange_strong(expected, busy, std::memory_order_seq_cst)) {
      late_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  }
  return true;
}

void HintLink::reset() {
  for (Slot& s : hint_stamps_) s.stamp.store(0, std::memory_order_relaxed);
  for (int64_t& j : taken_) j = -1;
  chunk_head_.store(0, std::memory_order_relaxed);
  chunk_tail_.store(0, std::memory_order_relaxed);
  now_.store(-1, std::memory_order_relaxed);
  for (auto* c : {&on_time_, &lost_, &queued_, &send_dropped_, &late_}) c->store(0);
}

LinkCounters HintLink::counters() const {
  LinkCounters c;
  c.on_time = on_time_.load(std::memory_order_relaxed);
  c.lost = lost_.load(std::memory_order_relaxed);
  c.late = late_.load(std::memory_order_relaxed);
  c.queued = queued_.load(std::memory_order_relaxed);
  c.send_dropped = send_dropped_.load(std::memory_order_relaxed);
  return c;
}

}  // namespace kb
