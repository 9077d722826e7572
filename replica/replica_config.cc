#include "replica/replica_config.h"

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/ops/yaml_config.h"

namespace snapledger {

absl::StatusOr<ReplicaConfig> LoadReplicaConfig(const std::string& path) {
  ASSIGN_OR_RETURN(YAML::Node root, LoadYamlFile(path));
  YamlSection top(root, path);
  ReplicaConfig config;
  RETURN_IF_ERROR(top.Get("node_id", &config.node_id));
  RETURN_IF_ERROR(top.Get("ledger_root", &config.ledger_root));
  RETURN_IF_ERROR(top.Get("grpc_listen", &config.grpc_listen));
  RETURN_IF_ERROR(top.Get("metrics_listen", &config.metrics_listen));
  RETURN_IF_ERROR(top.Get("primary_grpc", &config.primary_grpc));
  RETURN_IF_ERROR(top.Get("index_dir", &config.index_dir));
  RETURN_IF_ERROR(top.GetMillis("poll_interval_ms", &config.poll_interval));
  RETURN_IF_ERROR(top.GetMillis("report_interval_ms", &config.report_interval));
  RETURN_IF_ERROR(top.GetMillis("report_timeout_ms", &config.report_timeout));
  ASSIGN_OR_RETURN(YamlSection retention, top.Section("retention"));
  uint64_t keep = config.keep_newest;
  RETURN_IF_ERROR(retention.Get("keep_newest", &keep));
  config.keep_newest = keep;
  RETURN_IF_ERROR(retention.CheckNoUnknownKeys());
  ASSIGN_OR_RETURN(YamlSection vector_index, top.Section("vector_index"));
  RETURN_IF_ERROR(ReadVectorIndexConfig(std::move(vector_index), &config.vector_index));
  RETURN_IF_ERROR(top.CheckNoUnknownKeys());
  return config;
}

absl::Status ValidateReplicaConfig(const ReplicaConfig& config) {
  if (config.node_id.empty())
    return absl::InvalidArgumentError(
        "node_id: required (the id the primary knows this replica by)");
  if (config.ledger_root.empty())
    return absl::InvalidArgumentError("ledger_root: required (a directory on btrfs)");
  if (config.grpc_listen.empty()) return absl::InvalidArgumentError("grpc_listen: required");
  VectorIndexConfig vector_index = config.vector_index;
  ApplyVectorIndexDefaults(config.ledger_root, &vector_index);
  RETURN_IF_ERROR(ValidateVectorIndexConfig(vector_index));
  if (config.keep_newest < 2)
    return absl::InvalidArgumentError(
        "retention.keep_newest: must be at least 2 (the newest block is the primary's next "
        "parent; one more covers a transfer planned just before it arrived)");
  if (config.poll_interval <= absl::ZeroDuration() ||
      config.report_interval <= absl::ZeroDuration() ||
      config.report_timeout <= absl::ZeroDuration())
    return absl::InvalidArgumentError(
        "poll_interval_ms, report_interval_ms and report_timeout_ms must be > 0");
  return absl::OkStatus();
}

}  // namespace snapledger
