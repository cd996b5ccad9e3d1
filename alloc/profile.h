// alloc/profile.h
// -----------------------------------------------------------------------------
//
// `AllocationProfile` answers "who holds the memory?": per allocation site (a tag such as
// "arena:request-scratch") and per tenant (a database), the number of allocations and frees,
// the bytes allocated in total, the bytes live now, the peak of live bytes, and the
// allocations refused by a limit. It prints as an aligned text table (for people) and as JSON
// (for scripts); docs/allocation.md explains how to read both.
//
// It is cheap enough to leave on in production:
//   * an entry is looked up once (`Site()`/`Tenant()`, which allocates the first time a name is
//     seen) and then recorded by its id: an index into a vector, no hashing, no allocation;
//   * recording is a handful of integer adds and one compare for the peak.
//
// Two ways to fill it:
//   * live recording with `RecordAllocation()`/`RecordFree()` (what `Arena` does for chunks);
//   * snapshot import with `Set()` (what `ExportSqliteMemoryProfile()` does for tenants, whose
//     counters live in the SQLite allocator's lock-free table).
//
// A profile is not thread-safe; keep one per loop and merge when reporting.
//
// Example:
//
//   sqloop::alloc::AllocationProfile profile;
//   const auto site = profile.Site("parser");
//   profile.RecordAllocation(site, 128);
//   profile.RecordFree(site, 128);
//   std::fputs(profile.ToTable().c_str(), stdout);
#ifndef SQLOOP_ALLOC_PROFILE_H_
#define SQLOOP_ALLOC_PROFILE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace sqloop::alloc {

// Identifies one entry of one profile. Ids are dense indexes, stable for the profile's life.
using ProfileEntryId = uint32_t;

enum class ProfileKind : uint8_t {
  kTenant,  // A database (or the "shared" bucket): who the memory is for.
  kSite,    // A tag naming the code that allocates: what the memory is for.
};

struct ProfileCounters {
  uint64_t allocations = 0;      // Blocks obtained (a resize counts as one allocation...
  uint64_t frees = 0;            // ...and one free, so allocations - frees = live blocks).
  uint64_t bytes_allocated = 0;  // Sum of the sizes obtained.
  uint64_t live_bytes = 0;       // Bytes obtained and not yet freed.
  uint64_t peak_live_bytes = 0;  // Most `live_bytes` ever reached.
  uint64_t failures = 0;         // Allocations refused (limit reached or heap exhausted).
};

class AllocationProfile {
 public:
  AllocationProfile() = default;
  AllocationProfile(const AllocationProfile&) = delete;
  AllocationProfile& operator=(const AllocationProfile&) = delete;

  // Returns the id of the site or tenant entry named `name`, creating it (and allocating) the
  // first time. Sites and tenants are separate namespaces.
  [[nodiscard]] ProfileEntryId Site(absl::string_view name) {
    return Entry(ProfileKind::kSite, name);
  }
  [[nodiscard]] ProfileEntryId Tenant(absl::string_view name) {
    return Entry(ProfileKind::kTenant, name);
  }
  [[nodiscard]] ProfileEntryId Entry(ProfileKind kind, absl::string_view name);

  // Records one block of `size_bytes` obtained / released / refused. Never allocates.
  // Releasing more than is live is a programmer error (an unbalanced free).
  void RecordAllocation(ProfileEntryId id, uint64_t size_bytes);
  void RecordFree(ProfileEntryId id, uint64_t size_bytes);
  void RecordFailure(ProfileEntryId id) { At(id).counters.failures++; }

  // Replaces an entry's counters with a snapshot taken elsewhere.
  void Set(ProfileEntryId id, const ProfileCounters& counters) { At(id).counters = counters; }

  [[nodiscard]] const ProfileCounters& counters(ProfileEntryId id) const {
    return entries_[CheckedIndex(id)].counters;
  }
  [[nodiscard]] size_t size() const { return entries_.size(); }

  // An aligned text table: one header line, then tenants, then sites, each group ordered by
  // peak live bytes (largest first) and then by name, so the same profile prints the same.
  [[nodiscard]] std::string ToTable() const;

  // {"tenants":[{"name":...,"allocations":...,...}],"sites":[...]}, ordered like ToTable().
  [[nodiscard]] std::string ToJson() const;

 private:
  struct EntryData {
    ProfileKind kind;
    std::string name;
    ProfileCounters counters;
  };

  size_t CheckedIndex(ProfileEntryId id) const;
  EntryData& At(ProfileEntryId id) { return entries_[CheckedIndex(id)]; }
  // Entry indexes in print order.
  std::vector<size_t> SortedIndexes() const;

  std::vector<EntryData> entries_;
  absl::flat_hash_map<std::string, ProfileEntryId> sites_;
  absl::flat_hash_map<std::string, ProfileEntryId> tenants_;
};

}  // namespace sqloop::alloc

#endif  // SQLOOP_ALLOC_PROFILE_H_
