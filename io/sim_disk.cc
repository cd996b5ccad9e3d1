#include "sqloop/io/sim_disk.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include "sqloop/alloc/check.h"

namespace sqloop::io {
namespace {

constexpr uint64_t kRootNode = 0;

// Applies one pending operation to a byte image, exactly as it was applied to `visible`.
void ApplyPending(std::string& image, bool truncate, uint64_t offset, absl::string_view data) {
  if (truncate) {
    image.resize(offset, '\0');
    return;
  }
  const uint64_t end = offset + data.size();
  if (image.size() < end) image.resize(end, '\0');
  std::memcpy(image.data() + offset, data.data(), data.size());
}

// Fills `bytes` with garbage from the crash's stream: what a torn sector holds is unspecified,
// and deterministic garbage is the only kind a replay can reproduce.
void FillGarbage(char* bytes, uint64_t length, Prng& prng) {
  uint64_t word = 0;
  for (uint64_t i = 0; i < length; ++i) {
    if (i % 8 == 0) word = prng.Next();
    bytes[i] = static_cast<char>(word >> (8 * (i % 8)));
  }
}

}  // namespace

bool NormalizeSimPath(absl::string_view path, std::string& normal, std::string& parent) {
  if (path.empty() || path[0] != '/') return false;
  normal.clear();
  size_t start = 0;
  while (start < path.size()) {
    size_t end = path.find('/', start);
    if (end == absl::string_view::npos) end = path.size();
    const absl::string_view part = path.substr(start, end - start);
    start = end + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return false;
    normal.push_back('/');
    normal.append(part.data(), part.size());
  }
  if (normal.empty()) {
    normal.push_back('/');  // Not `normal = "/"`: gcc 12 -O2 misfires -Wrestrict on that.
    parent.clear();         // The root has no parent.
    return true;
  }
  const size_t slash = normal.rfind('/');
  parent = slash == 0 ? std::string("/") : normal.substr(0, slash);
  return true;
}

SimDisk::SimDisk(SimDiskOptions options) : options_(options) {
  Node root;
  root.directory = true;
  root.path = "/";
  nodes_.emplace(kRootNode, std::move(root));
  names_["/"] = kRootNode;
  durable_names_["/"] = kRootNode;
  next_node_ = kRootNode + 1;
}

SimDisk::Node* SimDisk::Find(uint64_t node) {
  auto it = nodes_.find(node);
  return it == nodes_.end() ? nullptr : &it->second;
}

const SimDisk::Node* SimDisk::Find(uint64_t node) const {
  auto it = nodes_.find(node);
  return it == nodes_.end() ? nullptr : &it->second;
}

int64_t SimDisk::Create(const std::string& path, uint64_t parent, bool directory) {
  const uint64_t id = next_node_++;
  Node node;
  node.directory = directory;
  node.path = path;
  node.parent = parent;
  nodes_.emplace(id, std::move(node));
  names_[path] = id;
  RecordName(parent, /*create=*/true, path, id);
  return static_cast<int64_t>(id);
}

void SimDisk::RecordName(uint64_t parent, bool create, const std::string& path, uint64_t node) {
  Node* directory = Find(parent);
  SQLOOP_CHECK(directory != nullptr && directory->directory,
               "SimDisk: a name changed in a directory that does not exist");
  directory->name_ops.push_back(NameOp{.create = create, .path = path, .node = node});
}

int64_t SimDisk::Open(absl::string_view path, int flags, uint32_t /*mode*/) {
  std::string normal;
  std::string parent;
  if (!NormalizeSimPath(path, normal, parent)) return -EINVAL;
  const bool writable = (flags & O_ACCMODE) != O_RDONLY;
  uint64_t id = 0;
  auto it = names_.find(normal);
  if (it == names_.end()) {
    if ((flags & O_CREAT) == 0) return -ENOENT;
    if ((flags & O_DIRECTORY) != 0) return -EINVAL;
    auto parent_it = names_.find(parent);
    if (parent_it == names_.end()) return -ENOENT;
    if (!nodes_.at(parent_it->second).directory) return -ENOTDIR;
    id = static_cast<uint64_t>(Create(normal, parent_it->second, /*directory=*/false));
  } else {
    id = it->second;
    Node& node = nodes_.at(id);
    if ((flags & O_CREAT) != 0 && (flags & O_EXCL) != 0) return -EEXIST;
    if ((flags & O_DIRECTORY) != 0 && !node.directory) return -ENOTDIR;
    if (node.directory && writable) return -EISDIR;
    if (!node.directory && writable && (flags & O_TRUNC) != 0) {
      const int truncated = Truncate(id, 0);
      if (truncated < 0) return truncated;
    }
  }
  ++nodes_.at(id).references;
  return static_cast<int64_t>(id);
}

bool SimDisk::Reachable(uint64_t id, const Node& node) const {
  auto visible = names_.find(node.path);
  if (visible != names_.end() && visible->second == id) return true;
  auto durable = durable_names_.find(node.path);
  if (durable != durable_names_.end() && durable->second == id) return true;
  const Node* parent = Find(node.parent);
  if (parent == nullptr) return false;
  return std::any_of(parent->name_ops.begin(), parent->name_ops.end(),
                     [id](const NameOp& op) { return op.node == id; });
}

void SimDisk::MaybeErase(uint64_t id) {
  auto it = nodes_.find(id);
  if (it == nodes_.end() || id == kRootNode) return;
  if (it->second.references > 0 || Reachable(id, it->second)) return;
  used_bytes_ -= it->second.visible.size();
  nodes_.erase(it);
}

void SimDisk::Release(uint64_t node) {
  Node* n = Find(node);
  SQLOOP_CHECK(n != nullptr && n->references > 0,
               "SimDisk::Release: the node was not opened (or already released)");
  --n->references;
  MaybeErase(node);
}

int SimDisk::Unlink(absl::string_view path, bool remove_directory) {
  std::string normal;
  std::string parent;
  if (!NormalizeSimPath(path, normal, parent)) return -EINVAL;
  if (normal == "/") return -EBUSY;
  auto it = names_.find(normal);
  if (it == names_.end()) return -ENOENT;
  const uint64_t id = it->second;
  const Node& node = nodes_.at(id);
  if (node.directory && !remove_directory) return -EISDIR;
  if (!node.directory && remove_directory) return -ENOTDIR;
  if (node.directory) {
    auto child = names_.lower_bound(normal + "/");
    if (child != names_.end() && child->first.compare(0, normal.size() + 1, normal + "/") == 0) {
      return -ENOTEMPTY;
    }
  }
  names_.erase(it);
  RecordName(node.parent, /*create=*/false, normal, id);
  MaybeErase(id);
  return 0;
}

int SimDisk::MakeDirectory(absl::string_view path) {
  std::string normal;
  std::string parent;
  if (!NormalizeSimPath(path, normal, parent)) return -EINVAL;
  if (names_.contains(normal)) return -EEXIST;
  auto parent_it = names_.find(parent);
  if (parent_it == names_.end()) return -ENOENT;
  if (!nodes_.at(parent_it->second).directory) return -ENOTDIR;
  const uint64_t id = static_cast<uint64_t>(Create(normal, parent_it->second, /*directory=*/true));
  // Durable at once: drop the pending creation Create() recorded and make the name durable.
  nodes_.at(parent_it->second).name_ops.pop_back();
  durable_names_[normal] = id;
  return 0;
}

std::optional<uint64_t> SimDisk::Lookup(absl::string_view path) const {
  std::string normal;
  std::string parent;
  if (!NormalizeSimPath(path, normal, parent)) return std::nullopt;
  auto it = names_.find(normal);
  if (it == names_.end()) return std::nullopt;
  return it->second;
}

bool SimDisk::IsDirectory(uint64_t node) const {
  const Node* n = Find(node);
  return n != nullptr && n->directory;
}

std::string SimDisk::DirectoryPath(uint64_t node) const {
  const Node* n = Find(node);
  return n != nullptr && n->directory ? n->path : std::string();
}

int64_t SimDisk::Read(uint64_t node, void* buffer, uint32_t length, uint64_t offset) {
  Node* n = Find(node);
  if (n == nullptr) return -EBADF;
  if (n->directory) return -EISDIR;
  if (length == 0 || offset >= n->visible.size()) return 0;
  const uint64_t count = std::min<uint64_t>(length, n->visible.size() - offset);
  std::memcpy(buffer, n->visible.data() + offset, count);
  Cache(*n, offset, count);
  return static_cast<int64_t>(count);
}

void SimDisk::Cache(Node& node, uint64_t offset, uint64_t length) {
  if (length == 0) return;
  const uint64_t last = (offset + length - 1) / kSimPageBytes;
  if (node.cached.size() <= last) node.cached.resize(last + 1, false);
  for (uint64_t page = offset / kSimPageBytes; page <= last; ++page) node.cached[page] = true;
}

int64_t SimDisk::ReadCached(uint64_t node, void* buffer, uint32_t length, uint64_t offset) const {
  const Node* n = Find(node);
  if (n == nullptr) return -EBADF;
  if (n->directory) return -EISDIR;
  if (length == 0 || offset >= n->visible.size()) return 0;
  const uint64_t end = std::min<uint64_t>(offset + length, n->visible.size());
  uint64_t reach = offset;  // The end of the cached run that starts at `offset`.
  while (reach < end) {
    const uint64_t page = reach / kSimPageBytes;
    if (page >= n->cached.size() || !n->cached[page]) break;
    reach = (page + 1) * kSimPageBytes;
  }
  if (reach == offset) return -EAGAIN;
  const uint64_t count = std::min(reach, end) - offset;
  std::memcpy(buffer, n->visible.data() + offset, count);
  return static_cast<int64_t>(count);
}

void SimDisk::DropCaches() {
  for (auto& [id, node] : nodes_) node.cached.clear();
}

int SimDisk::ResizeVisible(Node& node, uint64_t size_bytes) {
  const uint64_t size = node.visible.size();
  if (size_bytes > size) {
    const uint64_t growth = size_bytes - size;
    if (growth > options_.capacity_bytes || used_bytes_ + growth > options_.capacity_bytes) {
      return -ENOSPC;
    }
    used_bytes_ += growth;
  } else {
    used_bytes_ -= size - size_bytes;
  }
  node.visible.resize(size_bytes, '\0');
  return 0;
}

int64_t SimDisk::Write(uint64_t node, const void* buffer, uint32_t length, uint64_t offset) {
  Node* n = Find(node);
  if (n == nullptr) return -EBADF;
  if (n->directory) return -EISDIR;
  if (length == 0) return 0;  // pwrite(2) of nothing changes nothing, not even the size.
  if (offset > options_.capacity_bytes) return -ENOSPC;
  const uint64_t end = offset + length;
  if (end > n->visible.size()) {
    const int resized = ResizeVisible(*n, end);
    if (resized < 0) return resized;
  }
  std::memcpy(n->visible.data() + offset, buffer, length);
  Cache(*n, offset, length);
  n->pending.push_back(PendingOp{.truncate = false,
                                 .offset = offset,
                                 .data = std::string(static_cast<const char*>(buffer), length)});
  return length;
}

int SimDisk::Truncate(uint64_t node, uint64_t size_bytes) {
  Node* n = Find(node);
  if (n == nullptr) return -EBADF;
  if (n->directory) return -EISDIR;
  const int resized = ResizeVisible(*n, size_bytes);
  if (resized < 0) return resized;
  n->pending.push_back(PendingOp{.truncate = true, .offset = size_bytes, .data = {}});
  return 0;
}

int SimDisk::Sync(uint64_t node) {
  Node* n = Find(node);
  if (n == nullptr) return -EBADF;
  if (options_.broken_fsync) return 0;  // The negative control: claim success, keep nothing.
  ++stats_.syncs;
  if (!n->directory) {
    for (const PendingOp& op : n->pending)
      ApplyPending(n->durable, op.truncate, op.offset, op.data);
    n->pending.clear();
    return 0;
  }
  std::vector<NameOp> name_ops;
  name_ops.swap(n->name_ops);
  for (const NameOp& op : name_ops) {
    if (op.create) {
      durable_names_[op.path] = op.node;
    } else {
      auto it = durable_names_.find(op.path);
      if (it != durable_names_.end() && it->second == op.node) durable_names_.erase(it);
    }
  }
  // Removed nodes that were only kept alive for a crash that might have undone the removal.
  for (const NameOp& op : name_ops) MaybeErase(op.node);
  return 0;
}

void SimDisk::FailSync(uint64_t node) {
  Node* n = Find(node);
  if (n == nullptr) return;
  ++stats_.failed_syncs;
  n->diverged = n->diverged || !n->pending.empty();
  n->pending.clear();
  std::vector<NameOp> name_ops;
  name_ops.swap(n->name_ops);
  for (const NameOp& op : name_ops) MaybeErase(op.node);
}

uint64_t SimDisk::SizeBytes(uint64_t node) const {
  const Node* n = Find(node);
  return n == nullptr ? 0 : n->visible.size();
}

void SimDisk::SetCrashProbabilities(double keep, double tear, double keep_name) {
  options_.crash_keep_probability = keep;
  options_.crash_tear_probability = tear;
  options_.crash_keep_name_probability = keep_name;
}

// Tears one write into `image`: each sector it touches independently gets the new bytes,
// keeps what was there, or receives garbage.
void SimDisk::TearWrite(std::string& image, const PendingOp& op, Prng& prng) {
  const uint64_t end = op.offset + op.data.size();
  if (image.size() < end) image.resize(end, '\0');
  uint64_t at = op.offset;
  while (at < end) {
    const uint64_t sector_end = std::min(end, (at / kSimSectorBytes + 1) * kSimSectorBytes);
    switch (prng.Below(3)) {
      case 0:
        std::memcpy(image.data() + at, op.data.data() + (at - op.offset), sector_end - at);
        break;
      case 1:
        break;  // The old bytes (zeros where the file was shorter).
      default:
        FillGarbage(image.data() + at, sector_end - at, prng);
        break;
    }
    at = sector_end;
  }
}

void SimDisk::CrashFile(Node& node, Prng& prng) {
  std::string image = node.durable;
  for (const PendingOp& op : node.pending) {
    const double fate = prng.Unit();
    if (fate < options_.crash_keep_probability) {
      ++stats_.crash_kept;
      ApplyPending(image, op.truncate, op.offset, op.data);
    } else if (!op.truncate &&
               fate < options_.crash_keep_probability + options_.crash_tear_probability) {
      ++stats_.crash_torn;
      TearWrite(image, op, prng);
    } else {
      ++stats_.crash_dropped;
    }
  }
  node.pending.clear();
  node.diverged = false;
  node.durable = image;
  node.visible = std::move(image);
}

void SimDisk::CrashNames(Prng& prng) {
  std::map<std::string, uint64_t> names = durable_names_;
  for (auto& [id, node] : nodes_) {
    for (const NameOp& op : node.name_ops) {
      if (!prng.Chance(options_.crash_keep_name_probability)) {
        ++stats_.crash_dropped;
        continue;
      }
      ++stats_.crash_kept;
      if (op.create) {
        names[op.path] = op.node;
      } else {
        auto it = names.find(op.path);
        if (it != names.end() && it->second == op.node) names.erase(it);
      }
    }
    node.name_ops.clear();
  }
  // Prune names whose parent did not survive. A parent sorts before its children (it is a
  // strict prefix), so one ordered pass suffices.
  for (auto it = names.begin(); it != names.end();) {
    std::string normal;
    std::string parent;
    const bool valid = NormalizeSimPath(it->first, normal, parent);
    SQLOOP_CHECK(valid, "SimDisk: a stored name is not normalised");
    auto parent_it = parent.empty() ? names.end() : names.find(parent);
    const bool orphan =
        !parent.empty() && (parent_it == names.end() || !nodes_.at(parent_it->second).directory);
    it = orphan ? names.erase(it) : std::next(it);
  }
  names_ = names;
  durable_names_ = std::move(names);
}

void SimDisk::Crash(Prng& prng) {
  ++stats_.crashes;
  for (auto& [id, node] : nodes_) {
    node.references = 0;
    node.cached.clear();  // A new boot: nothing is in memory.
    if (!node.directory) CrashFile(node, prng);
  }
  CrashNames(prng);
  std::set<uint64_t> reached;
  for (const auto& [path, id] : names_) reached.insert(id);
  used_bytes_ = 0;
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    if (!reached.contains(it->first)) {
      ++stats_.crash_vanished;
      it = nodes_.erase(it);
      continue;
    }
    used_bytes_ += it->second.visible.size();
    ++it;
  }
  AssertInvariants();
}

