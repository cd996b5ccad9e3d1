// bench/dispatch/containers.h
// -----------------------------------------------------------------------------
//
// The two fixed-capacity containers the dispatch workload is built from: a slab (stable integer
// keys, O(1) insert and remove, vacant entries reused last-in first-out, like Rust's
// `slab::Slab` that the reference study uses) and a ring FIFO.
//
// Both are sized once at construction, outside the timed region, and never allocate afterwards:
// exceeding a capacity is a programmer error (a failed SQLOOP_CHECK), not a reallocation. That is
// what makes "0 allocations per iteration" a property of the code rather than of luck.
//
// Example:
//
//   Slab<Connection> connections(kConnections);
//   const uint32_t key = connections.Insert();  // Stale contents: initialize every field.
//   connections[key] = Connection{...};
//   connections.Remove(key);
#ifndef SQLOOP_BENCH_DISPATCH_CONTAINERS_H_
#define SQLOOP_BENCH_DISPATCH_CONTAINERS_H_

#include <cstdint>
#include <vector>

#include "sqloop/alloc/check.h"

namespace sqloop::bench::dispatch {

// A fixed-capacity slab. Keys are indexes into one vector, so lookups are one multiply-add.
template <typename T>
class Slab {
 public:
  explicit Slab(uint32_t capacity) : entries_(capacity) {}

  Slab(const Slab&) = delete;
  Slab& operator=(const Slab&) = delete;

  // Claims a vacant entry and returns its key. The entry's value is left as its previous
  // occupant wrote it (no constructor runs), so the caller must assign every field.
  [[nodiscard]] uint32_t Insert() {
    SQLOOP_CHECK(size_ < entries_.size(), "Slab::Insert: the slab is full; raise its capacity");
    uint32_t key = free_head_;
    if (key != kNoKey) {
      free_head_ = entries_[key].next_free;
    } else {
      key = high_water_++;
    }
    entries_[key].occupied = true;
    ++size_;
    return key;
  }

  // Releases `key`; it becomes the next key Insert() hands out.
  void Remove(uint32_t key) {
    SQLOOP_CHECK(key < high_water_ && entries_[key].occupied,
                 "Slab::Remove: the key is not occupied");
    entries_[key].occupied = false;
    entries_[key].next_free = free_head_;
    free_head_ = key;
    --size_;
  }

  T& operator[](uint32_t key) { return entries_[key].value; }
  const T& operator[](uint32_t key) const { return entries_[key].value; }

  // Calls `visit(value)` for every occupied entry in key order. This is O(high-water mark), not
  // O(size): the same cost as iterating Rust's slab.
  template <typename Visit>
  void ForEach(Visit&& visit) const {
    for (uint32_t key = 0; key < high_water_; ++key) {
      if (entries_[key].occupied) visit(entries_[key].value);
    }
  }

  // Forgets the free-list order so that every iteration of the workload hands out keys in the
  // same sequence. Only legal when empty.
  void Reset() {
    SQLOOP_CHECK(size_ == 0, "Slab::Reset: entries are still occupied");
    high_water_ = 0;
    free_head_ = kNoKey;
  }

  [[nodiscard]] uint32_t size() const { return size_; }

 private:
  static constexpr uint32_t kNoKey = UINT32_MAX;

  struct Entry {
    T value{};
    uint32_t next_free = kNoKey;  // Valid only while vacant.
    bool occupied = false;
  };

  std::vector<Entry> entries_;
  uint32_t high_water_ = 0;  // Entries at or past this index have never been used.
  uint32_t free_head_ = kNoKey;
  uint32_t size_ = 0;
};

// A fixed-capacity FIFO ring.
template <typename T>
class RingQueue {
 public:
  explicit RingQueue(uint32_t capacity) : slots_(capacity) {}

  RingQueue(const RingQueue&) = delete;
  RingQueue& operator=(const RingQueue&) = delete;

  void Push(T value) {
    SQLOOP_CHECK(size_ < slots_.size(), "RingQueue::Push: the queue is full");
    uint32_t tail = head_ + size_;
    if (tail >= slots_.size()) tail -= static_cast<uint32_t>(slots_.size());
    slots_[tail] = value;
    ++size_;
  }

  [[nodiscard]] T Pop() {
    SQLOOP_CHECK(size_ > 0, "RingQueue::Pop: the queue is empty");
    T value = slots_[head_];
    if (++head_ == slots_.size()) head_ = 0;
    --size_;
    return value;
  }

  [[nodiscard]] bool empty() const { return size_ == 0; }
  [[nodiscard]] uint32_t size() const { return size_; }

 private:
  std::vector<T> slots_;
  uint32_t head_ = 0;
  uint32_t size_ = 0;
};

}  // namespace sqloop::bench::dispatch

#endif  // SQLOOP_BENCH_DISPATCH_CONTAINERS_H_
