// Registry: tenant names, open on first use, creation only when allowed, deletion, scale to
// zero, and the open-slot and memory budgets, on io_uring and the fallback backend.
#include "sqloop/db/registry.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gtest/gtest.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "sqloop/io/internal/backends.h"
#include "tests/registry_test_util.h"

namespace sqloop::db {
namespace {

using testing::Call;
using testing::CountOpenFds;
using testing::RegistryHarness;
using testing::TempDir;

const bool kAccounting = testing::InstallAccounting();

// ---- Tenant names ---------------------------------------------------------------------------

bool FirstByteAllowed(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool LaterByteAllowed(unsigned char c) { return FirstByteAllowed(c) || c == '_' || c == '-'; }

TEST(TenantNameTest, EveryByteAsFirstAndAsLaterCharacter) {
  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    const std::string first(1, c);
    const std::string later = absl::StrCat("a", first, "z");
    const absl::Status first_status = ValidateTenantName(first);
    const absl::Status later_status = ValidateTenantName(later);
    EXPECT_EQ(first_status.ok(), FirstByteAllowed(static_cast<unsigned char>(b))) << "byte " << b;
    EXPECT_EQ(later_status.ok(), LaterByteAllowed(static_cast<unsigned char>(b))) << "byte " << b;
    if (!first_status.ok()) {
      EXPECT_EQ(first_status.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_TRUE(absl::StrContains(first_status.message(), "position 0")) << first_status;
    }
    if (!later_status.ok()) {
      EXPECT_EQ(later_status.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_TRUE(absl::StrContains(later_status.message(), "position 1")) << later_status;
    }
  }
}

TEST(TenantNameTest, LengthBoundaries) {
  EXPECT_EQ(ValidateTenantName("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(ValidateTenantName("").message(), "empty"));
  EXPECT_TRUE(ValidateTenantName("a").ok());
  EXPECT_TRUE(ValidateTenantName(std::string(kTenantNameBytesMax, 'a')).ok());
  const absl::Status too_long = ValidateTenantName(std::string(kTenantNameBytesMax + 1, 'a'));
  EXPECT_EQ(too_long.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(too_long.message(), "65 bytes")) << too_long;
}

TEST(TenantNameTest, PathTraversalAndLookalikesAreRefusedWithAReason) {
  struct Case {
    std::string name;
    const char* hint;
  };
  const std::vector<Case> cases = {
      {"..", "'.'"},
      {".", "'.'"},
      {"a/../b", "path separator"},
      {"/etc/passwd", "path separator"},
      {"a\\b", "path separator"},
      {"a.db", "'.'"},
      {"Acme", "uppercase"},
      {"-rf", "must start"},
      {"_x", "must start"},
      {"a b", "' '"},
      {std::string("a\0b", 3), "\\x00"},
      {"a\nb", "\\x0a"},
      {"a\x7f", "\\x7f"},
      {"caf\xc3\xa9", "\\xc3"},
  };
  for (const Case& c : cases) {
    const absl::Status status = ValidateTenantName(c.name);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_TRUE(absl::StrContains(status.message(), c.hint)) << status << " for " << c.name;
  }
  EXPECT_TRUE(ValidateTenantName("0123-abc_def").ok());
  EXPECT_TRUE(ValidateTenantName("9").ok());
}

TEST(TenantStateTest, EveryStateHasAName) {
  for (int s = 0; s <= static_cast<int>(TenantState::kDeleting); ++s) {  // kDeleting is last.
    EXPECT_NE(TenantStateName(static_cast<TenantState>(s)), "unknown");
  }
}

// ---- The registry on real backends ----------------------------------------------------------

class RegistryTest : public ::testing::TestWithParam<testing::RealBackend> {
 protected:
  RegistryOptions Options() const {
    RegistryOptions options;
    options.directory = dir_.path();
    options.idle_timeout = absl::Hours(1);  // Tests that want idle closes shorten it.
    options.open_max = 16;
    options.memory_name_prefix = absl::StrCat("registry-test-", serial_++, "/");
    return options;
  }
  std::unique_ptr<RegistryHarness> Make(const RegistryOptions& options) {
    auto harness = std::make_unique<RegistryHarness>(GetParam().make(), options);
    EXPECT_TRUE(harness->create_status().ok()) << harness->create_status();
    return harness;
  }

  // Where SIEVE and LRU part, with open_max 2: a opens and is used again, then b opens, then c
  // needs one of them closed. a has been idle the longest, so LRU evicts it; SIEVE keeps a (used
  // again since it opened) and evicts b (used once). Returns the harness after c is served.
  // Evicted tenants close here (asleep_max 0); registry_sleep_test has the sleeping ones.
  std::unique_ptr<RegistryHarness> OpenAUsedTwiceBOnceThenC(Eviction eviction) {
    RegistryOptions options = Options();
    options.open_max = 2;
    options.asleep_max = 0;
    options.eviction = eviction;
    auto h = Make(options);
    Call a("a", "CREATE TABLE t(x)", true);
    EXPECT_TRUE(h->Do(a).ok()) << a.result;
    Call use_a("a", "SELECT 1", false, Request::Kind::kRead);
    EXPECT_TRUE(h->Do(use_a).ok()) << use_a.result;
    Call b("b", "CREATE TABLE t(x)", true);
    EXPECT_TRUE(h->Do(b).ok()) << b.result;
    EXPECT_EQ(h->registry().stats().idle, 2u);
    Call c("c", "CREATE TABLE t(x)", true);
    EXPECT_TRUE(h->Do(c).ok()) << c.result;
    EXPECT_EQ(h->registry().stats().evictions, 1u);
    return h;
  }

  TempDir dir_;
  static inline int serial_ = 0;
};

TEST_P(RegistryTest, CreateOptionsAreChecked) {
  RegistryOptions options = Options();
  options.open_max = kOpenMaxLimit + 1;
  RegistryHarness too_many(GetParam().make(), options);
  EXPECT_EQ(too_many.create_status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(too_many.create_status().message(), "open_max"));

  options = Options();
  options.directory = dir_.path() + "/missing";
  RegistryHarness missing(GetParam().make(), options);
  EXPECT_EQ(missing.create_status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(missing.create_status().message(), "create it"));

  // Only a missing directory is the host's to create: a file in its place says so.
  const std::string file = dir_.path() + "/a-file";
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ::close(fd);
  options = Options();
  options.directory = file;
  RegistryHarness not_a_directory(GetParam().make(), options);
  const absl::Status status = not_a_directory.create_status();
  EXPECT_NE(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_FALSE(status.ok());
  EXPECT_TRUE(absl::StrContains(status.message(), "Not a directory")) << status;
  EXPECT_FALSE(absl::StrContains(status.message(), "create it")) << status;
}

// Invariant 7: Create grows the descriptor table to the registry's whole budget, so that no
// open of a tenant grows it inside a tick (a growth waits for an RCU grace period while io_uring's
// workers share the table). In a child process, whose table is sized to what its parent had
// open, so that the growth is Create's to do (re-executed, not forked: the test has threads).
TEST_P(RegistryTest, CreateGrowsTheDescriptorTableToTheWholeBudget) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const rlim_t limit = testing::RaiseDescriptorLimit(4096);
        RegistryOptions options = Options();
        options.open_max =
            std::min<uint32_t>(250, (static_cast<uint32_t>(limit) - options.descriptors_reserved) /
                                        kDescriptorsPerDatabase);
        const int budget = static_cast<int>(options.open_max * kDescriptorsPerDatabase) +
                           static_cast<int>(options.descriptors_reserved);
        const int before = testing::DescriptorTableSize();
        RegistryHarness h(GetParam().make(), options);
        const int after = testing::DescriptorTableSize();
        std::fprintf(stderr, "descriptor table %d before Create, %d after, budget %d: %s\n", before,
                     after, budget, h.create_status().ToString().c_str());
        std::_Exit(h.create_status().ok() && before < budget && after >= budget ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "descriptor table");
}

// Beyond what the process may hold, the reservation fails and says why.
TEST(ReserveDescriptorTableTest, MoreThanTheLimitAllowsFailsWithTheLimitNamed) {
  rlimit limit{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
  ASSERT_NE(limit.rlim_cur, RLIM_INFINITY);
  const absl::Status over = ReserveDescriptorTable(uint64_t{limit.rlim_cur} + 1);
  EXPECT_FALSE(over.ok());
  EXPECT_TRUE(absl::StrContains(over.message(), "RLIMIT_NOFILE")) << over;
  // More than an int holds: refused, never truncated to a small number that would succeed.
  const absl::Status absurd = ReserveDescriptorTable((uint64_t{1} << 32) + 5);
  EXPECT_EQ(absurd.code(), absl::StatusCode::kInvalidArgument) << absurd;
  EXPECT_TRUE(ReserveDescriptorTable(uint64_t{limit.rlim_cur}).ok());
}

TEST_P(RegistryTest, InvalidNamesChangeNothing) {
  auto h = Make(Options());
  for (const char* name : {"", "..", "../etc", "a/b", "A", "x.db"}) {
    Call call(name, "CREATE TABLE t(x)", /*create=*/true);
    const absl::Status status = h->registry().Submit(call);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_FALSE(call.done);
  }
  EXPECT_EQ(h->loop().pending(), 0u);
  EXPECT_EQ(h->registry().stats().tenants, 0u);
  EXPECT_EQ(h->registry().stats().rejected, 6u);
  EXPECT_TRUE(dir_.Files().empty());
}

TEST_P(RegistryTest, CreatesOnlyWhenTheRequestAllowsIt) {
  auto h = Make(Options());
  Call read("acme", "SELECT 1", /*create=*/false, Request::Kind::kRead);
  const absl::Status missing = h->Do(read);
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound) << missing;
  EXPECT_TRUE(absl::StrContains(missing.message(), "create_if_missing")) << missing;
  EXPECT_TRUE(dir_.Files().empty()) << "a refused request created a file";

  Call create("acme", "CREATE TABLE kv(k TEXT PRIMARY KEY, v INTEGER)", /*create=*/true);
  ASSERT_TRUE(h->Do(create).ok()) << create.result;
  EXPECT_TRUE(dir_.Exists("acme.db"));
  Call insert("acme", "INSERT INTO kv VALUES ('a', 1)", /*create=*/false);
  ASSERT_TRUE(h->Do(insert).ok()) << insert.result;
  Call again("acme", "SELECT v FROM kv", /*create=*/false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(again).ok()) << again.result;
  EXPECT_EQ(again.rows, "1\n");

  // Open-only requests (no SQL): create, or check existence.
  Call open_only("empty", "", /*create=*/true);
  EXPECT_TRUE(h->Do(open_only).ok()) << open_only.result;
  EXPECT_TRUE(dir_.Exists("empty.db"));
  Call probe("nobody", "", /*create=*/false);
  EXPECT_EQ(h->Do(probe).code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(dir_.Exists("nobody.db"));

  const absl::StatusOr<TenantStats> stats = h->registry().GetTenantStats("acme");
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->requests, 4u);  // The NotFound one counts too.
  EXPECT_EQ(stats->requests_failed, 1u);
  EXPECT_EQ(stats->state, TenantState::kIdle);
  EXPECT_EQ(stats->opens, 1u);  // A NotFound is no open, and no open failure either.
  EXPECT_EQ(h->registry().stats().open_failures, 0u);
  EXPECT_EQ(h->registry().GetTenantStats("never").status().code(), absl::StatusCode::kNotFound);
}

// A creation that fails inside SQLite's open (here its tenant's memory limit is too small for
// the open itself) leaves the database file it created, empty. That file is not a tenant: a
// request without create_if_missing gets NotFound, in this registry and in the next one, and
// the next creation makes the tenant anew.
TEST_P(RegistryTest, AnEmptyFileLeftByAFailedCreationIsNoTenant) {
  const auto bytes_of = [&](const char* name) {
    struct stat st {};
    return ::stat(absl::StrCat(dir_.path(), "/", name).c_str(), &st) == 0 ? st.st_size : -1;
  };
  {
    RegistryOptions options = Options();
    options.tenant_memory_bytes_max = 1;
    auto h = Make(options);
    Call create("ghost", "CREATE TABLE t(x)", /*create=*/true);
    EXPECT_FALSE(h->Do(create).ok());
    ASSERT_EQ(h->registry().stats().open_failures, 1u);
    ASSERT_EQ(bytes_of("ghost.db"), 0) << "the failed creation left no empty file to test with";
    Call read("ghost", "SELECT 1", /*create=*/false, Request::Kind::kRead);
    const absl::Status missing = h->Do(read);
    EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound) << missing;
    EXPECT_TRUE(absl::StrContains(missing.message(), "create_if_missing")) << missing;
    EXPECT_EQ(h->registry().stats().opens, 1u) << "the read opened the empty file";
  }
  auto h = Make(Options());
  Call read("ghost", "SELECT count(*) FROM sqlite_master", /*create=*/false, Request::Kind::kRead);
  EXPECT_EQ(h->Do(read).code(), absl::StatusCode::kNotFound) << read.result;
  // A creation that ran no statement still writes the first page (the switch to WAL), so the
  // tenant it made exists for the next registry.
  Call blank("blank", "", /*create=*/true);
  ASSERT_TRUE(h->Do(blank).ok()) << blank.result;
  EXPECT_GT(bytes_of("blank.db"), 0);
  Call create("ghost", "CREATE TABLE t(x)", /*create=*/true);
  ASSERT_TRUE(h->Do(create).ok()) << create.result;
  Call again("ghost", "SELECT count(*) FROM sqlite_master", /*create=*/false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(again).ok()) << again.result;
  EXPECT_EQ(again.rows, "1\n");
  EXPECT_GT(bytes_of("ghost.db"), 0);
  h.reset();
  h = Make(Options());
  Call exists("blank", "SELECT count(*) FROM sqlite_master", /*create=*/false,
              Request::Kind::kRead);
  EXPECT_TRUE(h->Do(exists).ok()) << exists.result;
}

// A create that arrives while another request's probe (an open without create_if_missing) is in
// flight (two HTTP clients creating the same tenant: each probes first) is not answered by the
// probe's NotFound: the probe answers the requests in front of it, and the tenant is then
// created for it and for the requests behind it (http seed 5486 answered such a create 404).
TEST_P(RegistryTest, ACreateQueuedBehindAProbeCreatesTheTenant) {
  auto h = Make(Options());
  Call probe("race", "", /*create=*/false);
  Call create("race", "", /*create=*/true);
  Call read("race", "SELECT count(*) FROM sqlite_master", /*create=*/false, Request::Kind::kRead);
  ASSERT_TRUE(h->registry().Submit(probe).ok());
  EXPECT_EQ(h->registry().GetTenantStats("race")->state, TenantState::kOpening);
  ASSERT_TRUE(h->registry().Submit(create).ok());
  ASSERT_TRUE(h->registry().Submit(read).ok());
  h->RunUntil([&] { return probe.done && create.done && read.done; });
  EXPECT_EQ(probe.result.code(), absl::StatusCode::kNotFound) << probe.result;
  EXPECT_TRUE(create.result.ok()) << create.result;
  EXPECT_TRUE(read.result.ok()) << read.result;
  EXPECT_EQ(read.rows, "0\n");
  EXPECT_TRUE(dir_.Exists("race.db"));
  EXPECT_EQ(h->registry().stats().creations, 1u);
}

// A Client's requests queued while their tenant opens are not yet in any Database, which
// delivers them through the Client later: destroying the Client then stops the process with a
// message, as destroying it with requests in a Database does, instead of a use after free once
// the tenant is open. Once they are done it may go.
TEST_P(RegistryTest, AClientMustOutliveItsQueuedRequests) {
  auto h = Make(Options());
  EXPECT_DEATH(
      {
        Client doomed;
        Call queued("clientele", "CREATE TABLE t(x)", /*create=*/true);
        queued.client = &doomed;
        SQLOOP_CHECK(h->registry().Submit(queued).ok(), "submit");
        SQLOOP_CHECK(h->registry().GetTenantStats("clientele")->state == TenantState::kOpening,
                     "the request is not queued behind the open");
      },
      "Client destroyed with requests in flight");
  auto client = std::make_unique<Client>();
  Call create("clientele", "CREATE TABLE t(x)", /*create=*/true);
  Call insert("clientele", "INSERT INTO t VALUES (1)", /*create=*/false);
  Call read("clientele", "SELECT count(*) FROM t", /*create=*/false, Request::Kind::kRead);
  for (Call* call : {&create, &insert, &read}) {
    call->client = client.get();
    ASSERT_TRUE(h->registry().Submit(*call).ok());
  }
  EXPECT_EQ(h->registry().GetTenantStats("clientele")->state, TenantState::kOpening);
  h->RunUntil([&] { return create.done && insert.done && read.done; });
  client.reset();  // Every request is done: nothing refers to it any more.
  EXPECT_TRUE(create.result.ok()) << create.result;
  EXPECT_TRUE(insert.result.ok()) << insert.result;
  EXPECT_EQ(read.rows, "1\n");
}

TEST_P(RegistryTest, RequestsQueuedWhileOpeningRunInOrder) {
  auto h = Make(Options());
  std::vector<std::unique_ptr<Call>> calls;
  calls.push_back(std::make_unique<Call>("orders", "CREATE TABLE log(i INTEGER)", true));
  for (int i = 1; i <= 20; ++i) {
    calls.push_back(std::make_unique<Call>("orders", "INSERT INTO log VALUES (?)", false));
    calls.back()->params = {Value::Int(i)};
  }
  std::vector<int> order;
  for (size_t i = 0; i < calls.size(); ++i) {
    calls[i]->then = [&order, i](Call&) { order.push_back(static_cast<int>(i)); };
    ASSERT_TRUE(h->registry().Submit(*calls[i]).ok());
  }
  EXPECT_EQ(h->registry().GetTenantStats("orders")->state, TenantState::kOpening);
  h->RunUntil([&] { return order.size() == calls.size(); });
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_TRUE(calls[i]->result.ok()) << i << ": " << calls[i]->result;
    EXPECT_EQ(order[i], static_cast<int>(i));
  }
  Call sum("orders", "SELECT count(*), sum(i) FROM log", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(sum).ok());
  EXPECT_EQ(sum.rows, "20|210\n");
  EXPECT_EQ(h->registry().stats().opens, 1u);
}

TEST_P(RegistryTest, DeleteClosesAndRemovesEveryFile) {
  auto h = Make(Options());
  Call create("gone", "CREATE TABLE t(x)", true);
  ASSERT_TRUE(h->Do(create).ok());
  Call write("gone", "INSERT INTO t VALUES (1)", false);
  Call remove("gone", "", false);
  remove.action = TenantRequest::Action::kDelete;
  Call recreate("gone", "SELECT count(*) FROM sqlite_master", true, Request::Kind::kRead);
  // Submitted back to back: the write runs, then the delete, then a fresh database.
  ASSERT_TRUE(h->registry().Submit(write).ok());
  ASSERT_TRUE(h->registry().Submit(remove).ok());
  ASSERT_TRUE(h->registry().Submit(recreate).ok());
  h->RunUntil([&] { return write.done && remove.done && recreate.done; });
  EXPECT_TRUE(write.result.ok()) << write.result;
  EXPECT_TRUE(remove.result.ok()) << remove.result;
  ASSERT_TRUE(recreate.result.ok()) << recreate.result;
  EXPECT_EQ(recreate.rows, "0\n") << "the recreated tenant still had the old table";

  Call remove_again("gone", "", false);
  remove_again.action = TenantRequest::Action::kDelete;
  EXPECT_TRUE(h->Do(remove_again).ok());
  EXPECT_TRUE(dir_.Files().empty()) << absl::StrJoin(dir_.Files(), ",");
  EXPECT_EQ(h->Do(remove_again).code(), absl::StatusCode::kNotFound);
  Call read("gone", "SELECT 1", false, Request::Kind::kRead);
  EXPECT_EQ(h->Do(read).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(dir_.Files().empty());
  EXPECT_EQ(h->registry().stats().deletes, 2u);
}

TEST_P(RegistryTest, IdleTenantsScaleToZeroAndReopenOnDemand) {
  RegistryOptions options = Options();
  options.idle_timeout = absl::Milliseconds(20);
  const int fds_before = CountOpenFds();
  auto h = Make(options);
  const int fds_registry = CountOpenFds();
  constexpr int kTenants = 12;
  std::vector<std::string> names;
  for (int i = 0; i < kTenants; ++i) names.push_back(absl::StrCat("idle-", i));
  for (const std::string& name : names) {
    Call create(name, "CREATE TABLE t(v TEXT)", true);
    ASSERT_TRUE(h->Do(create).ok()) << create.result;
    Call insert(name, "INSERT INTO t VALUES (?)", false);
    insert.params = {Value::Text(name)};
    ASSERT_TRUE(h->Do(insert).ok()) << insert.result;
  }
  EXPECT_GT(h->registry().stats().open, 0u);
  EXPECT_GT(CountOpenFds(), fds_registry);
  // The registry's memory total, kept by the allocator as its tenants allocate (no walk), is
  // exactly the sum of what each open tenant holds.
  uint64_t sum = 0;
  for (const std::string& name : names) sum += h->registry().GetTenantStats(name)->memory_bytes;
  EXPECT_GT(sum, 0u);
  EXPECT_EQ(h->registry().stats().memory_bytes, sum);
  // The loop waits on its idle timer; nothing else is pending.
  h->RunUntil([&] { return h->registry().stats().open == 0; });
  const RegistryStats stats = h->registry().stats();
  EXPECT_EQ(stats.idle_closes, static_cast<uint64_t>(kTenants));
  EXPECT_EQ(stats.memory_leaks, 0u);
  EXPECT_EQ(CountOpenFds(), fds_registry) << "an idle-closed tenant left a descriptor";
  for (const std::string& name : names) {
    const absl::StatusOr<TenantStats> tenant = h->registry().GetTenantStats(name);
    ASSERT_TRUE(tenant.ok());
    EXPECT_EQ(tenant->state, TenantState::kClosed);
    EXPECT_EQ(tenant->memory_bytes, 0u);
  }
  // No accounting tenant of this registry is left registered.
  alloc::AllocationProfile profile;
  alloc::ExportSqliteMemoryProfile(&profile);
  const std::string text = profile.ToTable();
  EXPECT_FALSE(absl::StrContains(text, options.memory_name_prefix)) << text;

  Call read(names[3], "SELECT v FROM t", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(read).ok()) << read.result;
  EXPECT_EQ(read.rows, names[3] + "\n");
  EXPECT_EQ(h->registry().GetTenantStats(names[3])->opens, 2u);
  h.reset();
  EXPECT_EQ(CountOpenFds(), fds_before);
}

TEST_P(RegistryTest, FullOpenBudgetFailsFastWhenConfiguredAndChangesNothing) {
  RegistryOptions options = Options();
  options.open_max = 2;
  options.asleep_max = 0;
  options.when_full = WhenFull::kFail;
  auto h = Make(options);
  Call a("a", "CREATE TABLE t(x)", true);
  Call b("b", "CREATE TABLE t(x)", true);
  Call c("c", "CREATE TABLE t(x)", true);
  ASSERT_TRUE(h->registry().Submit(a).ok());
  ASSERT_TRUE(h->registry().Submit(b).ok());
  const absl::Status full = h->registry().Submit(c);  // a and b are opening: nothing to evict.
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_TRUE(absl::StrContains(full.message(), "2 of 2 databases open")) << full;
  h->RunUntil([&] { return a.done && b.done; });
  EXPECT_FALSE(c.done);
  EXPECT_FALSE(dir_.Exists("c.db"));
  EXPECT_EQ(h->registry().GetTenantStats("c").status().code(), absl::StatusCode::kNotFound);

  // Now a and b are idle; b is used again, a is not, so c evicts a (under LRU and SIEVE).
  Call use_b("b", "SELECT 1", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(use_b).ok()) << use_b.result;
  ASSERT_TRUE(h->Do(c).ok()) << c.result;
  const RegistryStats stats = h->registry().stats();
  EXPECT_EQ(stats.evictions, 1u);
  EXPECT_EQ(stats.open_high_water, 2u);
  EXPECT_EQ(h->registry().GetTenantStats("a")->state, TenantState::kClosed);
  EXPECT_EQ(h->registry().GetTenantStats("a")->evictions, 1u);
  EXPECT_EQ(h->registry().GetTenantStats("b")->state, TenantState::kIdle);
}

// SIEVE and LRU on the same steps (OpenAUsedTwiceBOnceThenC).
TEST_P(RegistryTest, EvictionKeepsATenantUsedAgainOverOneUsedOnce) {
  auto h = OpenAUsedTwiceBOnceThenC(Eviction::kSieve);
  EXPECT_EQ(h->registry().GetTenantStats("b")->evictions, 1u);
  EXPECT_EQ(h->registry().GetTenantStats("b")->state, TenantState::kClosed);
  EXPECT_EQ(h->registry().GetTenantStats("a")->state, TenantState::kIdle);
  EXPECT_EQ(h->registry().GetTenantStats("a")->opens, 1u);
}

// The same steps under Eviction::kLru (the benchmark's baseline) evict a, idle the longest.
TEST_P(RegistryTest, LruEvictionTakesTheTenantIdleTheLongest) {
  auto h = OpenAUsedTwiceBOnceThenC(Eviction::kLru);
  EXPECT_EQ(h->registry().GetTenantStats("a")->evictions, 1u);
  EXPECT_EQ(h->registry().GetTenantStats("b")->state, TenantState::kIdle);
}

TEST_P(RegistryTest, FullOpenBudgetWaitsInABoundedQueue) {
  RegistryOptions options = Options();
  options.open_max = 2;
  options.waiting_opens_max = 2;
  auto h = Make(options);
  std::vector<std::unique_ptr<Call>> calls;
  for (const char* name : {"w0", "w1", "w2", "w3"}) {
    calls.push_back(std::make_unique<Call>(name, "CREATE TABLE t(x)", true));
    ASSERT_TRUE(h->registry().Submit(*calls.back()).ok()) << name;
  }
  EXPECT_EQ(h->registry().stats().waiting, 2u);
  Call overflow("w4", "CREATE TABLE t(x)", true);
  const absl::Status full = h->registry().Submit(overflow);
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_TRUE(absl::StrContains(full.message(), "waiting_opens_max")) << full;
  h->RunUntil([&] {
    return std::all_of(calls.begin(), calls.end(), [](const auto& c) { return c->done; });
  });
  for (const auto& call : calls) EXPECT_TRUE(call->result.ok()) << call->result;
  const RegistryStats stats = h->registry().stats();
  EXPECT_EQ(stats.open_high_water, 2u);
  EXPECT_EQ(stats.sleeps, 2u);  // Evicted for the waiters, they sleep rather than close.
  EXPECT_EQ(stats.evictions, 0u);
  EXPECT_EQ(stats.slot_waits, 2u);
  EXPECT_FALSE(dir_.Exists("w4.db"));
}

TEST_P(RegistryTest, MemoryBudgetEvictsIdleTenants) {
  RegistryOptions options = Options();
  // Smaller than any open database: only one tenant may be open at a time (one always may).
  options.memory_bytes_max = 1;
  auto h = Make(options);
  std::vector<std::unique_ptr<Call>> calls;
  const std::vector<std::string> names = {"m0", "m1", "m2", "m3", "m4"};
  for (const std::string& name : names) {
    calls.push_back(std::make_unique<Call>(name, "CREATE TABLE t(x)", true));
    ASSERT_TRUE(h->registry().Submit(*calls.back()).ok());
  }
  h->RunUntil([&] {
    return std::all_of(calls.begin(), calls.end(), [](const auto& c) { return c->done; });
  });
  for (const auto& call : calls) EXPECT_TRUE(call->result.ok()) << call->result;
  h->RunUntil([&] { return h->registry().stats().open == 0; });
  const RegistryStats stats = h->registry().stats();
  EXPECT_EQ(stats.open_high_water, 1u);
  // Each tenant is over the budget on its own, so each is evicted as soon as it is idle.
  EXPECT_EQ(stats.evictions, 5u);
  EXPECT_EQ(stats.open, 0u);
  EXPECT_EQ(stats.memory_leaks, 0u);
}

TEST_P(RegistryTest, ShutdownFailsWaitersAndClosesEverything) {
  RegistryOptions options = Options();
  options.open_max = 1;
  const int fds_before = CountOpenFds();
  auto h = Make(options);
  Call first("s0", "CREATE TABLE t(x)", true);
  Call second("s1", "CREATE TABLE t(x)", true);
  ASSERT_TRUE(h->registry().Submit(first).ok());
  ASSERT_TRUE(h->registry().Submit(second).ok());  // Waits for the one slot.
  h.reset();                                       // Shuts down, then frees the loop.
  EXPECT_TRUE(first.result.ok()) << first.result;
  EXPECT_EQ(second.result.code(), absl::StatusCode::kUnavailable) << second.result;
  EXPECT_FALSE(dir_.Exists("s1.db"));
  EXPECT_EQ(CountOpenFds(), fds_before);
}

// More reads at once than the database has reader connections: the ones queued behind the
// busy readers must still run when no further Submit arrives to wake the database.
TEST_P(RegistryTest, MoreConcurrentReadsThanReaders) {
  auto h = Make(Options());
  Call create("reads", "CREATE TABLE t(x)", true);
  ASSERT_TRUE(h->Do(create).ok());
  std::vector<std::unique_ptr<Call>> reads;
  for (int i = 0; i < 8; ++i) {
    reads.push_back(
        std::make_unique<Call>("reads", "SELECT count(*) FROM t", false, Request::Kind::kRead));
    ASSERT_TRUE(h->registry().Submit(*reads.back()).ok());
  }
  EXPECT_TRUE(h->RunUntil([&] {
    return std::all_of(reads.begin(), reads.end(), [](const auto& r) { return r->done; });
  }));
  for (const auto& r : reads) EXPECT_EQ(r->rows, "0\n") << r->result;
}

// ---- Trimming idle tenants --------------------------------------------------------------------

// A tenant idle for idle_trim_after gives back its cached pages and stays open: its memory falls,
// its next read is answered from the same open database with the same data.
TEST_P(RegistryTest, AnIdleTenantGivesBackItsPageCachesAndStaysOpen) {
  RegistryOptions options = Options();
  options.idle_timeout = absl::Hours(1);
  options.idle_trim_after = absl::Milliseconds(1);
  auto h = Make(options);
  Call create("big", "CREATE TABLE t(v TEXT)", true);
  ASSERT_TRUE(h->Do(create).ok()) << create.result;
  Call fill("big",
            "WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 2000) "
            "INSERT INTO t(v) SELECT printf('%0200d', x) FROM s",
            false);
  ASSERT_TRUE(h->Do(fill).ok()) << fill.result;
  Call scan("big", "SELECT count(*), sum(length(v)) FROM t", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(scan).ok()) << scan.result;
  EXPECT_EQ(scan.rows, "2000|400000\n");
  const uint64_t cached = h->registry().GetTenantStats("big")->memory_bytes;
  ASSERT_TRUE(h->RunUntil([&] { return h->registry().stats().trims > 0; }));
  const TenantStats trimmed = *h->registry().GetTenantStats("big");
  EXPECT_EQ(trimmed.trims, 1u);
  EXPECT_EQ(trimmed.state, TenantState::kIdle);
  EXPECT_LT(trimmed.memory_bytes + 100 * 1024, cached) << "the trim freed under 100 KiB";
  ASSERT_TRUE(h->Do(scan).ok()) << scan.result;
  EXPECT_EQ(scan.rows, "2000|400000\n");
  EXPECT_EQ(h->registry().GetTenantStats("big")->opens, 1u);
}

// Once every idle tenant is trimmed the timer waits for the oldest one's close, far off; a tenant
// that goes idle later must still be trimmed on time, so the timer is moved earlier for it.
TEST_P(RegistryTest, ATrimDueBeforeTheArmedCloseMovesTheTimerEarlier) {
  RegistryOptions options = Options();
  options.idle_timeout = absl::Seconds(10);  // Only reached if the timer is not moved.
  options.idle_trim_after = absl::Milliseconds(1);
  auto h = Make(options);
  Call a("a", "CREATE TABLE t(v)", true);
  ASSERT_TRUE(h->Do(a).ok()) << a.result;
  ASSERT_TRUE(h->RunUntil([&] { return h->registry().stats().trims == 1; }));
  Call b("b", "CREATE TABLE t(v)", true);
  ASSERT_TRUE(h->Do(b).ok()) << b.result;
  ASSERT_TRUE(h->RunUntil(
      [&] { return h->registry().stats().trims == 2 || h->registry().stats().idle_closes > 0; }));
  EXPECT_EQ(h->registry().stats().trims, 2u);
  EXPECT_EQ(h->registry().stats().idle_closes, 0u) << "b was trimmed only when a closed";
  EXPECT_EQ(h->registry().GetTenantStats("b")->trims, 1u);
}

// Tenants that went idle together come due together. Without a tick budget one sweep trims
// them all in one callback; with a budget of 1 ns each sweep trims one (the first always runs)
// and is due again at once, so the rest are trimmed one per tick, each once.
TEST_P(RegistryTest, ASweepStopsAtTheTickBudgetAndTrimsTheRestInLaterTicks) {
  constexpr uint64_t kTenants = 4;
  for (const absl::Duration budget : {absl::ZeroDuration(), absl::Nanoseconds(1)}) {
    SCOPED_TRACE(absl::StrCat("tick budget ", absl::FormatDuration(budget)));
    const std::string prefix = budget == absl::ZeroDuration() ? "unbounded" : "bounded";
    RegistryOptions options = Options();
    // Long enough that the four creations end before the first trim is due, even sanitized.
    options.idle_trim_after = absl::Milliseconds(200);
    loop::LoopOptions loop_options;
    loop_options.tick_budget = budget;
    RegistryHarness h(GetParam().make(), options, std::move(loop_options));
    ASSERT_TRUE(h.create_status().ok()) << h.create_status();
    for (uint64_t i = 0; i < kTenants; ++i) {
      const std::string name = absl::StrCat(prefix, i);  // Call keeps a view of it.
      Call create(name, "CREATE TABLE t(v)", true);
      ASSERT_TRUE(h.Do(create).ok()) << create.result;
    }
    ASSERT_EQ(h.registry().stats().trims, 0u) << "a trim came before every tenant was idle";
    // Every trim is due once the clock has passed the last one's deadline; the loop is not run
    // meanwhile, so the sweeper finds them all due when it fires.
    const int64_t all_due_ns =
        h.loop().backend().NowNs() + absl::ToInt64Nanoseconds(options.idle_trim_after);
    while (h.loop().backend().NowNs() < all_due_ns) {
    }
    uint64_t most_in_one_tick = 0;
    while (h.registry().stats().trims < kTenants) {
      const uint64_t before = h.registry().stats().trims;
      ASSERT_TRUE(h.loop().Run(loop::RunMode::kOnce).ok());
      most_in_one_tick = std::max(most_in_one_tick, h.registry().stats().trims - before);
    }
    EXPECT_EQ(most_in_one_tick, budget == absl::ZeroDuration() ? kTenants : 1u);
    for (uint64_t i = 0; i < kTenants; ++i) {
      EXPECT_EQ(h.registry().GetTenantStats(absl::StrCat(prefix, i))->trims, 1u);
    }
  }
}

// TrimIdleTenants trims at once, even with trimming on a timer turned off, each tenant once.
TEST_P(RegistryTest, TrimIdleTenantsTrimsEachIdleTenantOnce) {
  RegistryOptions options = Options();
  options.idle_trim_after = absl::InfiniteDuration();
  auto h = Make(options);
  for (const char* name : {"t0", "t1", "t2"}) {
    Call create(name, "CREATE TABLE t(v)", true);
    ASSERT_TRUE(h->Do(create).ok()) << create.result;
  }
  EXPECT_EQ(h->registry().TrimIdleTenants(), 3u);
  EXPECT_EQ(h->registry().TrimIdleTenants(), 0u);
  EXPECT_EQ(h->registry().stats().trims, 3u);
  Call use("t1", "SELECT 1", false, Request::Kind::kRead);
  ASSERT_TRUE(h->Do(use).ok()) << use.result;
  EXPECT_EQ(h->registry().TrimIdleTenants(), 1u);  // t1 went idle again.
}

TEST_P(RegistryTest, ANegativeTrimDelayIsRefused) {
  RegistryOptions options = Options();
  options.idle_trim_after = absl::Milliseconds(-1);
  RegistryHarness refused(GetParam().make(), options);
  EXPECT_EQ(refused.create_status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(refused.create_status().message(), "idle_trim_after"))
      << refused.create_status();
}

INSTANTIATE_TEST_SUITE_P(Backends, RegistryTest, ::testing::ValuesIn(testing::RealBackends()),
                         testing::RealBackendName);

}  // namespace
}  // namespace sqloop::db
