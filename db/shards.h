// db/shards.h
// -----------------------------------------------------------------------------
//
// `Shards` runs N loops on N threads, each with its own ring, its own Vfs and its own
// `Registry` (db/registry.h), and routes every tenant to one of them by a stable hash of its
// name. It is how sqloop uses more than one core: the loops share nothing, so each stays
// single-threaded and deterministic, and the only cross-thread step is Loop::Post.
//
// A request travels like this, without a lock and without an allocation:
//
//   caller thread                      shard thread (ShardOf(tenant))
//   Submit(r) --Post(r.hop_)---------> OnArrive: Registry::Submit(r)
//                                        ... the tenant's database runs it ...
//   on_done(r, s) <--Post(r.hop_)----- OnTenantDone: Reply(r, s)
//   (on r.reply_loop's thread; or on the shard thread when reply_loop is null)
//
// The `ShardRequest` is caller-owned and carries its own `loop::Completion`, which makes both
// hops. Row callbacks (`on_row`) run on the shard thread: copy what you need into memory the
// request owns; it is yours to read once on_done ran (Post orders the writes before it).
//
// Backpressure: at most `ShardsOptions::in_flight_max` requests are in flight at once, from
// Submit until their reply is on its way. Submit beyond it returns ResourceExhausted at once and
// posts nothing; it never blocks, so a host thread decides itself whether to back off, shed the
// request or wait for one of its own. `admission_stats()` counts the refusals.
//
// Host threads that just want the answer use `ShardCall` (db/shard_call.h): it submits a
// request, collects its rows into memory it owns and lets the thread Wait() for the status.
//
// Tenant placement: ShardOf(name, n) = JumpConsistentHash(TenantHash(name), n), where
// TenantHash is 64-bit FNV-1a over the name's bytes. Both are written out here, so a tenant
// lands on the same shard in every run, build and machine (std::hash and absl::Hash are
// allowed to change, and absl::Hash is salted per process). Jump consistent hashing moves only
// 1/(n+1) of the tenants when a shard is added, and each tenant's files live in the one
// shared directory, so a restart with another shard count needs no data movement at all.
//
// Example:
//
//   sqloop::db::ShardsOptions options;
//   options.shards = 2;
//   options.registry.directory = "/var/lib/app/tenants";
//   auto shards = sqloop::db::Shards::Start(std::move(options));
//   if (!shards.ok()) return shards.status();
//
//   sqloop::db::ShardRequest request;     // caller-owned, lives until on_done
//   request.tenant = "acme";
//   request.kind = sqloop::db::Request::Kind::kRead;
//   request.sql = "SELECT count(*) FROM orders";
//   request.on_done = [](sqloop::db::ShardRequest& r, absl::Status status) { ... };
//   request.reply_loop = my_loop;          // or nullptr: on_done runs on the shard thread
//   absl::Status admitted = (*shards)->Submit(request);
//   ...
//   (*shards)->Stop();                      // closes every tenant, joins the threads
#ifndef SQLOOP_DB_SHARDS_H_
#define SQLOOP_DB_SHARDS_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "sqloop/db/registry.h"
#include "sqloop/db/vfs.h"
#include "sqloop/loop/loop.h"

