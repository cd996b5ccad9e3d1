#include "sqloop/alloc/profile.h"

#include <algorithm>
#include <array>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "sqloop/alloc/check.h"

namespace sqloop::alloc {
namespace {

constexpr std::array<absl::string_view, 8> kColumns = {
    "kind",    "name", "allocations", "frees", "bytes_allocated", "live_bytes", "peak_live_bytes",
    "failures"};

absl::string_view KindName(ProfileKind kind) {
  return kind == ProfileKind::kTenant ? "tenant" : "site";
}

std::array<uint64_t, 6> Numbers(const ProfileCounters& c) {
  return {c.allocations, c.frees, c.bytes_allocated, c.live_bytes, c.peak_live_bytes, c.failures};
}

// Escapes a name for a JSON string: quotes, backslashes and control characters.
void AppendJsonString(std::string* out, absl::string_view text) {
  out->push_back('"');
  for (const char ch : text) {
    const auto byte = static_cast<unsigned char>(ch);
    if (ch == '"' || ch == '\\') {
      out->push_back('\\');
      out->push_back(ch);
    } else if (byte < 0x20) {
      absl::StrAppendFormat(out, "\\u%04x", byte);
    } else {
      out->push_back(ch);
    }
  }
  out->push_back('"');
}

}  // namespace

ProfileEntryId AllocationProfile::Entry(ProfileKind kind, absl::string_view name) {
  auto& index = kind == ProfileKind::kSite ? sites_ : tenants_;
  // Heterogeneous lookup: no std::string is built when the name is already known.
  if (const auto it = index.find(name); it != index.end()) return it->second;
  const auto id = static_cast<ProfileEntryId>(entries_.size());
  entries_.push_back(EntryData{kind, std::string(name), ProfileCounters{}});
  index.emplace(std::string(name), id);
  return id;
}

size_t AllocationProfile::CheckedIndex(ProfileEntryId id) const {
  SQLOOP_CHECK(id < entries_.size(), "AllocationProfile: id was not returned by this profile");
  return id;
}

void AllocationProfile::RecordAllocation(ProfileEntryId id, uint64_t size_bytes) {
  ProfileCounters& c = At(id).counters;
  c.allocations++;
  c.bytes_allocated += size_bytes;
  c.live_bytes += size_bytes;
  c.peak_live_bytes = std::max(c.peak_live_bytes, c.live_bytes);
}

void AllocationProfile::RecordFree(ProfileEntryId id, uint64_t size_bytes) {
  ProfileCounters& c = At(id).counters;
  SQLOOP_CHECK(c.live_bytes >= size_bytes,
               "AllocationProfile::RecordFree: more bytes freed than are live for this entry");
  c.frees++;
  c.live_bytes -= size_bytes;
}

std::vector<size_t> AllocationProfile::SortedIndexes() const {
  std::vector<size_t> order(entries_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [this](size_t a, size_t b) {
    const EntryData& x = entries_[a];
    const EntryData& y = entries_[b];
    if (x.kind != y.kind) return x.kind < y.kind;
    if (x.counters.peak_live_bytes != y.counters.peak_live_bytes) {
      return x.counters.peak_live_bytes > y.counters.peak_live_bytes;
    }
    return x.name < y.name;
  });
  return order;
}

std::string AllocationProfile::ToTable() const {
  const std::vector<size_t> order = SortedIndexes();
  // Rows as text first, so every column can be as wide as its widest cell.
  std::vector<std::array<std::string, kColumns.size()>> rows;
  rows.reserve(order.size());
  for (const size_t i : order) {
    auto& row = rows.emplace_back();
    row[0] = std::string(KindName(entries_[i].kind));
    row[1] = entries_[i].name;
    const auto numbers = Numbers(entries_[i].counters);
    for (size_t n = 0; n < numbers.size(); ++n) row[2 + n] = absl::StrCat(numbers[n]);
  }
  std::array<size_t, kColumns.size()> widths{};
  for (size_t c = 0; c < kColumns.size(); ++c) {
    widths[c] = kColumns[c].size();
    for (const auto& row : rows) widths[c] = std::max(widths[c], row[c].size());
  }
  std::string out;
  const auto append_row = [&](auto cell) {
    for (size_t c = 0; c < kColumns.size(); ++c) {
      // Text columns are left-aligned, numbers right-aligned, two spaces apart.
      const absl::string_view text = cell(c);
      const std::string padding(widths[c] - text.size(), ' ');
      absl::StrAppend(&out, c < 2 ? text : padding, c < 2 ? padding : text);
      out += c + 1 < kColumns.size() ? "  " : "\n";
    }
  };
  append_row([](size_t c) { return kColumns[c]; });
  for (const auto& row : rows) {
    append_row([&row](size_t c) { return absl::string_view(row[c]); });
  }
  return out;
}

std::string AllocationProfile::ToJson() const {
  const std::vector<size_t> order = SortedIndexes();
  std::string out = "{";
  for (const ProfileKind kind : {ProfileKind::kTenant, ProfileKind::kSite}) {
    absl::StrAppend(&out, kind == ProfileKind::kTenant ? "\"tenants\":[" : ",\"sites\":[");
    bool first = true;
    for (const size_t i : order) {
      if (entries_[i].kind != kind) continue;
      absl::StrAppend(&out, first ? "" : ",", "{\"name\":");
      first = false;
      AppendJsonString(&out, entries_[i].name);
      const auto numbers = Numbers(entries_[i].counters);
      for (size_t n = 0; n < numbers.size(); ++n) {
        absl::StrAppend(&out, ",\"", kColumns[2 + n], "\":", numbers[n]);
      }
      out += "}";
    }
    out += "]";
  }
  out += "}";
  return out;
}

}  // namespace sqloop::alloc
