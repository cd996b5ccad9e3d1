#include "sqloop/db/shards.h"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"

namespace sqloop::db {
namespace {

constexpr uint64_t kFnvOffsetBasis = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

}  // namespace

uint64_t TenantHash(absl::string_view name) {
  uint64_t hash = kFnvOffsetBasis;
  for (const char c : name) {
    hash ^= static_cast<unsigned char>(c);
    hash *= kFnvPrime;
  }
  return hash;
}

// Lamping & Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014), with their
// linear congruential step and the same double arithmetic (exact: 2^31 and the quotient of two
// doubles are computed identically by every IEEE-754 implementation).
uint32_t JumpConsistentHash(uint64_t key, uint32_t buckets) {
  SQLOOP_CHECK(buckets > 0, "JumpConsistentHash: there must be at least one bucket");
  int64_t b = -1;
  int64_t j = 0;
  while (j < static_cast<int64_t>(buckets)) {
    b = j;
    key = key * 2862933555777941757ull + 1;
    j = static_cast<int64_t>(static_cast<double>(b + 1) * (static_cast<double>(int64_t{1} << 31) /
                                                           static_cast<double>((key >> 33) + 1)));
  }
  return static_cast<uint32_t>(b);
}

uint32_t ShardOf(absl::string_view name, uint32_t shards) {
  return JumpConsistentHash(TenantHash(name), shards);
}

// ---- One shard --------------------------------------------------------------------------------

struct Shards::Shard {
  Shards* owner = nullptr;
  uint32_t index = 0;
  loop::LoopOptions loop_options;
  VfsOptions vfs_options;
  RegistryOptions registry_options;
  std::thread thread;

  // Start-up handshake with Start(): the only lock, used once per shard.
  std::mutex mu;
  std::condition_variable cv;
  bool started = false;
  absl::Status start_status;
  // Set by Stop() once its Post of `stop` returned. Post wakes the loop after it published the
  // completion, so the shard may run `stop` and finish before Post is done with the loop;
  // the shard waits for this before it destroys its loop. (ThreadSanitizer found it.)
  bool stop_posted = false;

  // Created and used on the shard's thread. `loop` is published to other threads by the
  // handshake above and only ever used by them through Post().
  std::unique_ptr<loop::Loop> loop;
  std::unique_ptr<Vfs> vfs;
  std::unique_ptr<Registry> registry;
  loop::Completion stop;
  bool stopped = false;  // Shard thread only.
};

namespace {

// The shard whose thread this is, for the checks that refuse blocking calls from a shard.
thread_local const void* current_shard = nullptr;

struct StatsProbe {
  loop::Completion c;
  Registry* registry = nullptr;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  RegistryStats stats;
};

}  // namespace

void Shards::ThreadMain(Shard* shard) {
  current_shard = shard;
  absl::Status status;
  absl::StatusOr<std::unique_ptr<loop::Loop>> loop = loop::Loop::Create(shard->loop_options);
  if (loop.ok()) {
    shard->loop = *std::move(loop);
    absl::StatusOr<std::unique_ptr<Vfs>> vfs = Vfs::Create(*shard->loop, shard->vfs_options);
    if (vfs.ok()) {
      shard->vfs = *std::move(vfs);
      absl::StatusOr<std::unique_ptr<Registry>> registry =
          Registry::Create(*shard->loop, *shard->vfs, shard->registry_options);
      if (registry.ok()) {
        shard->registry = *std::move(registry);
      } else {
        status = registry.status();
      }
    } else {
      status = vfs.status();
    }
  } else {
    status = loop.status();
  }
  if (!status.ok()) {  // Before the handshake: Stop() reads `loop` once Start() returned.
    shard->vfs.reset();
    shard->loop.reset();
  }
  {
    std::lock_guard<std::mutex> lock(shard->mu);
    shard->started = true;
    shard->start_status = status;
  }
  shard->cv.notify_all();
  if (!status.ok()) return;
  while (!shard->stopped) {
    const absl::Status run = shard->loop->Run(loop::RunMode::kOnce);
    SQLOOP_CHECK(run.ok(), "Shards: a shard's loop failed (its backend reported an error)");
  }
  shard->registry.reset();
  shard->vfs.reset();
  SQLOOP_CHECK(shard->loop->Run(loop::RunMode::kUntilDone).ok(), "Shards: final drain failed");
  {
    std::unique_lock<std::mutex> lock(shard->mu);
    shard->cv.wait(lock, [shard] { return shard->stop_posted; });
  }
  shard->loop.reset();
}

absl::StatusOr<std::unique_ptr<Shards>> Shards::Start(const ShardsOptions& options) {
  uint32_t n = options.shards;
  if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
  if (n > kShardsMax) {
    return absl::InvalidArgumentError(
        absl::StrCat("ShardsOptions::shards is ", n, "; the limit is ", kShardsMax));
  }
  if (options.in_flight_max == 0) {
    return absl::InvalidArgumentError(
        "ShardsOptions::in_flight_max is 0, which would refuse every request; leave it at "
        "kShardsInFlightMaxDefault or set the most requests you want queued at once");
  }
  RegistryOptions per_shard = options.registry;
  if (per_shard.open_max == 0) {
    const uint32_t total = DescriptorBoundOpenMax(per_shard.descriptors_reserved);
    if (total < n) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "RLIMIT_NOFILE allows ", total, " open databases, fewer than one per shard (", n,
          "); raise it (ulimit -n) or use fewer shards"));
    }
    per_shard.open_max = total / n;
  } else if (per_shard.open_max < n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RegistryOptions::open_max is ", per_shard.open_max, ", below the shard count (", n,
        "): every shard needs at least one open database; raise open_max or use fewer shards"));
  } else {
    per_shard.open_max /= n;
  }
  if (per_shard.memory_bytes_max > 0) {
    per_shard.memory_bytes_max = std::max<uint64_t>(1, per_shard.memory_bytes_max / n);
  }
  // Each shard's Registry::Create grows the descriptor table for its own share; the shards'
  // descriptors come from one table, so it is grown for all of them here, before any serves.
  if (absl::Status table =
          ReserveDescriptorTable(uint64_t{n} * per_shard.open_max * kDescriptorsPerDatabase +
                                 per_shard.descriptors_reserved);
      !table.ok()) {
    return table;
  }
  std::unique_ptr<Shards> shards(new Shards());
  shards->in_flight_max_ = options.in_flight_max;
  for (uint32_t i = 0; i < n; ++i) {
    auto shard = std::make_unique<Shard>();
    shard->owner = shards.get();
    shard->index = i;
    shard->loop_options = options.loop;
    shard->vfs_options = options.vfs;
    shard->registry_options = per_shard;
    const std::string& prefix = options.registry.memory_name_prefix;
    shard->registry_options.memory_name_prefix = absl::StrCat(
        prefix.empty() ? absl::StrCat(options.registry.directory, "/") : prefix, "shard", i, "/");
    shards->shards_.push_back(std::move(shard));
  }
  absl::Status first_error;
  for (auto& shard : shards->shards_) {
    shard->thread = std::thread(&Shards::ThreadMain, shard.get());
    std::unique_lock<std::mutex> lock(shard->mu);
    shard->cv.wait(lock, [&] { return shard->started; });
    if (!shard->start_status.ok() && first_error.ok()) {
      first_error =
          absl::Status(shard->start_status.code(),
                       absl::StrCat("shard ", shard->index, ": ", shard->start_status.message()));
    }
  }
  if (!first_error.ok()) {
    shards->Stop();
    return first_error;
  }
  return shards;
}