namespace sqloop::db {

// 64-bit FNV-1a of `name` (offset basis 14695981039346656037, prime 1099511628211). Fixed
// forever: tests pin its values.
[[nodiscard]] uint64_t TenantHash(absl::string_view name);

// Lamping and Veach's jump consistent hash: maps `key` to [0, buckets) so that growing
// `buckets` by one moves only 1/(buckets+1) of the keys. Fixed forever (pinned by tests).
[[nodiscard]] uint32_t JumpConsistentHash(uint64_t key, uint32_t buckets);

// The shard of a tenant among `shards`: JumpConsistentHash(TenantHash(name), shards).
[[nodiscard]] uint32_t ShardOf(absl::string_view name, uint32_t shards);

// The most shards: one loop per core, and hosts this library targets have far fewer cores.
inline constexpr uint32_t kShardsMax = 256;

// Requests in flight through Shards at once by default. Each is caller-owned, so the bound is
// not about Shards' memory but about latency: a shard runs one writer per tenant and a few
// readers, so a few thousand queued requests already keep every core busy, and a longer queue
// only makes each answer later. 4096 matches the registry's waiting_opens_max.
inline constexpr uint32_t kShardsInFlightMaxDefault = 4096;

// A TenantRequest that can be submitted from any thread: fill it as a TenantRequest (tenant,
// action, create_if_missing and the Request's fields), plus its own `on_done`, which receives
// the ShardRequest, and, optionally, `reply_loop`.
//
// The TenantRequest is a private base, as the Request is one of TenantRequest, so there is
// exactly one completion callback to set; every other public member is re-exported. Shards
// finishes the TenantRequest through its private hook and then calls on_done. A row callback
// receives the Request: `ShardRequest::Of(request)` is the ShardRequest around it.
struct ShardRequest : private TenantRequest {
  // The base names, public again (see TenantRequest's `using Request`).
  using Request = ::sqloop::db::Request;
  using TenantRequest = ::sqloop::db::TenantRequest;

  using DoneCallback = void (*)(ShardRequest& request, absl::Status status);

  // The TenantRequest's public members (see db/registry.h and db/request.h for each).
  using TenantRequest::Action;
  using TenantRequest::action;
  using TenantRequest::batch;
  using TenantRequest::batch_index;
  using TenantRequest::Cancel;
  using TenantRequest::cancel_requested;
  using TenantRequest::changes;
  using TenantRequest::client;
  using TenantRequest::create_if_missing;
  using TenantRequest::deadline_ns;
  using TenantRequest::DiscardCallback;
  using TenantRequest::epoch;
  using TenantRequest::Kind;
  using TenantRequest::kind;
  using TenantRequest::last_insert_rowid;
  using TenantRequest::on_row;
  using TenantRequest::on_rows_discarded;
  using TenantRequest::params;
  using TenantRequest::RowCallback;
  using TenantRequest::sql;
  using TenantRequest::State;
  using TenantRequest::state;
  using TenantRequest::tenant;
  using TenantRequest::user_data;
  using TenantRequest::vm_steps_max;

  // The ShardRequest whose Request `request` is: in on_row and on_rows_discarded of a
  // ShardRequest, that is the request the caller submitted. `request` must be such a Request.
  [[nodiscard]] static ShardRequest& Of(Request& request) {
    return static_cast<ShardRequest&>(TenantRequest::Of(request));
  }

  // ---- Filled by the caller -----------------------------------------------------------------
  // Where on_done runs: Post()ed to this loop (the caller's own), or, when null, called on the
  // shard's thread (then on_done must be thread-safe: set an atomic, signal a condition).
  // Keep a reply_loop alive until Stop() returned: Loop::Post wakes the loop just after it
  // published the reply, so the shard thread may still be inside Post when on_done ran.
  loop::Loop* reply_loop = nullptr;
  // Required: the request is done (or failed, or was refused by its shard's registry) with this
  // status; runs exactly once per admitted Submit, where reply_loop says. Set only by the
  // caller. The request's results are valid in it (Post orders the shard's writes before it).
  DoneCallback on_done = nullptr;

 private:
  friend class Shards;

