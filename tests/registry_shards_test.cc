// Shards: the stable placement functions (pinned values: they must never change), and 2 loops
// on 2 threads serving requests from several threads for many tenants, each request completing
// exactly once with the right result, with replies delivered both ways (to a caller's loop and
// on the shard thread).
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"
#include "sqloop/db/shards.h"
#include "sqloop/io/prng.h"
#include "tests/registry_test_util.h"

namespace sqloop::db {
namespace {

using testing::TempDir;

const bool kAccounting = testing::InstallAccounting();

TEST(ShardPlacementTest, TenantHashIsFnv1a64) {
  // The published FNV-1a 64 test vectors.
  EXPECT_EQ(TenantHash(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(TenantHash("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(TenantHash("foobar"), 0x85944171f73967e8ull);
}

TEST(ShardPlacementTest, JumpHashIsPinned) {
  // Values of the reference implementation (Lamping & Veach, Figure 1).
  EXPECT_EQ(JumpConsistentHash(0, 1), 0u);
  EXPECT_EQ(JumpConsistentHash(0, 100), 0u);
  for (uint64_t key = 0; key < 1000; ++key) EXPECT_EQ(JumpConsistentHash(key, 1), 0u);
  // Computed independently (a Python transcription of the paper's code over FNV-1a): a change
  // here would move tenants between shards, and their files with them.
  std::vector<uint32_t> jumps;
  for (uint64_t key = 0; key < 10; ++key) jumps.push_back(JumpConsistentHash(key, 10));
  EXPECT_EQ(jumps, (std::vector<uint32_t>{0, 6, 6, 8, 1, 4, 9, 0, 4, 7}));
  const std::vector<uint32_t> shards = {ShardOf("tenant-0", 8), ShardOf("tenant-1", 8),
                                        ShardOf("tenant-2", 8), ShardOf("tenant-3", 8)};
  EXPECT_EQ(shards, (std::vector<uint32_t>{1, 1, 0, 3}));
}

TEST(ShardPlacementTest, GrowingByOneShardMovesFewTenants) {
  constexpr int kTenants = 10000;
  int moved = 0;
  std::vector<int> per_shard(4, 0);
  for (int i = 0; i < kTenants; ++i) {
    const std::string name = absl::StrCat("t", i);
    const uint32_t before = ShardOf(name, 3);
    const uint32_t after = ShardOf(name, 4);
    ASSERT_LT(after, 4u);
    per_shard[after]++;
    if (before != after) {
      moved++;
      EXPECT_EQ(after, 3u) << "a tenant moved between two old shards";
    }
  }
  // About 1/4 move, all to the new shard; every shard gets about 1/4.
  EXPECT_GT(moved, kTenants / 5);
  EXPECT_LT(moved, kTenants * 3 / 10);
  for (int count : per_shard) EXPECT_GT(count, kTenants / 5);
}

TEST(ShardsStartTest, AShardThatCannotStartFailsStartWithItsError) {
  ShardsOptions options;
  options.shards = 2;
  options.registry.directory = "/nonexistent/sqloop-tenants";
  absl::StatusOr<std::unique_ptr<Shards>> shards = Shards::Start(std::move(options));
  ASSERT_FALSE(shards.ok());
  EXPECT_EQ(shards.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(shards.status().message(), "shard 0: ")) << shards.status();
  EXPECT_TRUE(absl::StrContains(shards.status().message(), "create it")) << shards.status();
}

// Each shard's Registry::Create grows the descriptor table for its share of open_max; Start
// grows it for all of them, since they share it. Re-executed, so that the table starts small.
TEST(ShardsStartTest, StartGrowsTheDescriptorTableForEveryShard) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const rlim_t limit = testing::RaiseDescriptorLimit(4096);
        TempDir dir;
        ShardsOptions options;
        options.shards = 2;
        options.registry.directory = dir.path();
        // A shard's own share rounds the table up to 2,048 (it grows by powers of two); the
        // budget of both is over that.
        options.registry.open_max = 2 * 250;
        const int budget = 2 * 250 * static_cast<int>(kDescriptorsPerDatabase) +
                           static_cast<int>(options.registry.descriptors_reserved);
        const int before = testing::DescriptorTableSize();
        absl::StatusOr<std::unique_ptr<Shards>> shards = Shards::Start(std::move(options));
        const int after = testing::DescriptorTableSize();
        std::fprintf(
            stderr, "descriptor table %d before Start, %d after, budget %d (limit %d): %s\n",
            before, after, budget, static_cast<int>(limit), shards.status().ToString().c_str());
        std::_Exit(shards.ok() && before < budget && after >= budget ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "descriptor table");
}

// ---- Two shards, several client threads -----------------------------------------------------

constexpr uint32_t kShards = 2;
constexpr int kClients = 4;
constexpr int kTenants = 48;
constexpr int kRequestsPerClient = 300;

std::string TenantName(int i) { return absl::StrFormat("shard-tenant-%02d", i); }

// A client thread that waits on its own condition variable: replies run on the shard thread.
struct BlockingClient {
  std::mutex mu;
  std::condition_variable cv;
  int replies = 0;
};

struct ClientRequest : ShardRequest {
  BlockingClient* client = nullptr;
  std::atomic<int> replies{0};
  absl::Status status;  // on_done's, written before the reply is counted.
};

// One client thread: a window of kWindow caller-owned requests writing (client, seq) rows to
// pseudo-random tenants, with replies posted to the client's own loop. `written` counts the
// rows per tenant; a failed or duplicated reply is counted.
void RunClient(Shards& shards, int client, std::vector<int>& written, std::atomic<int>& failures,
               std::atomic<int>& duplicates) {
  absl::StatusOr<std::unique_ptr<loop::Loop>> loop = loop::Loop::Create({});
  ASSERT_TRUE(loop.ok());
  constexpr int kWindow = 8;
  struct Slot : ShardRequest {
    std::string tenant_name;
    bool replied = false;
    absl::Status status;
    int* outstanding = nullptr;
  };
  std::vector<Slot> slots(kWindow);
  io::Prng prng(1000 + client);
  int submitted = 0;
  int outstanding = 0;
  auto submit = [&](Slot& slot) {
    const int tenant = static_cast<int>(prng.Below(kTenants));
    slot.tenant_name = TenantName(tenant);
    slot.tenant = slot.tenant_name;
    slot.kind = Request::Kind::kWrite;
    slot.sql = "INSERT INTO log VALUES (?, ?)";
    slot.params = {Value::Int(client), Value::Int(submitted)};
    slot.replied = false;
    slot.outstanding = &outstanding;
    slot.reply_loop = loop->get();
    slot.on_done = [](ShardRequest& r, absl::Status status) {
      auto& s = static_cast<Slot&>(r);
      s.replied = true;
      s.status = std::move(status);
      --*s.outstanding;
    };
    written[tenant]++;
    submitted++;
    outstanding++;
    ASSERT_TRUE(shards.Submit(slot).ok());
  };
  for (Slot& slot : slots) submit(slot);
  while (outstanding > 0) {
    ASSERT_TRUE((*loop)->Run(loop::RunMode::kOnce).ok());
    for (Slot& slot : slots) {
      if (!slot.replied) continue;
      if (!slot.status.ok()) failures++;
      slot.replied = false;
      if (submitted < kRequestsPerClient) {
        submit(slot);
      } else {
        slot.replied = false;
      }
    }
  }
  // A reply posted twice would leave the loop with work, or fire on_done again.
  ASSERT_TRUE((*loop)->Run(loop::RunMode::kNoWait).ok());
  for (Slot& slot : slots) duplicates += slot.replied ? 1 : 0;
}

class ShardsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ShardsOptions options;
    options.shards = kShards;
    options.registry.directory = dir_.path();
    options.registry.open_max = 32;  // Split: 16 per shard, fewer than the tenants each serves.
    options.registry.idle_timeout = absl::Seconds(60);
    options.registry.memory_name_prefix = "shards-test/";
    absl::StatusOr<std::unique_ptr<Shards>> shards = Shards::Start(std::move(options));
    ASSERT_TRUE(shards.ok()) << shards.status();
    shards_ = *std::move(shards);
    ASSERT_EQ(shards_->size(), kShards);
  }

  // Runs `request` to completion from this (non-shard) thread.
  absl::Status RunBlocking(ClientRequest& request) {
    BlockingClient client;
    request.client = &client;
    request.reply_loop = nullptr;
    request.on_done = [](ShardRequest& r, absl::Status status) {
      auto& c = static_cast<ClientRequest&>(r);
      c.status = std::move(status);
      c.replies.fetch_add(1);
      std::lock_guard<std::mutex> lock(c.client->mu);
      c.client->replies++;
      c.client->cv.notify_all();
    };
    if (absl::Status admitted = shards_->Submit(request); !admitted.ok()) return admitted;
    std::unique_lock<std::mutex> lock(client.mu);
    client.cv.wait(lock, [&] { return client.replies == 1; });
    return request.status;
  }

  // Reads `tenant` back and compares its rows per client with what the clients wrote.
  void CheckTenant(int i, const std::vector<std::vector<int>>& written) {
    struct Counter : ClientRequest {
      std::vector<int> per_client = std::vector<int>(kClients, 0);
    } read;
    const std::string name = TenantName(i);
    read.tenant = name;
    read.kind = Request::Kind::kRead;
    read.sql = "SELECT client, count(*) FROM log GROUP BY client";
    read.on_row = [](Request& r, const Row& row) {
      static_cast<Counter&>(ShardRequest::Of(r)).per_client[static_cast<size_t>(row.Int(0))] =
          static_cast<int>(row.Int(1));
    };
    ASSERT_TRUE(RunBlocking(read).ok()) << read.status;
    EXPECT_EQ(read.replies.load(), 1);
    for (int c = 0; c < kClients; ++c) {
      EXPECT_EQ(read.per_client[c], written[c][i]) << name << " client " << c;
    }
  }

  TempDir dir_;
  std::unique_ptr<Shards> shards_;
};

TEST_F(ShardsTest, InvalidNameIsRefusedBeforeAnyHandOff) {
  ClientRequest request;
  request.tenant = "../x";
  request.on_done = [](ShardRequest&, absl::Status) {
    ADD_FAILURE() << "replied to a refused request";
  };
  EXPECT_EQ(shards_->Submit(request).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(dir_.Files().empty());
}

TEST_F(ShardsTest, ManyThreadsManyTenantsEveryRequestOnceAndCorrect) {
  for (int i = 0; i < kTenants; ++i) {
    const std::string name = TenantName(i);
    ClientRequest create;
    create.tenant = name;
    create.create_if_missing = true;
    create.kind = Request::Kind::kWrite;
    create.sql = "CREATE TABLE log(client INTEGER, seq INTEGER)";
    ASSERT_TRUE(RunBlocking(create).ok()) << create.status;
  }
  // Each client owns its requests (one in flight at a time per slot, a window of 8 slots),
  // writes (client, seq) rows to pseudo-random tenants, and replies are posted to its loop.
  std::vector<std::thread> clients;
  std::vector<std::vector<int>> written(kClients, std::vector<int>(kTenants, 0));
  std::atomic<int> failures{0};
  std::atomic<int> duplicates{0};
  for (int client = 0; client < kClients; ++client) {
    clients.emplace_back(
        [&, client] { RunClient(*shards_, client, written[client], failures, duplicates); });
  }
  for (std::thread& t : clients) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(duplicates.load(), 0);

  // Read every tenant back: per client, the rows written to it.
  for (int i = 0; i < kTenants; ++i) CheckTenant(i, written);
  // Both shards served tenants, and neither opened more than its half of the budget.
  const std::vector<RegistryStats> stats = shards_->Stats();
  ASSERT_EQ(stats.size(), kShards);
  uint64_t requests = 0;
  for (const RegistryStats& s : stats) {
    EXPECT_GT(s.requests, 0u);
    EXPECT_LE(s.open_high_water, 16u);
    EXPECT_EQ(s.requests_failed, 0u);
    requests += s.requests;
  }
  EXPECT_EQ(requests, static_cast<uint64_t>(kTenants * 2 + kClients * kRequestsPerClient));
  shards_->Stop();
}

}  // namespace
}  // namespace sqloop::db
