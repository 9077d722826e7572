#include "tests/integration/cluster_client.h"

#include <grpcpp/grpcpp.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/status_macros.h"

namespace snapledger::testing {
namespace {

std::chrono::system_clock::time_point Deadline(int seconds) {
  return std::chrono::system_clock::now() + std::chrono::seconds(seconds);
}

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

}  // namespace

PrimaryClient::PrimaryClient(const std::string& grpc_address) {
  auto channel = grpc::CreateChannel(grpc_address, grpc::InsecureChannelCredentials());
  ledger_ = v1::Ledger::NewStub(channel);
  replication_ = v1::Replication::NewStub(channel);
}

absl::StatusOr<uint64_t> PrimaryClient::Append(uint64_t count, const std::string& tag) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(300));
  v1::AppendBatchResponse response;
  auto writer = ledger_->AppendStream(&context, &response);
  v1::AppendRequest request;
  for (uint64_t i = 0; i < count; ++i) {
    request.set_body_json(
        absl::StrCat(R"({"test":")", tag, R"(","i":)", i,
                     R"(,"host":"ovs-node-07","port":"vnet12","event":"link_state","state":"up",)",
                     R"("mtu":1500,"rx_packets":)", i * 7, R"(,"tx_packets":)", i * 5, "}"));
    if (!writer->Write(request)) break;
  }
  writer->WritesDone();
  RETURN_IF_ERROR(FromGrpc(writer->Finish(), "AppendStream"));
  if (response.count() != count)
    return absl::InternalError(absl::StrCat("appended ", response.count(), " of ", count));
  return response.last_seq();
}

absl::StatusOr<uint64_t> PrimaryClient::AppendBodies(const std::vector<std::string>& bodies) {
  grpc::ClientContext context;
  context.set_deadline(Deadline(300));
  v1::AppendBatchResponse response;
  auto writer = ledger_->AppendStream(&context, &response);
  v1::AppendRequest request;
  for (const std::string& body : bodies) {
    request.set_body_json(body);
    if (!writer->Write(request)) break;
  }
  writer->WritesDone();
  RETURN_IF_ERROR(FromGrpc(writer->Finish(), "AppendStream"));
  if (response.count() != bodies.size())
    return absl::InternalError(absl::StrCat("appended ", response.count(), " of ", bodies.size()));
  return response.last_seq();
}

absl::StatusOr<v1::ClusterStatusResponse> PrimaryClient::Status() {
  grpc::ClientContext context;
  context.set_deadline(Deadline(5));
  v1::ClusterStatusResponse response;
  RETURN_IF_ERROR(FromGrpc(replication_->ClusterStatus(&context, {}, &response), "ClusterStatus"));
  return response;
}

absl::StatusOr<std::string> ScrapeMetrics(const std::string& address) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  std::pair<std::string, std::string> host_port = absl::StrSplit(address, ':');
  try {
    boost::asio::io_context io;
    boost::asio::ip::tcp::resolver resolver(io);
    beast::tcp_stream stream(io);
    stream.expires_after(std::chrono::seconds(5));
    stream.connect(resolver.resolve(host_port.first, host_port.second));
    http::request<http::empty_body> request(http::verb::get, "/metrics", 11);
    request.set(http::field::host, host_port.first);
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response<http::string_body> response;
    http::read(stream, buffer, response);
    beast::error_code ec;
    stream.socket().shutdown(boost::asio::ip::tcp::socket::shutdown_both, ec);
    if (response.result() != http::status::ok)
      return absl::UnavailableError(
          absl::StrCat("GET http://", address, "/metrics: HTTP ", response.result_int()));
    return response.body();
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("GET http://", address, "/metrics: ", e.what()));
  }
}

std::optional<double> MetricValue(const std::string& scrape, const std::string& name,
                                  const std::map<std::string, std::string>& labels) {
  std::istringstream in(scrape);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t name_end = line.find_first_of("{ ");
    if (name_end == std::string::npos || line.compare(0, name_end, name) != 0 ||
        name_end != name.size())
      continue;
    bool match = true;
    for (const auto& [k, v] : labels)
      match &= line.find(absl::StrCat(k, "=\"", v, "\"")) != std::string::npos;
    if (!match) continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) return value;
  }
  return std::nullopt;
}

std::vector<std::string> DocumentedMetrics(const std::string& section) {
  std::ifstream in(std::string(SNAPLEDGER_SOURCE_DIR) + "/docs/METRICS.md");
  std::vector<std::string> names;
  std::string line;
  bool inside = false;
  while (std::getline(in, line)) {
    if (line.rfind("## ", 0) == 0) inside = line.rfind(section, 0) == 0;
    if (!inside || line.rfind("| `", 0) != 0) continue;
    size_t end = line.find('`', 3);
    if (end != std::string::npos) names.push_back(line.substr(3, end - 3));
  }
  return names;
}

bool WaitFor(const std::function<bool()>& done, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return done();
}

std::optional<v1::ReplicaStatus> ReplicaIn(const v1::ClusterStatusResponse& status,
                                           const std::string& replica_id) {
  for (const v1::ReplicaStatus& r : status.replicas())
    if (r.replica_id() == replica_id) return r;
  return std::nullopt;
}

}  // namespace snapledger::testing
