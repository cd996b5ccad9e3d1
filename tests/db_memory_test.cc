// Per-tenant memory through the Database: every SQLite byte of a database is charged to its
// DatabaseOptions::tenant, and a tenant over its limit fails its own request only. A binary of
// its own: the accounting allocator must be installed before any other SQLite use.
#include <memory>
#include <string>

#include "alloc/sqlite_memory.h"
#include "db/database.h"
#include "db/vfs.h"
#include "gtest/gtest.h"
#include "loop/loop.h"
#include "tests/db_test_support.h"

namespace sqloop::db {
namespace {

using testing::ScratchDir;

class DatabaseMemoryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_TRUE(alloc::InstallSqliteMemory().ok()); }

  void SetUp() override {
    auto backend = io::CreateBackend({});
    ASSERT_TRUE(backend.ok());
    loop_ = std::make_unique<loop::Loop>(*std::move(backend), loop::LoopOptions{});
    dir_ = std::make_unique<ScratchDir>(true);
    auto vfs = Vfs::Create(*loop_);
    ASSERT_TRUE(vfs.ok());
    vfs_ = *std::move(vfs);
  }
  void TearDown() override {
    vfs_.reset();
    loop_.reset();
  }

  std::unique_ptr<Database> Open(const std::string& name, alloc::TenantId tenant) {
    DatabaseOptions options;
    options.tenant = tenant;
    auto db = std::make_unique<Database>(*loop_, *vfs_, dir_->Path(name), options);
    absl::Status status = absl::UnknownError("open never called back");
    db->Open([](void* arg, absl::Status s) { *static_cast<absl::Status*>(arg) = std::move(s); },
             &status);
    EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    EXPECT_TRUE(status.ok()) << status;
    return db;
  }
  void Close(Database& db) {
    db.Close(nullptr, nullptr);
    ASSERT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
  }
  absl::Status Write(Database& db, absl::string_view sql) {
    Request request;
    request.kind = Request::Kind::kWrite;
    request.sql = sql;
    absl::Status result = absl::UnknownError("never acknowledged");
    request.user_data = &result;
    request.on_done = [](Request& r, absl::Status s) {
      *static_cast<absl::Status*>(r.user_data) = std::move(s);
    };
    if (absl::Status admitted = db.Submit(request); !admitted.ok()) return admitted;
    EXPECT_TRUE(loop_->Run(loop::RunMode::kUntilDone).ok());
    return result;
  }
  static uint64_t LiveBytes(alloc::TenantId tenant) {
    absl::StatusOr<alloc::ProfileCounters> counters = alloc::GetTenantCounters(tenant);
    return counters.ok() ? counters->live_bytes : UINT64_MAX;
  }

  std::unique_ptr<loop::Loop> loop_;
  std::unique_ptr<ScratchDir> dir_;
  std::unique_ptr<Vfs> vfs_;
};

TEST_F(DatabaseMemoryTest, EachDatabasesBytesGoToItsTenantAndLeaveWithIt) {
  auto small = alloc::RegisterTenant("small");
  auto large = alloc::RegisterTenant("large");
  ASSERT_TRUE(small.ok() && large.ok());
  auto a = Open("a.db", *small);
  auto b = Open("b.db", *large);
  ASSERT_TRUE(Write(*a, "CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write(*b, "CREATE TABLE t(x)").ok());
  // Tenant `large` fills a few hundred pages of cache; `small` stays near its empty database.
  ASSERT_TRUE(Write(*b,
                    "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE "
                    "i < 20000) INSERT INTO t SELECT randomblob(100) FROM c")
                  .ok());
  EXPECT_GT(LiveBytes(*small), 0u);
  EXPECT_GT(LiveBytes(*large), LiveBytes(*small) + (1u << 20));
  Close(*a);
  Close(*b);
  EXPECT_EQ(LiveBytes(*small), 0u) << "a closed database left memory charged to its tenant";
  EXPECT_EQ(LiveBytes(*large), 0u);
  EXPECT_TRUE(alloc::UnregisterTenant(*small).ok());
  EXPECT_TRUE(alloc::UnregisterTenant(*large).ok());
}

TEST_F(DatabaseMemoryTest, ATenantOverItsLimitFailsAloneAndRecovers) {
  auto capped = alloc::RegisterTenant("capped");
  auto free_tenant = alloc::RegisterTenant("free");
  ASSERT_TRUE(capped.ok() && free_tenant.ok());
  auto a = Open("capped.db", *capped);
  auto b = Open("free.db", *free_tenant);
  ASSERT_TRUE(Write(*a, "CREATE TABLE t(x)").ok());
  ASSERT_TRUE(Write(*b, "CREATE TABLE t(x)").ok());
  ASSERT_TRUE(alloc::SetTenantLimit(*capped, LiveBytes(*capped) + (64u << 10)).ok());
  const char* kBig =
      "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE "
      "i < 20000) INSERT INTO t SELECT randomblob(100) FROM c";
  const absl::Status over = Write(*a, kBig);
  EXPECT_TRUE(absl::IsResourceExhausted(over)) << over;
  EXPECT_NE(over.message().find("memory limit"), absl::string_view::npos) << over;
  EXPECT_TRUE(Write(*b, kBig).ok()) << "another tenant must not be affected";
  ASSERT_TRUE(alloc::SetTenantLimit(*capped, alloc::kTenantNoLimit).ok());
  EXPECT_TRUE(Write(*a, kBig).ok()) << "the capped database must stay usable";
  Close(*a);
  Close(*b);
  EXPECT_EQ(LiveBytes(*capped), 0u);
  EXPECT_TRUE(alloc::UnregisterTenant(*capped).ok());
  EXPECT_TRUE(alloc::UnregisterTenant(*free_tenant).ok());
}

}  // namespace
}  // namespace sqloop::db