bool SimDisk::CorruptDurable(absl::string_view path, uint64_t offset, uint8_t mask) {
  std::optional<uint64_t> id = Lookup(path);
  if (!id.has_value()) return false;
  Node& node = nodes_.at(*id);
  if (node.directory || !node.pending.empty() || node.diverged) return false;
  if (offset >= node.durable.size() || node.visible.size() != node.durable.size()) return false;
  node.durable[offset] = static_cast<char>(node.durable[offset] ^ mask);
  node.visible[offset] = node.durable[offset];
  return true;
}

std::optional<std::string> SimDisk::VisibleContent(absl::string_view path) const {
  std::optional<uint64_t> id = Lookup(path);
  if (!id.has_value()) return std::nullopt;
  const Node& node = nodes_.at(*id);
  if (node.directory) return std::nullopt;
  return node.visible;
}

std::optional<std::string> SimDisk::DurableContent(absl::string_view path) const {
  std::string normal;
  std::string parent;
  if (!NormalizeSimPath(path, normal, parent)) return std::nullopt;
  auto it = durable_names_.find(normal);
  if (it == durable_names_.end()) return std::nullopt;
  const Node* node = Find(it->second);
  if (node == nullptr || node->directory) return std::nullopt;
  // A durable name whose parent's removal is durable would be pruned by any crash.
  for (std::string up = parent; !up.empty();) {
    if (!durable_names_.contains(up)) return std::nullopt;
    std::string up_normal;
    std::string up_parent;
    if (!NormalizeSimPath(up, up_normal, up_parent)) return std::nullopt;
    up = up_parent;
  }
  return node->durable;
}

