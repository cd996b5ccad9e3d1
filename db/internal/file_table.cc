#include "sqloop/db/internal/file_table.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/db/internal/file_names.h"

namespace sqloop::db::internal {

const char* RoleName(FileRole role) {
  switch (role) {
    case FileRole::kMain:
      return "database file";
    case FileRole::kJournal:
      return "rollback journal";
    case FileRole::kWal:
      return "WAL";
    case FileRole::kCount:
      break;
  }
  return "file";
}

int64_t RunNow(loop::Loop& loop, io::Op& op) {
  op.next = nullptr;
  return loop.WaitForOp(op);
}

FileTable::FileTable(loop::Loop& loop, std::string main_path, bool os_lock)
    : loop_(loop),
      main_path_(std::move(main_path)),
      dir_path_(DirectoryOf(main_path_)),
      os_lock_(os_lock) {
  file(FileRole::kMain).path = main_path_;
  file(FileRole::kJournal).path = main_path_ + "-journal";
  file(FileRole::kWal).path = main_path_ + "-wal";
}

FileTable::~FileTable() {
  for (SharedFile& f : files_) {
    if (f.fd >= 0) CloseDescriptor(f.fd);
  }
  if (dir_fd_ >= 0) CloseDescriptor(dir_fd_);
}

void FileTable::CloseDescriptor(int& fd) {
  io::Op close_op{.kind = io::OpKind::kClose, .fd = fd};
  (void)RunNow(loop_, close_op);
  fd = -1;
}

char* FileTable::PrepareHead(uint32_t bytes) {
  head_bytes_ = 0;
  head_ = std::make_unique_for_overwrite<char[]>(bytes);
  return head_.get();
}

void FileTable::DropHead() {
  head_bytes_ = 0;
  head_.reset();
}

bool FileTable::ReadHead(char* out, uint64_t length, uint64_t start) const {
  if (start >= head_bytes_ || length > head_bytes_ - start) return false;
  std::memcpy(out, head_.get() + start, length);
  return true;
}

bool FileTable::unused() const {
  return std::all_of(files_.begin(), files_.end(),
                     [](const SharedFile& f) { return f.opens == 0; });
}

bool FileTable::unsynced(Unsynced what) const {
  return std::any_of(files_.begin(), files_.end(), [what](const SharedFile& f) {
    return f.dirty || (what == Unsynced::kWritesAndNames && f.needs_dir_sync);
  });
}

void FileTable::Unpin() {
  SQLOOP_CHECK(pins_ > 0, "DatabaseFiles::Unpin without a matching Pin");
  --pins_;
}

int64_t FileTable::Open(FileRole role, int flags) {
  SharedFile& f = file(role);
  if (f.fd >= 0 || f.deferred) {
    f.exists = true;
    return 0;
  }
  io::Op open_op{.kind = io::OpKind::kOpenAt,
                 .fd = AT_FDCWD,
                 .flags = static_cast<uint32_t>((flags & ~O_EXCL) | O_CLOEXEC),
                 .path = f.path.c_str(),
                 .mode = 0644};
  const int64_t fd = RunNow(loop_, open_op);
  if (fd < 0) return fd;
  if (role == FileRole::kMain) {
    if (const int64_t locked = LockMain(static_cast<int>(fd)); locked < 0) return locked;
  }
  io::Op size_op{.kind = io::OpKind::kFileSize, .fd = static_cast<int>(fd)};
  return Adopt(role, static_cast<int>(fd), RunNow(loop_, size_op));
}

std::string FileTable::OpenErrorMessage(const std::string& path, int64_t error) {
  if (error == kLockedInThisProcess) {
    return absl::StrCat("database file '", FileNameOf(path),
                        "' is open already in this process, through another path to it (a "
                        "symbolic link, '..') or another Vfs: a file is one database, so open it "
                        "through one path on one Vfs");
  }
  if (error == -EWOULDBLOCK) {
    return absl::StrCat("database file '", FileNameOf(path),
                        "' is locked by another process: sqloop takes an exclusive lock on each "
                        "database file (one process per database). Close it in that process, or "
                        "open a copy");
  }
  return absl::StrCat("cannot open '", FileNameOf(path),
                      "': ", std::strerror(static_cast<int>(-error)));
}

namespace {

// Whether the flock that refused `fd` is this process's own, taken through another descriptor
// of the same file: /proc/locks names each flock's process and file ("1: FLOCK ADVISORY WRITE
// <pid> <major>:<minor>:<inode> 0 EOF", the device in hex). Read only once a lock was refused;
// false if it cannot tell (no /proc, or a file system whose fstat names another device).
bool LockedByThisProcess(int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return false;
  FILE* locks = std::fopen("/proc/locks", "re");
  if (locks == nullptr) return false;
  const pid_t self = getpid();
  bool found = false;
  char line[256];
  while (!found && std::fgets(line, sizeof(line), locks) != nullptr) {
    int pid = 0;
    unsigned int major_id = 0;
    unsigned int minor_id = 0;
    unsigned long inode = 0;  // NOLINT(google-runtime-int): the %lu of the kernel's format.
    // A process waiting for a lock has "->" before FLOCK, and no match here.
    found = std::sscanf(line, "%*d: FLOCK %*s %*s %d %x:%x:%lu", &pid, &major_id, &minor_id,
                        &inode) == 4 &&
            pid == self && major_id == major(st.st_dev) && minor_id == minor(st.st_dev) &&
            inode == st.st_ino;
  }
  std::fclose(locks);
  return found;
}

}  // namespace

int64_t FileTable::LockMain(int fd) {
  if (!os_lock_) return 0;
  // One process per database file: an exclusive, non-blocking flock on the descriptor.
  if (flock(fd, LOCK_EX | LOCK_NB) == 0) return 0;
  int64_t error = -errno;
  if (error == -EWOULDBLOCK && LockedByThisProcess(fd)) error = kLockedInThisProcess;
  CloseDescriptor(fd);
  return error;
}

void FileTable::UnlockMain(int fd) const {
  if (os_lock_) (void)flock(fd, LOCK_UN);  // A failure leaves the lock to the close.
}

int64_t FileTable::Adopt(FileRole role, int fd, int64_t size) {
  SharedFile& f = file(role);
  SQLOOP_CHECK(f.fd < 0, "FileTable::Adopt: the role already has a descriptor");
  NoteChange();
  if (role == FileRole::kMain && size > 0) {
    if (const int64_t rolled = RollBackFirstTransaction(fd, size); rolled < 0) size = rolled;
  }
  if (size < 0) {
    CloseDescriptor(fd);
    return size;
  }
  f.fd = fd;
  f.size_bytes = static_cast<uint64_t>(size);
  f.allocated_bytes = f.size_bytes;
  f.exists = true;
  f.known = true;
  f.deferred = false;  // Opened by another Database's open while a wake had left it closed.
  // Invariant 3. The file's name is durable only once a directory fsync of ours covers it, also
  // when the file was already there: an earlier DatabaseFiles of this process (an open that
  // failed after SQLite created the WAL, a database closed before its first barrier) or a
  // process that died may have created it and never synced the directory, and nothing tells
  // such a file from one whose name is durable. Writes acknowledged in it were lost with its
  // name in a crash (http seeds 1269, 2853 and 4746). So the first barrier after an open syncs
  // the directory too, as SQLite's unix VFS does for every journal and WAL it opens with
  // SQLITE_OPEN_CREATE.
  f.needs_dir_sync = true;
  return 0;
}

// A new database's first transaction (the switch to WAL, which writes page 1) runs with a
// rollback journal whose header says the database had 0 pages. A crash in it can leave page 1
// torn beside that journal. SQLite rolls such a journal back (truncates the file to 0 pages),
// but sqlite3BtreeOpen reads the header's vacuum flags before the rollback and writes the torn
// values into the new page 1, so quick_check fails for ever (db_crash seed 6962). Nothing in
// that file was ever committed: this does SQLite's own rollback first, before SQLite reads a
// byte: truncate to 0 and make it durable, then remove the journal and make that durable. It
// acts only where SQLite's rollback would truncate to 0: the main file not open in this process
// (so no connection of ours owns the journal; the OS lock keeps other processes out), and a
// journal that starts with a valid header naming 0 pages. Returns 0 or -errno; `size_bytes`
// becomes 0 if it rolled back.
int64_t FileTable::RollBackFirstTransaction(int main_fd, int64_t& size_bytes) {
  // SQLite's journal header (pager.c): 8 bytes of magic, the record count, the checksum seed,
  // the database's size in pages before the transaction (big-endian), sector and page sizes.
  constexpr unsigned char kMagic[8] = {0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7};
  constexpr uint32_t kHeaderBytes = 28;
  constexpr uint32_t kInitialPagesOffset = 16;
  const SharedFile& journal_file = file(FileRole::kJournal);
  if (journal_file.known && !journal_file.exists) return 0;  // Found absent already.
  const std::string& journal = journal_file.path;
  io::Op open_op{.kind = io::OpKind::kOpenAt,
                 .fd = AT_FDCWD,
                 .flags = O_RDONLY | O_CLOEXEC,
                 .path = journal.c_str()};
  const int64_t fd = RunNow(loop_, open_op);
  if (fd == -ENOENT) MarkAbsent(FileRole::kJournal);
  if (fd < 0) return fd == -ENOENT ? 0 : fd;
  unsigned char header[kHeaderBytes] = {};
  io::Op read_op{.kind = io::OpKind::kRead,
                 .fd = static_cast<int>(fd),
                 .buffer = header,
                 .length = kHeaderBytes};
  const int64_t read = RunNow(loop_, read_op);
  io::Op close_op{.kind = io::OpKind::kClose, .fd = static_cast<int>(fd)};
  (void)RunNow(loop_, close_op);
  if (read < 0) return read;
  const unsigned char* pages = header + kInitialPagesOffset;
  if (read < kHeaderBytes || std::memcmp(header, kMagic, sizeof(kMagic)) != 0 ||
      (pages[0] | pages[1] | pages[2] | pages[3]) != 0) {
    return 0;  // Not a first transaction's journal: SQLite's own recovery handles it.
  }
  io::Op truncate_op{.kind = io::OpKind::kFtruncate, .fd = main_fd, .offset = 0};
  io::Op sync_op{.kind = io::OpKind::kFsync, .fd = main_fd};
  io::Op unlink_op{.kind = io::OpKind::kUnlink, .fd = AT_FDCWD, .path = journal.c_str()};
  for (io::Op* op : {&truncate_op, &sync_op, &unlink_op}) {
    if (const int64_t result = RunNow(loop_, *op); result < 0) return result;
  }
  io::Op dir_op = io::OpenDirectoryOp(dir_path_.c_str());
  const int64_t dir = RunNow(loop_, dir_op);
  if (dir < 0) return dir;
  io::Op dir_sync{.kind = io::OpKind::kFsync, .fd = static_cast<int>(dir)};
  const int64_t synced = RunNow(loop_, dir_sync);
  io::Op dir_close{.kind = io::OpKind::kClose, .fd = static_cast<int>(dir)};
  (void)RunNow(loop_, dir_close);
  if (synced < 0) return synced;
  size_bytes = 0;
  return 0;
}

void FileTable::CloseHandle(FileRole role) {
  SharedFile& f = file(role);
  SQLOOP_CHECK(f.opens > 0, "DatabaseFiles::CloseHandle on a file that is not open");
  if (--f.opens == 0) f.deferred = false;  // No handle is left to open it for.
}

void FileTable::CloseIfUnused(FileRole role) {
  SharedFile& f = file(role);
  if (f.fd >= 0 && f.opens == 0) CloseDescriptor(f.fd);
}

// Invariant 2: the main file stays open while pinned.
void FileTable::CloseIdle() {
  for (int i = 0; i < kFileRoles; ++i) {
    SharedFile& f = files_[i];
    if (f.fd < 0 || f.opens != 0) continue;
    if (i == static_cast<int>(FileRole::kMain) && pins_ != 0) continue;
    // Written since the last barrier (a journal truncated at synchronous=NORMAL): the next
    // barrier syncs it through this descriptor (EpochQueue invariant 11).
    if (f.dirty) continue;
    CloseDescriptor(f.fd);
  }
}

void FileTable::AdoptDirectory(int fd) {
  SQLOOP_CHECK(dir_fd_ < 0, "FileTable: the directory was opened twice");
  dir_fd_ = fd;
}

}  // namespace sqloop::db::internal
