// The audio side's end of the hint link: two lock-free rings between the
// audio thread and the network thread.
//
// Outgoing: the audio thread queues each input chunk (send), the network
// thread takes them in order (next_chunk). Incoming: the network thread files
// each hint by the chunk number it was made from (deliver), the audio thread
// takes the one it needs (take: the hint of chunk t - d, for a fixed-delay
// model) or every one still young enough (take_fresh: each hint of a chunk
// t - a with 1 <= a <= max_age, once, for an any-delay model). Single
// producer, single consumer on each; no locks, no allocation and no system call on either side after
// construction. The accounting (on time / late / lost) is exact under any
// interleaving: every hint the audio thread needed is either taken on time or
// counted lost, and a hint filed after its chunk ran is counted late.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

namespace kb {

struct LinkCounters {
  uint64_t on_time = 0;       // needed and there when its chunk ran
  uint64_t lost = 0;          // needed and not there (late ones included)
  uint64_t late = 0;          // filed after the chunk that needed it ran
  uint64_t queued = 0;        // input chunks queued for the server
  uint64_t send_dropped = 0;  // input chunks dropped: the outgoing ring was full
};

class HintLink {
 public:
  // channels: input channels per chunk; hint_channels: rows of 97 per hint;
  // delay: a fixed-delay model's hint delay d (the hint of chunk t - d is used
  // at t); max_age: an any-delay model's oldest usable age (then delay is 0).
  HintLink(int channels, int hint_channels, int delay, int max_age = 0, int hint_slots = 64,
           int chunk_slots = 32);
  HintLink(const HintLink&) = delete;
  HintLink& operator=(const HintLink&) = delete;

  // ---- audio thread ----
  // Queue input chunk `seq` ([channels x 128]); false (and counted) if the ring is full.
  bool send(int64_t seq, const float* chunk);
  // At chunk t: copy the hint of chunk t - d into `hint` and return true, or
  // return false (counted lost when t - d >= 0). Also publishes t as "now".
  bool take(int64_t t, float* hint);
  // Any-delay: at chunk t, copy every hint of a chunk t - a (1 <= a <= max_age)
  // filed since the last call into `hints` [max_age x hint_size], its age into
  // `ages`, and return how many. A hint whose chunk leaves the window untaken
  // is counted lost. Also publishes t as "now".
  int take_fresh(int64_t t, float* hints, int* ages);

  // ---- network thread ----
  // The oldest queued chunk: its number in `seq`, its samples into `chunk`.
  bool next_chunk(int64_t* seq, float* chunk);
  // File the hint made from chunk `seq`; false if it came too late to be used
  // (then counted late) or is of a chunk the audio side has not sent yet.
  // Call it from one thread only.
  bool deliver(int64_t seq, const float* hint);
  // The chunk the audio thread is at (-1 before the first).
  int64_t now() const { return now_.load(std::memory_order_acquire); }

  LinkCounters counters() const;
  // Empty both rings, forget "now" and zero the counters: for a new stream
  // (offline runs); not while either thread uses the link.
  void reset();
  int channels() const { return channels_; }
  int hint_channels() const { return hint_channels_; }
  int delay() const { return delay_; }
  int max_age() const { return max_age_; }
  // The oldest a hint may be when taken: the window a hint is on time in.
  int window() const { return max_age_ ? max_age_ : delay_; }
  // The first chunk a hint can exist for.
  int first_hint_chunk() const { return max_age_ ? 1 : delay_; }
  int hint_size() const { return hint_size_; }

 private:
  // A slot's stamp: bits 40.. a write version, bits 0..39 the hint's chunk
  // number + 1 (0: empty). Every write and every claim changes the stamp, so
  // a compare-and-swap on the stamp seen before a copy proves the copy whole.
  static constexpr int kSeqBits = 40;
  static constexpr uint64_t kSeqMask = (uint64_t{1} << kSeqBits) - 1;
  static uint64_t seq_of(uint64_t stamp) { return stamp & kSeqMask; }
  static uint64_t emptied(uint64_t stamp) { return stamp & ~kSeqMask; }

  struct alignas(64) Slot {
    std::atomic<uint64_t> stamp{0};
  };

  // Copy slot j's hint into `hint` and claim it; false if it is not there or
  // was rewritten or taken back meanwhile.
  bool claim(int64_t j, float* hint);

  int channels_, hint_channels_, delay_, max_age_, hint_size_, chunk_size_;
  std::vector<Slot> hint_stamps_;
  std::vector<int64_t> taken_;  // any-delay, audio thread only: the chunk each slot gave last
  std::vector<float> hint_data_;  // [hint_slots x hint_size]
  std::vector<int64_t> chunk_seqs_;
  std::vector<float> chunk_data_;  // [chunk_slots x channels x 128]
  alignas(64) std::atomic<uint64_t> chunk_head_{0};  // written by the audio thread
  alignas(64) std::atomic<uint64_t> chunk_tail_{0};  // written by the network thread
  alignas(64) std::atomic<int64_t> now_{-1};
  std::atomic<uint64_t> on_time_{0}, lost_{0}, queued_{0}, send_dropped_{0};
  std::atomic<uint64_t> late_{0};
};

}  // namespace kb
