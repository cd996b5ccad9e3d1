#include "sqloop/db/runtime.h"

#include <sys/stat.h>

#include <cerrno>
#include <utility>

#include "absl/strings/str_cat.h"
#include "sqloop/alloc/check.h"
#include "sqloop/alloc/sqlite_memory.h"
#include "sqloop/io/errno_status.h"

namespace sqloop::db {

void Result::Add(const Row& row) {
  if (rows.empty() && columns.empty()) {
    for (int i = 0; i < row.size(); ++i) columns.emplace_back(row.ColumnName(i));
  }
  std::vector<Value>& values = rows.emplace_back();
  values.reserve(static_cast<size_t>(row.size()));
  for (int i = 0; i < row.size(); ++i) {
    Value value = row.Get(i);
    if (value.type == Value::Type::kText || value.type == Value::Type::kBlob) {
      value.bytes = bytes_.emplace_back(value.bytes);
    }
    values.push_back(value);
  }
}

void Result::Clear() {
  rows.clear();
  bytes_.clear();
}

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(RuntimeOptions options) {
  if (options.directory.empty()) {
    return absl::InvalidArgumentError(
        "RuntimeOptions::directory is empty: say where the "
        "databases live");
  }
  if (absl::Status memory = alloc::InstallSqliteMemory(); !memory.ok()) return memory;
  // One level, as mkdir(1) without -p: a missing parent is more likely a typo than a wish.
  if (mkdir(options.directory.c_str(), 0755) != 0 && errno != EEXIST) {
    return io::ErrnoStatus(absl::StatusCode::kFailedPrecondition, errno,
                           absl::StrCat("cannot create the directory ", options.directory));
  }
  std::unique_ptr<Runtime> runtime(new Runtime());
  runtime->directory_ = options.directory;
  absl::StatusOr<std::unique_ptr<loop::Loop>> loop = loop::Loop::Create(options.loop);
  if (!loop.ok()) return loop.status();
  runtime->loop_ = *std::move(loop);
  absl::StatusOr<std::unique_ptr<Vfs>> vfs = Vfs::Create(*runtime->loop_, options.vfs);
  if (!vfs.ok()) return vfs.status();
  runtime->vfs_ = *std::move(vfs);
  options.registry.directory = options.directory;
  absl::StatusOr<std::unique_ptr<Registry>> registry =
      Registry::Create(*runtime->loop_, *runtime->vfs_, std::move(options.registry));
  if (!registry.ok()) return registry.status();
  runtime->registry_ = *std::move(registry);
  return runtime;
}

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(std::string directory) {
  RuntimeOptions options;
  options.directory = std::move(directory);
  return Create(std::move(options));
}

Runtime::~Runtime() {
  if (registry_ == nullptr) return;  // Create failed midway: nothing was opened.
  const absl::Status status = Shutdown();
  SQLOOP_CHECK(status.ok(), "Runtime: shutdown failed; call Shutdown() and handle its error");
}

// Marks the calling thread as the one inside the runtime for the length of a call; a call on
// the same thread nested in it (Submit from a callback that Run runs) is its own. A call from
// a second thread meanwhile is refused, before it touches the loop or the registry, which are
// not thread-safe.
class Runtime::Claim {
 public:
  explicit Claim(Runtime& runtime) : runtime_(runtime) {
    const std::thread::id me = std::this_thread::get_id();
    std::thread::id none;
    owner_ = runtime_.user_.compare_exchange_strong(none, me, std::memory_order_acquire);
    held_ = owner_ || none == me;
  }
  ~Claim() {
    if (owner_) runtime_.user_.store(std::thread::id(), std::memory_order_release);
  }
  Claim(const Claim&) = delete;
  Claim& operator=(const Claim&) = delete;

  // OK, or why the call may not run.
  [[nodiscard]] absl::Status status(absl::string_view what) const {
    if (held_) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat(what,
                     " called while another thread is inside the Runtime: it belongs to one "
                     "thread at a time; use Shards (db/shards.h) to serve several threads"));
  }

 private:
  Runtime& runtime_;
  bool owner_ = false;
  bool held_ = false;
};

absl::StatusOr<Result> Runtime::Exec(absl::string_view database, absl::string_view sql,
                                     std::initializer_list<Value> params) {
  TenantRequest request;
  request.tenant = database;
  request.create_if_missing = true;
  request.kind = Request::Kind::kWrite;
  request.sql = sql;
  request.params.assign(params.begin(), params.end());
  Result result;
  return RunToDone(request, result);
}