uint32_t SimDisk::PendingOperations(absl::string_view path) const {
  std::optional<uint64_t> id = Lookup(path);
  if (!id.has_value()) return 0;
  const Node& node = nodes_.at(*id);
  uint32_t count = static_cast<uint32_t>(node.pending.size());
  const Node* parent = Find(node.parent);
  if (parent != nullptr && *id != kRootNode) {
    for (const NameOp& op : parent->name_ops) count += op.node == *id ? 1 : 0;
  }
  return count;
}

void SimDisk::AssertInvariants() const {
  uint64_t used = 0;
  for (const auto& [id, node] : nodes_) {
    used += node.visible.size();
    if (node.directory) {
      SQLOOP_CHECK(node.visible.empty() && node.pending.empty(),
                   "SimDisk invariant 2: a directory holds data");
      continue;
    }
    SQLOOP_CHECK(node.name_ops.empty(), "SimDisk invariant 2: a file holds name changes");
    if (node.diverged) continue;
    std::string image = node.durable;
    for (const PendingOp& op : node.pending) ApplyPending(image, op.truncate, op.offset, op.data);
    SQLOOP_CHECK(image == node.visible,
                 "SimDisk invariant 1: visible != durable + pending operations");
  }
  for (const auto& [path, id] : names_) {
    std::string normal;
    std::string parent;
    SQLOOP_CHECK(NormalizeSimPath(path, normal, parent) && normal == path,
                 "SimDisk invariant 3: a name is not normalised");
    SQLOOP_CHECK(nodes_.count(id) == 1, "SimDisk invariant 3: a name refers to no node");
    if (parent.empty()) continue;
    auto parent_it = names_.find(parent);
    SQLOOP_CHECK(parent_it != names_.end() && nodes_.at(parent_it->second).directory,
                 "SimDisk invariant 3: a visible name has no visible parent directory");
  }
  SQLOOP_CHECK(names_.count("/") == 1 && durable_names_.count("/") == 1,
               "SimDisk invariant 3: the root is gone");
  SQLOOP_CHECK(used == used_bytes_, "SimDisk invariant 4: used_bytes is not the visible total");
}

}  // namespace sqloop::io
