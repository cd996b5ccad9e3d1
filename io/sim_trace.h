// io/sim_trace.h
// -----------------------------------------------------------------------------
//
// The running trace hash of the deterministic simulator: 64-bit FNV-1a over fixed-width,
// little-endian fields.
//
// Two runs of the same seed must fold the same events with the same values in the same order,
// so the hash only ever sees integers the simulation itself decided (op kinds, virtual fds,
// lengths, offsets, results, virtual times, hashes of data). It never sees a pointer, an address,
// a wall-clock time or a `size_t` whose width depends on the target: any of those would make the
// hash differ between machines or builds, and a trace that differs for reasons other than the
// program's behaviour is useless for replay.
//
// Example:
//
//   sqloop::io::TraceHash trace;
//   trace.Fold(kEventSubmit);
//   trace.Fold(op_id);
//   uint64_t value = trace.value();
#ifndef SQLOOP_IO_SIM_TRACE_H_
#define SQLOOP_IO_SIM_TRACE_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace sqloop::io {

class TraceHash {
 public:
  // FNV-1a's published 64-bit offset basis and prime.
  static constexpr uint64_t kOffsetBasis = 0xcbf29ce484222325ULL;
  static constexpr uint64_t kPrime = 0x100000001b3ULL;

  // Folds the eight bytes of `word`, least significant first, whatever the host's byte order.
  void Fold(uint64_t word) {
    for (int i = 0; i < 8; ++i) {
      value_ = (value_ ^ ((word >> (8 * i)) & 0xff)) * kPrime;
    }
  }
  void FoldSigned(int64_t word) { Fold(static_cast<uint64_t>(word)); }

  // Folds the length, then the bytes, so ("ab", "c") and ("a", "bc") differ.
  void FoldBytes(absl::string_view bytes) {
    Fold(static_cast<uint64_t>(bytes.size()));
    for (char c : bytes) value_ = (value_ ^ static_cast<uint8_t>(c)) * kPrime;
  }

  [[nodiscard]] uint64_t value() const { return value_; }

  // The FNV-1a hash of `bytes` alone (for folding a digest of a large buffer as one word).
  [[nodiscard]] static uint64_t Of(absl::string_view bytes) {
    TraceHash hash;
    for (char c : bytes) hash.value_ = (hash.value_ ^ static_cast<uint8_t>(c)) * kPrime;
    return hash.value_;
  }

 private:
  uint64_t value_ = kOffsetBasis;
};

}  // namespace sqloop::io

#endif  // SQLOOP_IO_SIM_TRACE_H_
