// tests/registry_test_util.h
// -----------------------------------------------------------------------------
//
// Helpers shared by the registry tests (tests/registry_*_test.cc): a scratch directory on the
// real file system, descriptor counting, a request that records its outcome, and a harness
// that owns a loop, a Vfs and a Registry and runs the loop until a condition holds (never a
// sleep: the loop waits for its own events, and a harness with nothing pending fails instead
// of hanging).
//
// Example:
//
//   RegistryHarness h(MakeBackend(), options_for(dir));
//   Call call("acme", "CREATE TABLE t(x)", /*create=*/true);
//   ASSERT_TRUE(h.registry().Submit(call).ok());
//   h.RunUntil([&] { return call.done; });
#ifndef SQLOOP_TESTS_REGISTRY_TEST_UTIL_H_
#define SQLOOP_TESTS_REGISTRY_TEST_UTIL_H_

#include <dirent.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/check.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "sqloop/db/registry.h"
#include "sqloop/db/vfs.h"
#include "sqloop/io/internal/backends.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db::testing {

// Installs the SQLite memory accounting before any SQLite use in the test process (a static
// initialiser in each test file calls it).
inline bool InstallAccounting() {
  const absl::Status status = alloc::InstallSqliteMemory();
  SQLOOP_CHECK(status.ok(), "InstallSqliteMemory failed: SQLite was used before the tests");
  return true;
}

// A fresh directory under $TMPDIR (or /tmp), removed with its files at destruction.
class TempDir {
 public:
  // Under `base`, or $TMPDIR, or /tmp.
  explicit TempDir(const char* base = nullptr) {
    if (base == nullptr) base = std::getenv("TMPDIR");
    std::string pattern =
        absl::StrCat(base != nullptr && *base != '\0' ? base : "/tmp", "/sqloop-registry-XXXXXX");
    SQLOOP_CHECK(mkdtemp(pattern.data()) != nullptr, "mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    for (const std::string& name : Files()) (void)unlink(absl::StrCat(path_, "/", name).c_str());
    (void)rmdir(path_.c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  [[nodiscard]] const std::string& path() const { return path_; }
  // The names in the directory, sorted.
  [[nodiscard]] std::vector<std::string> Files() const {
    std::vector<std::string> names;
    DIR* dir = opendir(path_.c_str());
    if (dir == nullptr) return names;
    while (dirent* entry = readdir(dir)) {
      const std::string name = entry->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    closedir(dir);
    std::sort(names.begin(), names.end());
    return names;
  }
  [[nodiscard]] bool Exists(const std::string& name) const {
    struct stat st {};
    return stat(absl::StrCat(path_, "/", name).c_str(), &st) == 0;
  }

 private:
  std::string path_;
};

// Descriptors open in this process now (the entries of /proc/self/fd, minus the one
// opendir itself uses).
inline int CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  SQLOOP_CHECK(dir != nullptr, "cannot list /proc/self/fd");
  int count = 0;
  while (dirent* entry = readdir(dir)) count += entry->d_name[0] != '.';
  closedir(dir);
  return count - 1;
}

// The size of this process's descriptor table (the kernel's FDSize, not the descriptors open).
inline int DescriptorTableSize() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("FDSize:", 0) == 0) return std::atoi(line.c_str() + 7);
  }
  return -1;
}

// Raises this process's soft RLIMIT_NOFILE to `wanted` (at most the hard limit). Returns the
// soft limit it leaves.
inline rlim_t RaiseDescriptorLimit(rlim_t wanted) {
  rlimit limit{};
  SQLOOP_CHECK(getrlimit(RLIMIT_NOFILE, &limit) == 0, "getrlimit");
  limit.rlim_cur = std::max(limit.rlim_cur, std::min(limit.rlim_max, wanted));
  SQLOOP_CHECK(setrlimit(RLIMIT_NOFILE, &limit) == 0, "setrlimit");
  return limit.rlim_cur;
}

// The real backends the registry's tests run on, as a test parameter.
struct RealBackend {
  std::string name;
  std::unique_ptr<io::Backend> (*make)();
};
inline std::unique_ptr<io::Backend> MakeUring() {
  auto backend = io::internal::CreateUringBackend({}, 0);
  SQLOOP_CHECK(backend.ok(), "io_uring backend unavailable");
  return *std::move(backend);
}
inline std::unique_ptr<io::Backend> MakeFallback() {
  auto backend = io::internal::CreateFallbackBackend({});
  SQLOOP_CHECK(backend.ok(), "fallback backend unavailable");
  return *std::move(backend);
}
inline std::vector<RealBackend> RealBackends() {
  return {RealBackend{"io_uring", &MakeUring}, RealBackend{"fallback", &MakeFallback}};
}
inline std::string RealBackendName(const ::testing::TestParamInfo<RealBackend>& param) {
  return param.param.name;
}