absl::StatusOr<Result> Runtime::Exec(absl::string_view database, absl::Span<Statement> batch) {
  TenantRequest request;
  request.tenant = database;
  request.create_if_missing = true;
  request.kind = Request::Kind::kWrite;
  request.batch = batch;
  Result result;
  return RunToDone(request, result);
}

absl::StatusOr<Result> Runtime::Query(absl::string_view database, absl::string_view sql,
                                      std::initializer_list<Value> params) {
  TenantRequest request;
  request.tenant = database;
  request.kind = Request::Kind::kRead;
  request.sql = sql;
  request.params.assign(params.begin(), params.end());
  Result result;
  return RunToDone(request, result);
}

// Submits `request`, collecting its rows into `result`, and runs the loop one tick at a time
// until it is done. Other requests admitted earlier progress meanwhile.
absl::StatusOr<Result> Runtime::RunToDone(TenantRequest& request, Result& result) {
  struct Outcome {
    Result* result;
    bool done = false;
    absl::Status status;
  } outcome{&result, false, absl::OkStatus()};
  request.user_data = &outcome;
  request.on_row = [](Request& r, const Row& row) {
    static_cast<Outcome*>(r.user_data)->result->Add(row);
  };
  request.on_rows_discarded = [](Request& r) {
    static_cast<Outcome*>(r.user_data)->result->Clear();
  };
  request.on_done = [](TenantRequest& r, absl::Status status) {
    auto* out = static_cast<Outcome*>(r.user_data);
    out->done = true;
    out->status = std::move(status);
  };
  // Checked before Submit: the request lives on this frame, so once admitted it must be
  // waited for here.
  const Claim claim(*this);
  if (absl::Status refused = claim.status("Exec or Query"); !refused.ok()) return refused;
  if (absl::Status refused = RefuseFromCallback("Exec and Query"); !refused.ok()) return refused;
  if (absl::Status admitted = Submit(request); !admitted.ok()) return admitted;
  while (!outcome.done) {
    // A backend error ends the run: the request's memory may still be referenced, so this is
    // fatal rather than a return.
    const absl::Status run = loop_->Run(loop::RunMode::kOnce);
    SQLOOP_CHECK(run.ok(), "Runtime: the loop failed while a request was in flight");
  }
  if (!outcome.status.ok()) return outcome.status;
  result.changes = request.changes;
  result.last_insert_rowid = request.last_insert_rowid;
  return std::move(result);
}

absl::Status Runtime::Submit(TenantRequest& request) {
  const Claim claim(*this);
  if (absl::Status refused = claim.status("Submit"); !refused.ok()) return refused;
  if (shut_down_) {
    return absl::FailedPreconditionError("the Runtime was shut down; create a new one");
  }
  return registry_->Submit(request);
}

absl::Status Runtime::Run(loop::RunMode mode) {
  const Claim claim(*this);
  if (absl::Status refused = claim.status("Run"); !refused.ok()) return refused;
  return loop_->Run(mode);
}

absl::Status Runtime::RefuseFromCallback(absl::string_view what) const {
  if (!loop_->in_callback()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat(what,
                   " run the loop until they are done, and the loop is running (this is a loop "
                   "callback): use Submit with a callback instead"));
}

absl::Status Runtime::Shutdown() {
  const Claim claim(*this);
  if (absl::Status refused = claim.status("Shutdown"); !refused.ok()) return refused;
  // First: a callback run by the shutdown itself must not hear its outcome before there is one.
  if (absl::Status refused = RefuseFromCallback("Shutdown"); !refused.ok()) return refused;
  if (shut_down_) return shutdown_status_;
  shut_down_ = true;
  struct Closing {
    bool done = false;
    absl::Status status;
  } closing;
  registry_->Shutdown(
      [](void* arg, absl::Status status) {
        auto* c = static_cast<Closing*>(arg);
        c->done = true;
        c->status = std::move(status);
      },
      &closing);
  while (!closing.done) {
    const absl::Status run = loop_->Run(loop::RunMode::kOnce);
    SQLOOP_CHECK(run.ok(), "Runtime: the loop failed while the registry was shutting down");
  }
  shutdown_status_ = closing.status;
  registry_.reset();
  vfs_.reset();
  // Whatever the registry and the VFS left on the loop (a last close) completes before the
  // loop goes.
  if (absl::Status run = loop_->Run(loop::RunMode::kUntilDone);
      !run.ok() && shutdown_status_.ok()) {
    shutdown_status_ = run;
  }
  return shutdown_status_;
}

}  // namespace sqloop::db
