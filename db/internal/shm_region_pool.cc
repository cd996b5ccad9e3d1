#include "sqloop/db/internal/shm_region_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>

#include "sqloop/alloc/check.h"

namespace sqloop::db::internal {
namespace {

constexpr size_t kMappingBytes = ShmRegionPool::kRegionBytes * ShmRegionPool::kRegionsPerMapping;

}  // namespace

ShmRegionPool::~ShmRegionPool() {
  SQLOOP_CHECK(in_use_ == 0, "ShmRegionPool destroyed while a WAL index still uses a region");
  for (void* mapping : mappings_) munmap(mapping, kMappingBytes);
}

char* ShmRegionPool::Obtain() {
  if (free_.empty()) {
    void* mapping = mmap(nullptr, kMappingBytes, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapping == MAP_FAILED) return nullptr;
    mappings_.push_back(mapping);
    // Highest address first on the stack, so regions go out in address order.
    for (size_t i = kRegionsPerMapping; i > 0; --i) {
      free_.push_back(static_cast<char*>(mapping) + (i - 1) * kRegionBytes);
    }
  }
  char* region = free_.back();
  free_.pop_back();
  ++in_use_;
  return region;
}

void ShmRegionPool::Release(char* region) {
  SQLOOP_CHECK(in_use_ > 0, "ShmRegionPool::Release of a region the pool did not hand out");
  --in_use_;
  // Invariant 1: only the first page in memory (the WAL index's header, which every holder
  // writes) is zeroed and kept; otherwise every page goes back to the kernel.
  static const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::array<unsigned char, kRegionBytes / 4096> resident{};
  const bool known = page == 4096 && mincore(region, kRegionBytes, resident.data()) == 0;
  if (known && std::none_of(resident.begin() + 1, resident.end(),
                            [](unsigned char bits) { return (bits & 1) != 0; })) {
    if ((resident[0] & 1) != 0) std::memset(region, 0, page);
    free_.push_back(region);
    return;
  }
  // MADV_DONTNEED cannot fail on a private anonymous mapping of ours; were it to, the region
  // would not be zero on its next use, so the pool stops handing it out (invariant 1).
  if (madvise(region, kRegionBytes, MADV_DONTNEED) == 0) free_.push_back(region);
}

}  // namespace sqloop::db::internal
