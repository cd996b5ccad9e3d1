// What the host answers once a request is complete: routing it (Dispatch), handing a query to
// the executor and turning its answer into a response (SubmitToExecutor, OnExecutorDone), and
// the bodies the server writes itself (/v1/stats, a minted token). The connection state machine
// these functions take part in is documented at the top of server.cc.
#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "examples/http/json_writer.h"
#include "examples/http/server.h"
#include "sqloop/alloc/check.h"

namespace sqloop::examples::http {

// ---- Routing and the executor ----------------------------------------------------------------

void HttpServer::Dispatch(Connection& connection) {
  stats_.requests++;
  ClearDeadline(connection);
  const HttpRequest& request = connection.parser.request();
  const Route route = MatchRoute(request.method, request.url);
  if (route.kind != RouteKind::kError) {
    // Invariant 1c: before the body is looked at and before the executor is asked.
    const HttpError denied = auth_.Authorize(route.kind, route.tenant, request.authorization);
    if (!denied.ok()) {
      RespondError(connection, denied, AfterSend::kKeepAlive);
      return;
    }
  }
  switch (route.kind) {
    case RouteKind::kError:
      RespondError(connection, route.error, AfterSend::kKeepAlive);
      return;
    case RouteKind::kToken:
      if (!auth_.enabled()) {
        RespondError(connection,
                     HttpError{404, "no_route",
                               "auth is disabled on this server: there are no tokens to mint", ""},
                     AfterSend::kKeepAlive);
        return;
      }
      WriteTokenBody(route.tenant, connection.body);
      Respond(connection, 200, "", AfterSend::kKeepAlive);
      return;
    case RouteKind::kStats:
      WriteStatsBody(connection.body);
      Respond(connection, 200, "", AfterSend::kKeepAlive);
      return;
    case RouteKind::kCreateTenant:
      SubmitToExecutor(connection, ExecutorRequest::Kind::kCreateTenant, route.tenant);
      return;
    case RouteKind::kDeleteTenant:
      SubmitToExecutor(connection, ExecutorRequest::Kind::kDeleteTenant, route.tenant);
      return;
    case RouteKind::kQuery:
      RunQuery(connection, route.tenant);
      return;
  }
}

void HttpServer::RunQuery(Connection& connection, absl::string_view tenant) {
  connection.request.Reset();
  HttpError error = ParseQueryBody(json_parser_, connection.parser.request().body, options_.query,
                                   connection.request.statements);
  if (!error.ok()) {
    RespondError(connection, error, AfterSend::kKeepAlive);
    return;
  }
  SubmitToExecutor(connection, ExecutorRequest::Kind::kQuery, tenant);
}

void HttpServer::SubmitToExecutor(Connection& connection, ExecutorRequest::Kind kind,
                                  absl::string_view tenant) {
  // Invariant 1b. The map has room for every connection (reserved), so this never rehashes; a
  // name longer than std::string's inline buffer costs one allocation while it has an entry.
  uint32_t& running = tenant_running_.try_emplace(tenant, 0).first->second;
  if (running >= options_.tenant_requests_max) {
    stats_.tenant_busy++;
    RespondError(
        connection,
        HttpError{503, "tenant_busy",
                  absl::StrCat("tenant \"", tenant, "\" already has ", options_.tenant_requests_max,
                               " requests running, the limit per tenant "
                               "(tenant_requests_max); retry"),
                  "Retry-After: 1\r\n"},
        AfterSend::kKeepAlive);
    return;
  }
  running++;
  connection.holds_tenant_slot = true;
  ExecutorRequest& request = connection.request;
  if (kind != ExecutorRequest::Kind::kQuery) request.Reset();
  request.kind = kind;
  request.tenant.assign(tenant.data(), tenant.size());
  Enter(connection, State::kRunning);
  executor_.Submit(request);
}

void HttpServer::ReleaseTenantSlot(Connection& connection) {
  SQLOOP_CHECK(connection.holds_tenant_slot, "HttpServer: a request ran without a tenant slot");
  connection.holds_tenant_slot = false;
  const auto it = tenant_running_.find(connection.request.tenant);
  SQLOOP_CHECK(it != tenant_running_.end() && it->second > 0,
               "HttpServer: a tenant's running count is lost");
  if (--it->second == 0) tenant_running_.erase(it);
}

void HttpServer::WriteTokenBody(absl::string_view tenant, std::string& body) const {
  body.clear();
  JsonWriter json(body);
  json.BeginObject();
  json.Key("tenant");
  json.String(tenant);
  json.Key("token");
  json.String(auth_.TenantToken(tenant));
  json.EndObject();
}

// NOLINTNEXTLINE(performance-unnecessary-value-param): the signature is ExecutorRequest's.
void HttpServer::OnExecutorDone(ExecutorRequest& request, absl::Status status) {
  auto& connection = *static_cast<Connection*>(request.user_data);
  HttpServer& server = *connection.server;
  server.AssertInvariants(connection);
  SQLOOP_CHECK(connection.state == State::kRunning, "HttpServer: executor answered twice");
  server.ReleaseTenantSlot(connection);
  if (!status.ok()) {
    server.RespondError(connection, ErrorFromStatus(status), AfterSend::kKeepAlive);
    return;
  }
  switch (request.kind) {
    case ExecutorRequest::Kind::kQuery:
      WriteResultsBody(request.results, connection.body);
      server.Respond(connection, 200, "", AfterSend::kKeepAlive);
      return;
    case ExecutorRequest::Kind::kCreateTenant:
    case ExecutorRequest::Kind::kDeleteTenant: {
      const bool created = request.kind == ExecutorRequest::Kind::kCreateTenant;
      connection.body.clear();
      JsonWriter json(connection.body);
      json.BeginObject();
      json.Key(created ? "created" : "deleted");
      json.String(request.tenant);
      if (created && server.auth_.enabled()) {
        // The admin hands this to the tenant: it grants queries on this tenant only.
        json.Key("token");
        json.String(server.auth_.TenantToken(request.tenant));
      }
      json.EndObject();
      server.Respond(connection, created ? 201 : 200, "", AfterSend::kKeepAlive);
      return;
    }
  }
}

// ---- /v1/stats -------------------------------------------------------------------------------

void HttpServer::WriteStatsBody(std::string& body) const {
  body.clear();
  JsonWriter json(body);
  json.BeginObject();
  WriteLoopStats(json);
  WriteServerStats(json);
  json.Key("executor");
  json.BeginObject();
  json.Key("name");
  json.String(executor_.name());
  for (const ExecutorStat& stat : executor_.Stats()) {
    json.Key(stat.name);
    json.Uint(stat.value);
  }
  json.EndObject();
  json.EndObject();
}

void HttpServer::WriteLoopStats(JsonWriter& json) const {
  json.Key("loop");
  json.BeginObject();
  const loop::LoopStats& loop_stats = loop_.stats();
  json.Key("backend");
  json.String(loop_.backend().name());
  for (const auto& [name, value] : {std::pair{"ticks", loop_stats.ticks},
                                    {"callbacks", loop_stats.callbacks},
                                    {"stalls", loop_stats.stalls},
                                    {"posts", loop_stats.posts},
                                    {"timer_heap_growths", loop_stats.timer_heap_growths},
                                    {"waited_ops", loop_stats.waited_ops},
                                    {"pending", loop_.pending()}}) {
    json.Key(name);
    json.Uint(value);
  }
  const io::BackendStats backend = loop_.backend().stats();
  json.Key("backend_stats");
  json.BeginObject();
  for (const auto& [name, value] : {std::pair{"submitted", backend.submitted},
                                    {"completed", backend.completed},
                                    {"enter_calls", backend.enter_calls},
                                    {"resubmitted", backend.resubmitted},
                                    {"sq_full_flushes", backend.sq_full_flushes},
                                    {"in_flight", uint64_t{loop_.backend().in_flight()}}}) {
    json.Key(name);
    json.Uint(value);
  }
  json.EndObject();
  json.EndObject();
}

void HttpServer::WriteServerStats(JsonWriter& json) const {
  json.Key("server");
  json.BeginObject();
  uint64_t errors = 0;
  for (int status = 400; status < 600; status++) errors += stats_.responses_by_status[status];
  for (const auto& [name, value] :
       {std::pair{"connections_open", uint64_t{open_}},
        {"connections_max", uint64_t{options_.connections_max}},
        {"connections_open_peak", uint64_t{stats_.connections_open_peak}},
        {"connections_accepted", stats_.connections_accepted},
        {"connections_closed", stats_.connections_closed},
        {"accept_pauses", stats_.accept_pauses},
        {"accept_errors", stats_.accept_errors},
        {"connections_idle", uint64_t{idle_.size()}},
        {"idle_closed_for_capacity", stats_.idle_closed_for_capacity},
        {"tenant_requests_max", uint64_t{options_.tenant_requests_max}},
        {"tenants_running", uint64_t{tenant_running_.size()}},
        {"tenant_busy", stats_.tenant_busy},
        {"auth_enabled", auth_.enabled() ? uint64_t{1} : uint64_t{0}},
        {"auth_unauthenticated", auth_.stats().unauthenticated},
        {"auth_forbidden", auth_.stats().forbidden},
        {"auth_constant_time_compares", auth_.stats().constant_time_compares},
        {"requests", stats_.requests},
        {"timeouts", stats_.timeouts},
        {"errors", errors}}) {
    json.Key(name);
    json.Uint(value);
  }
  json.Key("responses_by_status");
  json.BeginObject();
  for (int status = 100; status < 600; status++) {
    if (stats_.responses_by_status[status] == 0) continue;
    json.Key(absl::StrCat(status));
    json.Uint(stats_.responses_by_status[status]);
  }
  json.EndObject();
  json.EndObject();
}
}  // namespace sqloop::examples::http
