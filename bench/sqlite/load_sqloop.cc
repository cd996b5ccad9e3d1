// load_write/sqloop and load_mixed/sqloop: the open-loop schedule (bench/sqlite/load.h) driven
// on sqloop's loop, on one thread, as an application embedding sqloop would: after every tick
// the driver submits each request that has become due, and while none is due it keeps a loop
// timer armed for the next intended start, so the loop sleeps in io_uring until then unless a
// completion arrives first. kInFlightMax caller-owned slots (a read and a write db::Request
// each) are allocated before the timed region and recycled through a free list, so the timed
// path makes no heap allocation of its own.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "bench/sqlite/env.h"
#include "bench/sqlite/load.h"

namespace sqloop::bench {
namespace {

struct Driver;

struct Slot {
  db::Request read;
  db::Request write;
  Driver* driver = nullptr;
  int64_t index = -1;  // The request of the schedule this slot carries.
  int rows = 0;
  bool values_ok = false;
};

struct Driver {
  LoadRun* run = nullptr;
  SqloopEnv* env = nullptr;
  std::unique_ptr<Slot[]> slots;
  std::vector<Slot*> free;  // Reserved for every slot: pushing never allocates.
  loop::Completion timer;
  bool timer_armed = false;
};

// The signature is db::Request::DoneCallback's, which passes the status by value.
void OnDone(db::Request& r, absl::Status status) {  // NOLINT(performance-unnecessary-value-param)
  auto& slot = *static_cast<Slot*>(r.user_data);
  Driver& d = *slot.driver;
  const bool write = &r == &slot.write;
  if (!status.ok()) {
    d.run->Fail(status.ToString());
  } else if (write ? r.changes != 1 : (slot.rows != 1 || !slot.values_ok)) {
    d.run->Fail(write ? "an INSERT changed != 1 row" : "a read returned a wrong row");
  } else {
    d.run->done_ns[static_cast<size_t>(slot.index)] = MonotonicNs();
  }
  slot.index = -1;
  d.free.push_back(&slot);
}

void OnRow(db::Request& r, const db::Row& row) {
  auto& slot = *static_cast<Slot*>(r.user_data);
  const int64_t id = r.params[0].int_value;
  ++slot.rows;
  slot.values_ok = row.Int(0) == ExpectedValue(id) && TextMatches(id, row.Text(1));
}

void MakeSlots(Driver& d) {
  d.slots = std::make_unique<Slot[]>(kInFlightMax);
  d.free.reserve(kInFlightMax);
  for (size_t i = 0; i < kInFlightMax; ++i) {
    Slot& s = d.slots[i];
    s.driver = &d;
    s.read.kind = db::Request::Kind::kRead;
    s.read.sql = kPointSelect;
    s.read.params.push_back(db::Value::Int(0));
    s.read.on_row = &OnRow;
    s.write.kind = db::Request::Kind::kWrite;
    s.write.sql = kInsert;
    s.write.params = {db::Value::Int(0), db::Value::Int(0), db::Value::Text(kPayload)};
    for (db::Request* r : {&s.read, &s.write}) {
      r->user_data = &s;
      r->on_done = &OnDone;
    }
    d.free.push_back(&s);
  }
  d.timer.user_data = &d;
  d.timer.callback = [](loop::Loop&, loop::Completion& c) {
    static_cast<Driver*>(c.user_data)->timer_armed = false;
    return loop::Action::kDisarm;
  };
}

void Issue(Driver& d, int64_t index) {
  Slot& slot = *d.free.back();
  d.free.pop_back();
  const PlainOp& op = d.run->ops[static_cast<size_t>(index)];
  slot.index = index;
  db::Request& request = op.write ? slot.write : slot.read;
  if (op.write) {
    slot.write.params[1].int_value = op.key;
  } else {
    slot.read.params[0].int_value = op.key;
    slot.rows = 0;
    slot.values_ok = false;
  }
  if (absl::Status admitted = d.env->db().Submit(request); !admitted.ok()) {
    d.run->Fail(admitted.ToString());
    slot.index = -1;
    d.free.push_back(&slot);
  }
}

// Runs the schedule to its end; returns with requests possibly still in flight.
void Drive(Driver& d) {
  const Schedule& s = d.run->schedule;
  int64_t next = 0;
  for (;;) {
    // Issue before checking the end: requests that fell due while the loop ran a long tick
    // are handed over now, as a server reads what queued in its socket meanwhile.
    const int64_t now_ns = MonotonicNs();
    while (next < s.count && s.IntendedNs(next) <= now_ns && !d.free.empty()) Issue(d, next++);
    if (next == s.count || now_ns >= s.end_ns || d.run->failures.load() != 0) {
      d.run->stop_ns = now_ns;
      return;
    }
    if (!d.free.empty() && !d.timer_armed) {
      d.timer_armed = true;  // Nothing due yet: sleep in the loop until the next one is.
      d.env->loop().Timer(d.timer, absl::Nanoseconds(s.IntendedNs(next) - now_ns));
    }
    if (absl::Status ran = d.env->RunOnce(); !ran.ok()) d.run->Fail(ran.ToString());
  }
}

// Cancels the timer and waits for every request in flight.
void Drain(Driver& d) {
  if (d.timer_armed) d.env->loop().Cancel(d.timer);
  // Even after a failure: the loop may not be destroyed with a request or the timer pending.
  while (d.timer_armed || d.free.size() < kInFlightMax) {
    if (absl::Status ran = d.env->RunOnce(); !ran.ok()) return d.run->Fail(ran.ToString());
  }
}

}  // namespace

void SqloopLoad(benchmark::State& state, Workload workload) {
  LoadRun run;
  PrepareRun(state, workload, run);
  const std::string path = CreateLoadDb(workload);
  SqloopEnv env;
  absl::Status status =
      path.empty() ? absl::InternalError("creating the database failed") : env.Open(path, {});
  if (!status.ok()) {
    RemoveDb(path);
    return state.SkipWithError(absl::StrCat("sqloop setup failed: ", status.ToString()).c_str());
  }
  LabelBackend(state, env.backend_name());
  Driver driver;
  driver.run = &run;
  driver.env = &env;
  MakeSlots(driver);
  for (auto _ : state) {
    Begin(run);
    Drive(driver);
    Drain(driver);
  }
  if (absl::Status closed = env.Close(); !closed.ok()) run.Fail(closed.ToString());
  FinishStep(state, run, path);
}

}  // namespace sqloop::bench