Shards::~Shards() {
  if (!stopped_) Stop();
}

// ---- Requests -------------------------------------------------------------------------------

absl::Status Shards::Submit(ShardRequest& request) {
  SQLOOP_CHECK(request.on_done != nullptr, "Shards::Submit: on_done is not set");
  if (absl::Status valid = ValidateTenantName(request.tenant); !valid.ok()) return valid;
  if (!Enter()) {
    return absl::FailedPreconditionError(
        "Shards is stopping (Stop() has begun): nothing was submitted; submit everything "
        "before stopping");
  }
  const absl::Cleanup leave = [this] { Leave(); };
  if (!Admit()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "Shards: ", in_flight_max_,
        " requests are already in flight (ShardsOptions::in_flight_max); "
        "nothing was submitted: retry after one of your requests completes, shed this one, or "
        "raise in_flight_max"));
  }
  submitted_.fetch_add(1, std::memory_order_relaxed);
  Shard& shard = *shards_[ShardOf(request.tenant)];
  request.shard_ = &shard;
  request.reply_status_ = absl::OkStatus();
  request.tenant_layer_done_ = &Shards::OnTenantDone;
  request.hop_.callback = &Shards::OnArrive;
  request.hop_.user_data = &request;
  request.hop_.name = "shards arrive";
  shard.loop->Post(request.hop_);
  return absl::OkStatus();
}

// Marks a call that uses the shards' loops, unless Stop() has begun. Sequentially consistent,
// as Stop's store and load are: either Stop sees this call entered and waits for it, or the
// call sees stopping_ and leaves at once.
bool Shards::Enter() {
  entered_.fetch_add(1, std::memory_order_seq_cst);
  if (!stopping_.load(std::memory_order_seq_cst)) return true;
  Leave();
  return false;
}

void Shards::Leave() { entered_.fetch_sub(1, std::memory_order_release); }

bool Shards::OnShardThread() { return current_shard != nullptr; }

