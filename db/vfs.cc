// The sqlite3_vfs and sqlite3_io_methods glue. Each SQLite entry point translates its arguments
// and calls one part of the database's DatabaseFiles (db/internal/database_files.h): its
// FileTable (descriptors), its EpochQueue (data calls and barriers) or its LockTable (locks and
// the WAL index). Temporary files are served from memory here.
#include "sqloop/db/vfs.h"

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/database_files.h"
#include "sqloop/db/internal/file_names.h"
#include "sqloop/db/internal/vfs_core.h"

namespace sqloop::db {
namespace {

using internal::DatabaseFiles;
using internal::FileNameOf;
using internal::FileRole;
using internal::FileTable;
using internal::FullPathOf;
using internal::kShmLocks;
using internal::SharedFile;
using internal::VfsCore;

// Longest path SQLite may hand us. 1024 is PATH_MAX's usual order of magnitude and far above
// the tenant paths a host builds.
constexpr int kPathBytesMax = 1024;

constexpr absl::string_view kWalSuffix = "-wal";
constexpr absl::string_view kJournalSuffix = "-journal";

// Only what is really true is claimed (SQLite trusts these to skip work):
//   POWERSAFE_OVERWRITE: a write never damages bytes outside its own range on power loss. SQLite
//     assumes it by default on unix; the simulated disk's crash model tears only sectors the
//     write itself touches, so it holds there by construction.
// Not claimed: ATOMIC* (a torn write is possible), SAFE_APPEND (the size may become durable
// before the data), SEQUENTIAL (held writes run concurrently), UNDELETABLE_WHEN_OPEN (Linux
// unlinks open files), IMMUTABLE, BATCH_ATOMIC.
constexpr int kDeviceCharacteristics = SQLITE_IOCAP_POWERSAFE_OVERWRITE;

std::atomic<uint64_t> next_vfs_id{1};

// A connection's handle on one file. SQLite allocates szOsFile bytes; we construct in place.
struct VfsFile {
  sqlite3_file base;  // First member: SQLite casts between the two.
  VfsCore* vfs = nullptr;
  DatabaseFiles* files = nullptr;  // Null for a temporary file.
  FileRole role = FileRole::kMain;
  int lock_level = SQLITE_LOCK_NONE;
  uint8_t shm_shared = 0;
  uint8_t shm_exclusive = 0;
  bool shm_attached = false;
  // A temporary file's bytes: SQLite's memory (sqlite3_realloc64), so a sort or a temporary
  // index is charged to the tenant whose statement writes it, like the rest of its memory.
  char* temp_bytes = nullptr;
  uint64_t temp_size = 0;
  uint64_t temp_capacity = 0;
};

VfsFile& AsFile(sqlite3_file* f) { return *reinterpret_cast<VfsFile*>(f); }
VfsCore& AsVfs(sqlite3_vfs* v) { return *static_cast<VfsCore*>(v->pAppData); }

// The database a journal or WAL path belongs to, and the role of the path.
std::pair<std::string, FileRole> Classify(absl::string_view path) {
  if (absl::EndsWith(path, kWalSuffix)) {
    return {std::string(path.substr(0, path.size() - kWalSuffix.size())), FileRole::kWal};
  }
  if (absl::EndsWith(path, kJournalSuffix)) {
    return {std::string(path.substr(0, path.size() - kJournalSuffix.size())), FileRole::kJournal};
  }
  return {std::string(path), FileRole::kMain};
}

// ---- Database, journal and WAL files ----------------------------------------------------------

int FileClose(sqlite3_file* f) {
  VfsFile& file = AsFile(f);
  DatabaseFiles* files = file.files;
  if (file.shm_attached) files->locks().ShmDetach();
  if (file.role == FileRole::kMain) {
    files->locks().Unlock(&file, file.lock_level, SQLITE_LOCK_NONE);
  }
  files->CloseHandle(file.role);
  VfsCore* vfs = file.vfs;
  file.~VfsFile();
  vfs->ReleaseIfUnused(files);
  return SQLITE_OK;
}

int FileRead(sqlite3_file* f, void* buffer, int amount, sqlite3_int64 offset) {
  VfsFile& file = AsFile(f);
  return file.files->queue().Read(file.role, buffer, amount, offset);
}

int FileWrite(sqlite3_file* f, const void* buffer, int amount, sqlite3_int64 offset) {
  VfsFile& file = AsFile(f);
  return file.files->queue().Write(file.role, buffer, amount, offset);
}

int FileTruncate(sqlite3_file* f, sqlite3_int64 size) {
  VfsFile& file = AsFile(f);
  return file.files->queue().Truncate(file.role, size);
}

int FileSync(sqlite3_file* f, int /*unused*/) { return AsFile(f).files->queue().Sync(); }

int FileSize(sqlite3_file* f, sqlite3_int64* size) {
  VfsFile& file = AsFile(f);
  *size = static_cast<sqlite3_int64>(file.files->table().file(file.role).size_bytes);
  return SQLITE_OK;
}

int FileLock(sqlite3_file* f, int level) {
  VfsFile& file = AsFile(f);
  if (file.role != FileRole::kMain) return SQLITE_OK;
  return file.files->locks().Lock(&file, file.lock_level, level);
}

int FileUnlock(sqlite3_file* f, int level) {
  VfsFile& file = AsFile(f);
  if (file.role == FileRole::kMain) file.files->locks().Unlock(&file, file.lock_level, level);
  return SQLITE_OK;
}

int FileCheckReservedLock(sqlite3_file* f, int* held) {
  *held = AsFile(f).files->locks().ReservedHeld() ? 1 : 0;
  return SQLITE_OK;
}

int FileControl(sqlite3_file* f, int op, void* arg) {
  if (op == SQLITE_FCNTL_HAS_MOVED) {
    // The VFS owns the file; nobody renames it under us.
    *static_cast<int*>(arg) = 0;
    return SQLITE_OK;
  }
  if (op == SQLITE_FCNTL_PERSIST_WAL) {
    // A WAL kept across close is truncated there instead of unlinked, so a reopen creates no
    // inode and a close deletes none. A negative value asks; 0 or 1 sets.
    bool& persist = AsFile(f).files->table().persist_wal();
    int& value = *static_cast<int*>(arg);
    if (value < 0) {
      value = persist ? 1 : 0;
    } else {
      persist = value != 0;
    }
    return SQLITE_OK;
  }
  return SQLITE_NOTFOUND;
}

int FileSectorSize(sqlite3_file* /*unused*/) { return kSectorBytes; }
int FileDeviceCharacteristics(sqlite3_file* /*unused*/) { return kDeviceCharacteristics; }

int FileShmMap(sqlite3_file* f, int region, int region_bytes, int extend, void volatile** out) {
  VfsFile& file = AsFile(f);
  if (!file.shm_attached) {
    file.files->locks().ShmAttach();
    file.shm_attached = true;
  }
  void* mapped = nullptr;
  const int rc = file.files->locks().ShmMap(region, region_bytes, extend != 0, &mapped);
  *out = mapped;
  return rc;
}

int FileShmLock(sqlite3_file* f, int offset, int n, int flags) {
  VfsFile& file = AsFile(f);
  return file.files->locks().ShmLock(file.shm_shared, file.shm_exclusive, offset, n, flags);
}

// One thread touches the index, but SQLite still expects a full barrier here.
void FileShmBarrier(sqlite3_file* /*unused*/) {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

int FileShmUnmap(sqlite3_file* f, int /*unused*/) {
  VfsFile& file = AsFile(f);
  if (!file.shm_attached) return SQLITE_OK;
  (void)file.files->locks().ShmLock(file.shm_shared, file.shm_exclusive, 0, kShmLocks,
                                    SQLITE_SHM_UNLOCK);
  file.files->locks().ShmDetach();
  file.shm_attached = false;
  return SQLITE_OK;
}

// Version 2: shared memory, but no xFetch/xUnfetch, so SQLite never memory-maps the file and
// every read goes through the loop's backend.
const sqlite3_io_methods kFileMethods = {
    2,
    &FileClose,
    &FileRead,
    &FileWrite,
    &FileTruncate,
    &FileSync,
    &FileSize,
    &FileLock,
    &FileUnlock,
    &FileCheckReservedLock,
    &FileControl,
    &FileSectorSize,
    &FileDeviceCharacteristics,
    &FileShmMap,
    &FileShmLock,
    &FileShmBarrier,
    &FileShmUnmap,
    nullptr,
    nullptr,
};

// ---- Temporary files, in memory ---------------------------------------------------------------

int MemoryClose(sqlite3_file* f) {
  VfsFile& file = AsFile(f);
  sqlite3_free(file.temp_bytes);
  file.~VfsFile();
  return SQLITE_OK;
}

int MemoryRead(sqlite3_file* f, void* buffer, int amount, sqlite3_int64 offset) {
  const VfsFile& file = AsFile(f);
  const auto start = static_cast<uint64_t>(offset);
  const auto wanted = static_cast<uint64_t>(amount);
  const uint64_t available = file.temp_size > start ? std::min(wanted, file.temp_size - start) : 0;
  if (available > 0) std::memcpy(buffer, file.temp_bytes + start, available);
  if (available == wanted) return SQLITE_OK;
  std::memset(static_cast<char*>(buffer) + available, 0, wanted - available);
  return SQLITE_IOERR_SHORT_READ;
}

// Grows by doubling (at least kTempGrowthBytes), never past temp_file_bytes_max. A growth the
// tenant's memory limit refuses is SQLITE_NOMEM: the statement fails as on any other
// allocation over the limit, and the file keeps what it had.
int MemoryWrite(sqlite3_file* f, const void* buffer, int amount, sqlite3_int64 offset) {
  constexpr uint64_t kTempGrowthBytes = 64 << 10;
  VfsFile& file = AsFile(f);
  const auto start = static_cast<uint64_t>(offset);
  const uint64_t end = start + static_cast<uint64_t>(amount);
  const uint64_t limit = file.vfs->context().options().temp_file_bytes_max;
  if (end > limit) {
    file.vfs->context().stats().temp_files_full++;
    return SQLITE_FULL;
  }
  if (end > file.temp_capacity) {
    const uint64_t capacity =
        std::min(limit, std::max({end, 2 * file.temp_capacity, kTempGrowthBytes}));
    void* grown = sqlite3_realloc64(file.temp_bytes, capacity);
    if (grown == nullptr) return SQLITE_NOMEM;
    file.temp_bytes = static_cast<char*>(grown);
    file.temp_capacity = capacity;
  }
  if (start > file.temp_size)
    std::memset(file.temp_bytes + file.temp_size, 0, start - file.temp_size);
  std::memcpy(file.temp_bytes + start, buffer, static_cast<size_t>(amount));
  file.temp_size = std::max(file.temp_size, end);
  return SQLITE_OK;
}

int MemoryTruncate(sqlite3_file* f, sqlite3_int64 size) {
  VfsFile& file = AsFile(f);
  file.temp_size = std::min(file.temp_size, static_cast<uint64_t>(size));
  return SQLITE_OK;
}

int MemorySync(sqlite3_file* /*unused*/, int /*unused*/) {
  return SQLITE_OK;
}  // Temporary: nothing to make durable.

int MemorySize(sqlite3_file* f, sqlite3_int64* size) {
  *size = static_cast<sqlite3_int64>(AsFile(f).temp_size);
  return SQLITE_OK;
}

int MemoryLock(sqlite3_file* /*unused*/, int /*unused*/) {
  return SQLITE_OK;
}  // Private to one connection.
int MemoryCheckReservedLock(sqlite3_file* /*unused*/, int* held) {
  *held = 0;
  return SQLITE_OK;
}
int MemoryControl(sqlite3_file* /*unused*/, int /*unused*/, void* /*unused*/) {
  return SQLITE_NOTFOUND;
}

const sqlite3_io_methods kMemoryMethods = {
    1,
    &MemoryClose,
    &MemoryRead,
    &MemoryWrite,
    &MemoryTruncate,
    &MemorySync,
    &MemorySize,
    &MemoryLock,
    &MemoryLock,
    &MemoryCheckReservedLock,
    &MemoryControl,
    &FileSectorSize,
    &FileDeviceCharacteristics,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

// ---- The VFS ----------------------------------------------------------------------------------

int VfsOpen(sqlite3_vfs* v, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
  VfsCore& vfs = AsVfs(v);
  auto* file = new (f) VfsFile{};
  file->base.pMethods = nullptr;
  file->vfs = &vfs;
  const int kind = flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_MAIN_JOURNAL | SQLITE_OPEN_WAL);
  if ((flags & SQLITE_OPEN_SUPER_JOURNAL) != 0) {
    // It must be durable before any journal that names it, and those are other databases'
    // epoch queues: nothing orders them. Refused, SQLite rolls the whole transaction back.
    vfs.set_last_open_error(
        "a transaction that writes several attached databases in a rollback-journal mode needs "
        "a super-journal, which sqloop does not support: commit each database on its own, or "
        "use WAL mode (where SQLite commits each database separately)");
    return SQLITE_CANTOPEN;
  }
  if (name == nullptr || kind == 0 || (flags & SQLITE_OPEN_DELETEONCLOSE) != 0) {
    // Temp databases, statement journals, sorter spills: private, never durable.
    file->base.pMethods = &kMemoryMethods;
    if (out_flags != nullptr) *out_flags = flags;
    return SQLITE_OK;
  }
  // A main database is named by its own path, whatever it ends with ("notes-journal").
  auto [main_path, role] = kind == SQLITE_OPEN_MAIN_DB
                               ? std::pair<std::string, FileRole>(name, FileRole::kMain)
                               : Classify(name);
  if (vfs.Find(main_path) == nullptr) {
    if (absl::Status tainted = vfs.context().CheckNotTainted(main_path); !tainted.ok()) {
      vfs.set_last_open_error(std::string(tainted.message()));
      return SQLITE_CANTOPEN;
    }
  }
  DatabaseFiles& files = vfs.Acquire(main_path);
  SharedFile& shared = files.table().file(role);
  if (shared.known && !shared.exists && !files.queue().idle() &&
      !files.queue().ReviveUnlinked(role)) {
    // An unlink of this very file is in flight; creating it now could let that unlink delete
    // the new file. SQLite reports the busy open; the Database layer retries it.
    vfs.set_last_open_error(absl::StrCat("the ", internal::RoleName(role), " of '",
                                         FileNameOf(main_path),
                                         "' is still being removed (the last commit's unlink is "
                                         "in flight): run the loop, then try again"));
    vfs.ReleaseIfUnused(&files);
    return SQLITE_BUSY;
  }
  int open_flags = O_RDWR;
  if ((flags & SQLITE_OPEN_CREATE) != 0) open_flags |= O_CREAT;
  int64_t rc = files.table().Open(role, open_flags);
  if ((rc == -EACCES || rc == -EROFS) && (flags & SQLITE_OPEN_READONLY) != 0) {
    rc = files.table().Open(role, O_RDONLY);
  }
  if (rc < 0) {
    vfs.set_last_open_error(FileTable::OpenErrorMessage(shared.path, rc));
    vfs.ReleaseIfUnused(&files);
    return SQLITE_CANTOPEN;
  }
  ++shared.opens;
  file->files = &files;
  file->role = role;
  file->base.pMethods = &kFileMethods;
  if (out_flags != nullptr) *out_flags = flags;
  return SQLITE_OK;
}

int VfsDelete(sqlite3_vfs* v, const char* path, int /*unused*/) {
  VfsCore& vfs = AsVfs(v);
  auto [main_path, role] = Classify(path);
  if (DatabaseFiles* files = vfs.Find(main_path); files != nullptr) {
    return files->queue().Unlink(role);
  }
  io::Op op{.kind = io::OpKind::kUnlink, .fd = AT_FDCWD, .path = path};
  const int64_t result = vfs.context().loop().WaitForOp(op);
  if (result == -ENOENT) return SQLITE_IOERR_DELETE_NOENT;
  return result < 0 ? SQLITE_IOERR_DELETE : SQLITE_OK;
}

// EXISTS means "exists and is not empty", as in SQLite's unix VFS: an empty journal or WAL is
// no journal or WAL.
int VfsAccess(sqlite3_vfs* v, const char* path, int flags, int* result) {
  VfsCore& vfs = AsVfs(v);
  auto [main_path, role] = Classify(path);
  DatabaseFiles* files = vfs.Find(main_path);
  if (files != nullptr) {
    const SharedFile& f = files->table().file(role);
    if (f.known) {
      *result = f.exists && (flags != SQLITE_ACCESS_EXISTS || f.size_bytes > 0) ? 1 : 0;
      return SQLITE_OK;
    }
  }
  io::Op open_op{
      .kind = io::OpKind::kOpenAt, .fd = AT_FDCWD, .flags = O_RDONLY | O_CLOEXEC, .path = path};
  loop::Loop& loop = vfs.context().loop();
  const int64_t fd = loop.WaitForOp(open_op);
  if (fd < 0) {
    *result = 0;
    if (fd == -ENOENT && files != nullptr) {
      // Only this process creates the database's files (one process per database), so the
      // answer holds until the VFS itself opens the file: every connection's later checks for
      // a hot journal or a WAL are answered without a system call.
      files->table().MarkAbsent(role);
    }
    return fd == -ENOENT || fd == -EACCES ? SQLITE_OK : SQLITE_IOERR_ACCESS;
  }
  io::Op size_op{.kind = io::OpKind::kFileSize, .fd = static_cast<int>(fd)};
  const int64_t size = loop.WaitForOp(size_op);
  io::Op close_op{.kind = io::OpKind::kClose, .fd = static_cast<int>(fd)};
  (void)loop.WaitForOp(close_op);
  if (size < 0) return SQLITE_IOERR_ACCESS;
  *result = flags != SQLITE_ACCESS_EXISTS || size > 0 ? 1 : 0;
  return SQLITE_OK;
}

int VfsFullPathname(sqlite3_vfs* v, const char* name, int out_bytes, char* out) {
  const std::string full = FullPathOf(name);
  if (full.empty() || full.size() + 1 > static_cast<size_t>(out_bytes)) {
    AsVfs(v).set_last_open_error(
        full.empty()
            ? absl::StrCat("cannot open '", FileNameOf(name),
                           "': the working directory cannot be read")
            : absl::StrCat("cannot open '", FileNameOf(name), "': its path is ", full.size(),
                           " bytes long, and sqloop takes at most ", out_bytes - 1));
    return SQLITE_CANTOPEN;
  }
  std::memcpy(out, full.c_str(), full.size() + 1);
  return SQLITE_OK;
}

// Extension loading is off in every connection sqloop opens; these refuse it again.
void* VfsDlOpen(sqlite3_vfs* /*unused*/, const char* /*unused*/) { return nullptr; }
void VfsDlError(sqlite3_vfs* /*unused*/, int bytes, char* out) {
  std::snprintf(out, static_cast<size_t>(bytes), "extension loading is disabled in sqloop");
}
void (*VfsDlSym(sqlite3_vfs* /*unused*/, void* /*unused*/, const char* /*unused*/))(void) {
  return nullptr;
}
void VfsDlClose(sqlite3_vfs* /*unused*/, void* /*unused*/) {}

// SQLite seeds its PRNG from here (WAL salts, temp names). A fixed, documented sequence keeps
// simulation runs reproducible; nothing in SQLite's durability depends on it being secret.
int VfsRandomness(sqlite3_vfs* /*unused*/, int bytes, char* out) {
  uint64_t state = 0x5eed5eed5eed5eedull;
  for (int i = 0; i < bytes; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    out[i] = static_cast<char>(state >> 56);
  }
  return bytes;
}

// Never sleeps: the loop thread must not block. SQLite only sleeps in busy handlers (none is
// installed) and in WAL read retries, which then simply retry at once.
int VfsSleep(sqlite3_vfs* /*unused*/, int microseconds) { return microseconds; }

// Wall-clock time for SQL's date('now'); SQLite's durability never uses it.
int VfsCurrentTimeInt64(sqlite3_vfs* /*unused*/, sqlite3_int64* out) {
  sqlite3_vfs* system = sqlite3_vfs_find(nullptr);
  return system->xCurrentTimeInt64(system, out);
}

int VfsCurrentTime(sqlite3_vfs* v, double* out) {
  sqlite3_int64 ms = 0;
  const int rc = VfsCurrentTimeInt64(v, &ms);
  *out = static_cast<double>(ms) / 86400000.0;
  return rc;
}

int VfsGetLastError(sqlite3_vfs* /*unused*/, int /*unused*/, char* /*unused*/) { return 0; }

}  // namespace

absl::StatusOr<std::unique_ptr<Vfs>> Vfs::Create(loop::Loop& loop, VfsOptions options) {
  if (options.wal_reserve_bytes > kWalReserveBytesDefault) {
    return absl::InvalidArgumentError(
        absl::StrCat("VfsOptions::wal_reserve_bytes is ", options.wal_reserve_bytes,
                     "; it may be at most ", kWalReserveBytesDefault, " (0 turns it off)"));
  }
  if (options.temp_file_bytes_max > kTempFileBytesMaxLimit) {
    return absl::InvalidArgumentError(absl::StrCat(
        "VfsOptions::temp_file_bytes_max is ", options.temp_file_bytes_max, "; it may be at most ",
        kTempFileBytesMaxLimit, " (a temporary file is one block of SQLite's memory)"));
  }
  if (loop.backend().name() == "simulator") options.os_lock = false;
  const uint64_t id = next_vfs_id.fetch_add(1, std::memory_order_relaxed);
  std::unique_ptr<Vfs> vfs(new Vfs(loop, options, absl::StrCat("sqloop-", id)));
  const int rc = sqlite3_vfs_register(vfs->vfs_.get(), /*makeDflt=*/0);
  if (rc != SQLITE_OK) {
    return absl::InternalError(absl::StrCat("sqlite3_vfs_register failed: ", sqlite3_errstr(rc)));
  }
  return vfs;
}

Vfs::Vfs(loop::Loop& loop, VfsOptions options, std::string name)
    : name_(std::move(name)),
      vfs_(new sqlite3_vfs{}),
      core_(std::make_unique<VfsCore>(loop, options)) {
  sqlite3_vfs& v = *vfs_;
  v.iVersion = 2;
  v.szOsFile = sizeof(VfsFile);
  v.mxPathname = kPathBytesMax;
  v.zName = name_.c_str();
  v.pAppData = core_.get();
  v.xOpen = &VfsOpen;
  v.xDelete = &VfsDelete;
  v.xAccess = &VfsAccess;
  v.xFullPathname = &VfsFullPathname;
  v.xDlOpen = &VfsDlOpen;
  v.xDlError = &VfsDlError;
  v.xDlSym = &VfsDlSym;
  v.xDlClose = &VfsDlClose;
  v.xRandomness = &VfsRandomness;
  v.xSleep = &VfsSleep;
  v.xCurrentTime = &VfsCurrentTime;
  v.xGetLastError = &VfsGetLastError;
  v.xCurrentTimeInt64 = &VfsCurrentTimeInt64;
}

Vfs::~Vfs() {
  SQLOOP_CHECK(!core_->has_databases(),
               "Vfs destroyed while databases are open or their files are still in flight; close "
               "every Database and run the loop until Close() called back");
  sqlite3_vfs_unregister(vfs_.get());
}

absl::Status Vfs::WhenDurable(sqlite3* db, DurableWait& wait, const char* database) {
  if (wait.armed()) {
    return absl::FailedPreconditionError(
        "Vfs::WhenDurable: the DurableWait is armed already; arm it again once its done started");
  }
  if (wait.done == nullptr) {
    return absl::InvalidArgumentError("Vfs::WhenDurable: the DurableWait has no done callback");
  }
  if (db == nullptr) return absl::InvalidArgumentError("Vfs::WhenDurable: the connection is null");
  if (database == nullptr) database = "main";
  // SQLite names a database's file by what xFullPathname made of its path (VfsFullPathname),
  // which is the key of its files; in memory or temporary, it has no name; no such database,
  // no name at all.
  const char* path = sqlite3_db_filename(db, database);
  // SQLite's temporary database has no file, nor a B-tree until it is first used.
  const bool temp = sqlite3_stricmp(database, "temp") == 0;
  if (path == nullptr && !temp) {
    return absl::InvalidArgumentError(
        absl::StrCat("Vfs::WhenDurable: the connection has no database named '", database,
                     "' (\"main\", or the name an ATTACH gave)"));
  }
  sqlite3_vfs* used = nullptr;
  if (!temp && (sqlite3_file_control(db, database, SQLITE_FCNTL_VFS_POINTER, &used) != SQLITE_OK ||
                used != vfs_.get())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Vfs::WhenDurable: the connection's database '", database, "' is not on this Vfs (", name_,
        "): open it with sqlite3_open_v2(..., vfs.name()), and attach files of this Vfs only"));
  }
  if (temp || path[0] == '\0') {
    return absl::InvalidArgumentError(
        absl::StrCat("Vfs::WhenDurable: the connection's database '", database,
                     "' is in memory or temporary: nothing of it is ever durable"));
  }
  DatabaseFiles* files = core_->Find(path);
  // An open connection's handle on its main file keeps the files alive.
  SQLOOP_CHECK(files != nullptr, "Vfs::WhenDurable: an open connection's files are gone");
  return files->queue().WhenDurable(wait);
}

const std::string& Vfs::last_open_error() const { return core_->last_open_error(); }
const VfsStats& Vfs::stats() const { return core_->context().stats(); }
const VfsOptions& Vfs::options() const { return core_->context().options(); }
loop::Loop& Vfs::loop() { return core_->context().loop(); }

}  // namespace sqloop::db
