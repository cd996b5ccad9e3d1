#include "bench/sqlite/counting_vfs.h"

#include <cstdlib>
#include <new>

namespace sqloop::bench {
namespace {

// Our handle: SQLite allocates szOsFile bytes for it; the default VFS's own handle follows.
struct CountingFile {
  sqlite3_file base;  // First member: SQLite casts between the two.
  sqlite3_file* inner;
};

sqlite3_file* Inner(sqlite3_file* f) { return reinterpret_cast<CountingFile*>(f)->inner; }
CountingVfs& Counter() { return CountingVfs::Get(); }

int Close(sqlite3_file* f) {
  sqlite3_file* inner = Inner(f);
  return inner->pMethods != nullptr ? inner->pMethods->xClose(inner) : SQLITE_OK;
}
int Read(sqlite3_file* f, void* buffer, int amount, sqlite3_int64 offset) {
  Counter().CountRead();
  return Inner(f)->pMethods->xRead(Inner(f), buffer, amount, offset);
}
int Write(sqlite3_file* f, const void* buffer, int amount, sqlite3_int64 offset) {
  Counter().CountWrite();
  return Inner(f)->pMethods->xWrite(Inner(f), buffer, amount, offset);
}
int Truncate(sqlite3_file* f, sqlite3_int64 size) {
  return Inner(f)->pMethods->xTruncate(Inner(f), size);
}
int Sync(sqlite3_file* f, int flags) {
  Counter().CountSync();
  return Inner(f)->pMethods->xSync(Inner(f), flags);
}
int FileSize(sqlite3_file* f, sqlite3_int64* size) {
  return Inner(f)->pMethods->xFileSize(Inner(f), size);
}
int Lock(sqlite3_file* f, int level) { return Inner(f)->pMethods->xLock(Inner(f), level); }
int Unlock(sqlite3_file* f, int level) { return Inner(f)->pMethods->xUnlock(Inner(f), level); }
int CheckReserved(sqlite3_file* f, int* out) {
  return Inner(f)->pMethods->xCheckReservedLock(Inner(f), out);
}
int FileControl(sqlite3_file* f, int op, void* arg) {
  return Inner(f)->pMethods->xFileControl(Inner(f), op, arg);
}
int SectorSize(sqlite3_file* f) { return Inner(f)->pMethods->xSectorSize(Inner(f)); }
int DeviceCharacteristics(sqlite3_file* f) {
  return Inner(f)->pMethods->xDeviceCharacteristics(Inner(f));
}
int ShmMap(sqlite3_file* f, int region, int size, int extend, void volatile** out) {
  return Inner(f)->pMethods->xShmMap(Inner(f), region, size, extend, out);
}
int ShmLock(sqlite3_file* f, int offset, int n, int flags) {
  return Inner(f)->pMethods->xShmLock(Inner(f), offset, n, flags);
}
void ShmBarrier(sqlite3_file* f) { Inner(f)->pMethods->xShmBarrier(Inner(f)); }
int ShmUnmap(sqlite3_file* f, int delete_flag) {
  return Inner(f)->pMethods->xShmUnmap(Inner(f), delete_flag);
}
int Fetch(sqlite3_file* f, sqlite3_int64 offset, int amount, void** out) {
  return Inner(f)->pMethods->xFetch(Inner(f), offset, amount, out);
}
int Unfetch(sqlite3_file* f, sqlite3_int64 offset, void* page) {
  return Inner(f)->pMethods->xUnfetch(Inner(f), offset, page);
}

// Version 3 (shm and mmap included): the unix VFS's methods are version 3 as well, so every
// call we claim to support exists on the inner handle.
const sqlite3_io_methods kMethods = {
    3,
    &Close,
    &Read,
    &Write,
    &Truncate,
    &Sync,
    &FileSize,
    &Lock,
    &Unlock,
    &CheckReserved,
    &FileControl,
    &SectorSize,
    &DeviceCharacteristics,
    &ShmMap,
    &ShmLock,
    &ShmBarrier,
    &ShmUnmap,
    &Fetch,
    &Unfetch,
};

int Open(sqlite3_vfs* vfs, sqlite3_filename name, sqlite3_file* f, int flags, int* out_flags) {
  auto* file = reinterpret_cast<CountingFile*>(f);
  file->base.pMethods = nullptr;
  // The inner handle lives right after ours, in the same allocation (szOsFile covers both).
  file->inner = reinterpret_cast<sqlite3_file*>(file + 1);
  auto* inner_vfs = static_cast<sqlite3_vfs*>(vfs->pAppData);
  const int rc = inner_vfs->xOpen(inner_vfs, name, file->inner, flags, out_flags);
  // SQLite calls xClose only if pMethods is set; set it whenever the inner handle needs closing.
  if (file->inner->pMethods != nullptr) file->base.pMethods = &kMethods;
  return rc;
}

int Delete(sqlite3_vfs* vfs, const char* name, int sync_dir) {
  auto* inner = static_cast<sqlite3_vfs*>(vfs->pAppData);
  return inner->xDelete(inner, name, sync_dir);
}
int Access(sqlite3_vfs* vfs, const char* name, int flags, int* out) {
  auto* inner = static_cast<sqlite3_vfs*>(vfs->pAppData);
  return inner->xAccess(inner, name, flags, out);
}
int FullPathname(sqlite3_vfs* vfs, const char* name, int size, char* out) {
  auto* inner = static_cast<sqlite3_vfs*>(vfs->pAppData);
  return inner->xFullPathname(inner, name, size, out);
}
int Randomness(sqlite3_vfs* vfs, int size, char* out) {
  auto* inner = static_cast<sqlite3_vfs*>(vfs->pAppData);
  return inner->xRandomness(inner, size, out);
}
int Sleep(sqlite3_vfs* vfs, int microseconds) {
  auto* inner = static_cast<sqlite3_vfs*>(vfs->pAppData);
  return inner->xSleep(inner, microseconds);
}
int CurrentTime(sqlite3_vfs* vfs, double* out) {
  auto* inner = static_cast<sqlite3_vfs*>(vfs->pAppData);
  return inner->xCurrentTime(inner, out);
}
int GetLastError(sqlite3_vfs* vfs, int size, char* out) {
  auto* inner = static_cast<sqlite3_vfs*>(vfs->pAppData);
  return inner->xGetLastError(inner, size, out);
}
int CurrentTimeInt64(sqlite3_vfs* vfs, sqlite3_int64* out) {
  auto* inner = static_cast<sqlite3_vfs*>(vfs->pAppData);
  return inner->xCurrentTimeInt64(inner, out);
}

}  // namespace

CountingVfs::CountingVfs() : inner_(sqlite3_vfs_find(nullptr)) {
  if (inner_ == nullptr) std::abort();  // sqlite3_initialize failed: nothing can run.
  vfs_.iVersion = 2;
  vfs_.szOsFile = static_cast<int>(sizeof(CountingFile)) + inner_->szOsFile;
  vfs_.mxPathname = inner_->mxPathname;
  vfs_.zName = "sqloop-bench-counting";
  vfs_.pAppData = inner_;
  vfs_.xOpen = &Open;
  vfs_.xDelete = &Delete;
  vfs_.xAccess = &Access;
  vfs_.xFullPathname = &FullPathname;
  vfs_.xDlOpen = inner_->xDlOpen;
  vfs_.xDlError = inner_->xDlError;
  vfs_.xDlSym = inner_->xDlSym;
  vfs_.xDlClose = inner_->xDlClose;
  vfs_.xRandomness = &Randomness;
  vfs_.xSleep = &Sleep;
  vfs_.xCurrentTime = &CurrentTime;
  vfs_.xGetLastError = &GetLastError;
  vfs_.xCurrentTimeInt64 = &CurrentTimeInt64;
  if (sqlite3_vfs_register(&vfs_, /*makeDflt=*/0) != SQLITE_OK) std::abort();
}

CountingVfs& CountingVfs::Get() {
  // Never destroyed: SQLite may still reference the registration at exit.
  static CountingVfs* const instance = new CountingVfs();
  return *instance;
}

}  // namespace sqloop::bench