  // ---- Shards' bookkeeping --------------------------------------------------------------------
  loop::Completion hop_;  // Posted to the shard, then back to reply_loop.
  void* shard_ = nullptr;
  absl::Status reply_status_;  // The outcome, while the reply is posted to reply_loop.
};

struct ShardsOptions {
  // Loops (threads). 0: one per hardware thread. At most kShardsMax.
  uint32_t shards = 0;
  loop::LoopOptions loop;
  VfsOptions vfs;
  // Every shard's registry gets these, except: memory_name_prefix becomes
  // "<prefix>shard<i>/" (with an empty prefix, "<directory>/shard<i>/"), and open_max (derived
  // from RLIMIT_NOFILE when 0) and memory_bytes_max are divided evenly between the shards, so
  // the process as a whole keeps the budgets; an open_max below the shard count is refused.
  RegistryOptions registry;
  // The most requests in flight (submitted, reply not yet sent) over all shards; Submit beyond
  // it is refused with ResourceExhausted. Must be > 0.
  uint32_t in_flight_max = kShardsInFlightMaxDefault;
};

// Admission counters of Submit; every field is read with a relaxed atomic load, so a snapshot
// taken while other threads submit is only approximately consistent across fields.
struct ShardsAdmissionStats {
  uint64_t submitted = 0;      // Handed to a shard (each gets exactly one reply).
  uint64_t refused_full = 0;   // Refused because in_flight_max requests were in flight.
  uint32_t in_flight = 0;      // Submitted and not yet replied to, now.
  uint32_t in_flight_max = 0;  // ShardsOptions::in_flight_max.
};

class Shards {
 public:
  // Starts the threads; each creates its loop, Vfs and Registry on itself. Fails (and stops
  // what started) if any of them fails, with that shard's error.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Shards>> Start(const ShardsOptions& options);
  // Stop()s if that was not done.
  ~Shards();
  Shards(const Shards&) = delete;
  Shards& operator=(const Shards&) = delete;

  // Thread-safe and never blocks. Validates the name (InvalidArgument, nothing posted), refuses
  // the request when in_flight_max requests are in flight (ResourceExhausted, nothing posted)
  // or once Stop() has begun (FailedPrecondition, nothing posted), then hands `request` to its
  // tenant's shard. Every other outcome, including the registry refusing it, arrives through
  // on_done, exactly once.
  [[nodiscard]] absl::Status Submit(ShardRequest& request);

  // Shuts every registry down (admitted requests finish, tenants close) and joins the threads.
  // Call it from a thread that is not a shard. A Submit or Stats racing it either finishes
  // before the shards stop or is refused: Stop waits for those already past their check.
  void Stop();

  // Blocks until every shard reported its registry's statistics; not from a shard thread.
  // Empty once Stop() has begun (a monitoring thread may poll it through a shutdown).
  [[nodiscard]] std::vector<RegistryStats> Stats();

  // Whether the calling thread is a shard's (of any Shards): the calls that wait for a shard
  // (Stop, Stats, ShardCall::Wait) refuse to run there, where they would wait for themselves.
  [[nodiscard]] static bool OnShardThread();
  // Thread-safe, never blocks: Submit's admission counters.
  [[nodiscard]] ShardsAdmissionStats admission_stats() const;

  [[nodiscard]] uint32_t size() const { return static_cast<uint32_t>(shards_.size()); }
  [[nodiscard]] uint32_t ShardOf(absl::string_view tenant) const {
    return db::ShardOf(tenant, size());
  }

 private:
  struct Shard;

  Shards() = default;
  static void ThreadMain(Shard* shard);
  static loop::Action OnArrive(loop::Loop& loop, loop::Completion& c);
  static loop::Action OnReply(loop::Loop& loop, loop::Completion& c);
  static void OnTenantDone(TenantRequest& request, absl::Status status);
  static void Reply(ShardRequest& request, absl::Status status);

  [[nodiscard]] bool Admit();
  [[nodiscard]] bool Enter();
  void Leave();

  std::vector<std::unique_ptr<Shard>> shards_;
  uint32_t in_flight_max_ = kShardsInFlightMaxDefault;
  // Admission: in_flight_ goes up in Admit (a compare-and-swap that never passes the bound)
  // and down in Reply, on the shard thread, before on_done can free the request.
  std::atomic<uint32_t> in_flight_{0};
  std::atomic<uint64_t> submitted_{0};
  std::atomic<uint64_t> refused_full_{0};
  std::atomic<bool> stopping_{false};
  // Submit and Stats calls past their stopping_ check and still using a shard's loop: Stop
  // waits for none to be left before it stops the shards (Enter, Leave).
  std::atomic<uint32_t> entered_{0};
  bool stopped_ = false;
};

}  // namespace sqloop::db

#endif  // SQLOOP_DB_SHARDS_H_