// Takes an in-flight slot unless all in_flight_max are taken. A compare-and-swap rather than
// fetch_add-then-undo, so a refused Submit never makes a concurrent one see a full queue.
bool Shards::Admit() {
  uint32_t in_flight = in_flight_.load(std::memory_order_relaxed);
  do {
    if (in_flight >= in_flight_max_) {
      refused_full_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  } while (!in_flight_.compare_exchange_weak(in_flight, in_flight + 1, std::memory_order_relaxed));
  return true;
}

loop::Action Shards::OnArrive(loop::Loop& /*unused*/, loop::Completion& c) {
  auto& request = *static_cast<ShardRequest*>(c.user_data);
  auto& shard = *static_cast<Shard*>(request.shard_);
  if (absl::Status admitted = shard.registry->Submit(request); !admitted.ok()) {
    Reply(request, std::move(admitted));
  }
  return loop::Action::kDisarm;
}

void Shards::OnTenantDone(TenantRequest& request, absl::Status status) {
  Reply(static_cast<ShardRequest&>(request), std::move(status));
}

// `hop_` is idle here (its arrival callback returned long ago), so it makes the trip back.
// The slot is given back first: once on_done runs (or is posted) the caller may free the
// request, submit again, or Stop() and destroy the Shards.
void Shards::Reply(ShardRequest& request, absl::Status status) {
  Shards& owner = *static_cast<Shard*>(request.shard_)->owner;
  const uint32_t before = owner.in_flight_.fetch_sub(1, std::memory_order_relaxed);
  SQLOOP_CHECK(before > 0, "Shards::Reply: more replies than admitted requests");
  if (request.reply_loop == nullptr) {
    request.on_done(request, std::move(status));
    return;
  }
  request.reply_status_ = std::move(status);
  request.hop_.callback = &Shards::OnReply;
  request.hop_.name = "shards reply";
  request.reply_loop->Post(request.hop_);
}

loop::Action Shards::OnReply(loop::Loop& /*unused*/, loop::Completion& c) {
  auto& request = *static_cast<ShardRequest*>(c.user_data);
  request.on_done(request, std::move(request.reply_status_));
  return loop::Action::kDisarm;
}

// ---- Stop and statistics --------------------------------------------------------------------

void Shards::Stop() {
  SQLOOP_CHECK(current_shard == nullptr,
               "Shards::Stop from a shard's own thread would wait "
               "for itself; call it from another thread");
  if (stopped_) return;
  stopping_.store(true, std::memory_order_seq_cst);
  // A Submit or Stats past its check still posts to the loops; each takes microseconds (Stats:
  // one round trip per shard), so this wait is short.
  while (entered_.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
  for (auto& shard : shards_) {
    if (shard->loop == nullptr) continue;  // Failed to start; its thread already returned.
    shard->stop.user_data = shard.get();
    shard->stop.name = "shards stop";
    shard->stop.callback = [](loop::Loop&, loop::Completion& c) {
      auto& s = *static_cast<Shard*>(c.user_data);
      // The callback's signature is Registry::Callback's: the status comes by value.
      // NOLINTNEXTLINE(performance-unnecessary-value-param)
      auto stopped = [](void* arg, absl::Status /*status*/) {
        static_cast<Shard*>(arg)->stopped = true;
      };
      s.registry->Shutdown(stopped, &s);
      return loop::Action::kDisarm;
    };
    shard->loop->Post(shard->stop);
    std::lock_guard<std::mutex> lock(shard->mu);
    shard->stop_posted = true;
    shard->cv.notify_all();
  }
  for (auto& shard : shards_) {
    if (shard->thread.joinable()) shard->thread.join();
  }
  stopped_ = true;
}

ShardsAdmissionStats Shards::admission_stats() const {
  ShardsAdmissionStats stats;
  stats.submitted = submitted_.load(std::memory_order_relaxed);
  stats.refused_full = refused_full_.load(std::memory_order_relaxed);
  stats.in_flight = in_flight_.load(std::memory_order_relaxed);
  stats.in_flight_max = in_flight_max_;
  return stats;
}

std::vector<RegistryStats> Shards::Stats() {
  SQLOOP_CHECK(current_shard == nullptr,
               "Shards::Stats from a shard's own thread would wait "
               "for itself");
  std::vector<RegistryStats> all;
  if (!Enter()) return all;
  const absl::Cleanup leave = [this] { Leave(); };
  for (auto& shard : shards_) {
    StatsProbe probe;
    probe.registry = shard->registry.get();
    probe.c.user_data = &probe;
    probe.c.name = "shards stats";
    probe.c.callback = [](loop::Loop&, loop::Completion& c) {
      auto& p = *static_cast<StatsProbe*>(c.user_data);
      RegistryStats stats = p.registry->stats();
      // Notified under the lock: the waiter frees `p` as soon as it can take the lock.
      std::lock_guard<std::mutex> lock(p.mu);
      p.stats = stats;
      p.done = true;
      p.cv.notify_all();
      return loop::Action::kDisarm;
    };
    shard->loop->Post(probe.c);
    std::unique_lock<std::mutex> lock(probe.mu);
    probe.cv.wait(lock, [&] { return probe.done; });
    all.push_back(probe.stats);
  }
  return all;
}

}  // namespace sqloop::db