// A TenantRequest that records what happened to it.
struct Call : TenantRequest {
  Call() { Prime(); }
  Call(absl::string_view tenant_name, absl::string_view statement, bool create,
       Request::Kind request_kind = Request::Kind::kWrite) {
    tenant = tenant_name;
    sql = statement;
    create_if_missing = create;
    kind = request_kind;
    Prime();
  }
  void Prime() {
    on_row = [](Request& r, const Row& row) {
      auto& call = static_cast<Call&>(TenantRequest::Of(r));
      for (int i = 0; i < row.size(); ++i) {
        if (i > 0) call.rows += "|";
        const Value v = row.Get(i);
        call.rows +=
            v.type == Value::Type::kInt ? std::to_string(v.int_value) : std::string(v.bytes);
      }
      call.rows += "\n";
    };
    on_done = [](TenantRequest& r, absl::Status status) {
      auto& call = static_cast<Call&>(r);
      EXPECT_FALSE(call.done) << "on_done ran twice for " << call.tenant;
      call.done = true;
      call.completions++;
      call.result = std::move(status);
      if (call.then) call.then(call);
    };
  }
  // Makes the call reusable for another submission.
  void Reset() {
    done = false;
    rows.clear();
    result = absl::UnknownError("not done");
  }

  bool done = false;
  int completions = 0;
  absl::Status result = absl::UnknownError("not done");
  std::string rows;
  std::function<void(Call&)> then;  // Runs inside on_done.
};

// A loop, a Vfs and a Registry, torn down in order.
class RegistryHarness {
 public:
  RegistryHarness(std::unique_ptr<io::Backend> backend, RegistryOptions options,
                  loop::LoopOptions loop_options = {}) {
    loop_ = std::make_unique<loop::Loop>(std::move(backend), std::move(loop_options));
    absl::StatusOr<std::unique_ptr<Vfs>> vfs = Vfs::Create(*loop_);
    SQLOOP_CHECK(vfs.ok(), "Vfs::Create failed");
    vfs_ = *std::move(vfs);
    absl::StatusOr<std::unique_ptr<Registry>> registry =
        Registry::Create(*loop_, *vfs_, std::move(options));
    create_status_ = registry.status();
    if (registry.ok()) registry_ = *std::move(registry);
  }
  ~RegistryHarness() { Shutdown(); }
  RegistryHarness(const RegistryHarness&) = delete;
  RegistryHarness& operator=(const RegistryHarness&) = delete;

  [[nodiscard]] const absl::Status& create_status() const { return create_status_; }
  [[nodiscard]] Registry& registry() { return *registry_; }
  [[nodiscard]] loop::Loop& loop() { return *loop_; }
  [[nodiscard]] Vfs& vfs() { return *vfs_; }

  // Runs the loop until `done()` holds. Fails the test (and returns false) if the loop has
  // nothing pending that could make it true.
  bool RunUntil(const std::function<bool()>& done) {
    while (!done()) {
      if (loop_->pending() == 0) {
        ADD_FAILURE() << "the loop went quiet before the condition held";
        return false;
      }
      const absl::Status status = loop_->Run(loop::RunMode::kOnce);
      if (!status.ok()) {
        ADD_FAILURE() << status;
        return false;
      }
    }
    return true;
  }
  // Submits and runs until the call completed; returns its outcome.
  absl::Status Do(Call& call) {
    call.Reset();
    if (absl::Status admitted = registry_->Submit(call); !admitted.ok()) return admitted;
    RunUntil([&] { return call.done; });
    return call.result;
  }
  // Shuts the registry down and runs the loop until it is; `each_tick` (if set) runs before the
  // first tick and after each, the registry still there.
  void Shutdown(const std::function<void()>& each_tick = nullptr) {
    if (registry_ == nullptr) return;
    bool done = false;
    registry_->Shutdown([](void* arg, absl::Status) { *static_cast<bool*>(arg) = true; }, &done);
    RunUntil([&] {
      if (each_tick) each_tick();
      return done;
    });
    registry_.reset();
    SQLOOP_CHECK(loop_->Run(loop::RunMode::kUntilDone).ok(), "final drain failed");
  }

 private:
  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<Vfs> vfs_;
  std::unique_ptr<Registry> registry_;
  absl::Status create_status_;
};

// Opens `path` with stock SQLite (its own unix VFS) and returns PRAGMA integrity_check's
// first row and the result of `query` (first column of the first row), or an error text.
inline std::pair<std::string, std::string> CheckWithStockSqlite(const std::string& path,
                                                                const char* query) {
  sqlite3* db = nullptr;
  std::pair<std::string, std::string> out{"cannot open", ""};
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return out;
  }
  auto one = [db](const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    std::string value = "error";
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
      value = text == nullptr ? "" : text;
    }
    sqlite3_finalize(stmt);
    return value;
  };
  out.first = one("PRAGMA integrity_check");
  out.second = one(query);
  sqlite3_close(db);
  return out;
}

}  // namespace sqloop::db::testing

#endif  // SQLOOP_TESTS_REGISTRY_TEST_UTIL_H_
