#include "primary/primary_config.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/ops/yaml_config.h"

namespace snapledger {
namespace {

absl::Status ReadBlocks(YamlSection section, BlockPolicy* policy) {
  RETURN_IF_ERROR(section.Get("every_events", &policy->max_events));
  RETURN_IF_ERROR(section.GetMillis("interval_ms", &policy->max_age));
  RETURN_IF_ERROR(section.GetMillis("on_demand_spacing_ms", &policy->on_demand_spacing));
  return section.CheckNoUnknownKeys();
}

absl::Status ReadRetention(YamlSection section, RetentionLimits* limits) {
  uint64_t keep = limits->keep_newest, behind = limits->max_blocks_behind;
  RETURN_IF_ERROR(section.Get("keep_newest", &keep));
  RETURN_IF_ERROR(section.Get("max_blocks_behind", &behind));
  limits->keep_newest = keep;
  limits->max_blocks_behind = behind;
  return section.CheckNoUnknownKeys();
}

absl::Status ReadSsh(YamlSection section, SshEndpoint* ssh) {
  RETURN_IF_ERROR(section.Get("identity_file", &ssh->identity_file));
  RETURN_IF_ERROR(section.Get("known_hosts_file", &ssh->known_hosts_file));
  RETURN_IF_ERROR(section.Get("trust_unknown_host_key", &ssh->trust_unknown_host_key));
  RETURN_IF_ERROR(section.Get("ciphers", &ssh->ciphers));
  RETURN_IF_ERROR(section.GetSeconds("connect_timeout_seconds", &ssh->connect_timeout));
  return section.CheckNoUnknownKeys();
}

absl::Status ReadShipping(YamlSection section, ShippingConfig* shipping) {
  RETURN_IF_ERROR(section.GetSeconds("watchdog_seconds", &shipping->watchdog));
  RETURN_IF_ERROR(section.GetSeconds("verdict_timeout_seconds", &shipping->verdict_timeout));
  RETURN_IF_ERROR(section.GetMillis("backoff_initial_ms", &shipping->backoff_initial));
  RETURN_IF_ERROR(section.GetMillis("backoff_max_ms", &shipping->backoff_max));
  RETURN_IF_ERROR(section.GetMillis("initial_report_wait_ms", &shipping->initial_report_wait));
  return section.CheckNoUnknownKeys();
}

absl::StatusOr<ReplicaTarget> ReadReplica(YamlSection section) {
  ReplicaTarget target;
  RETURN_IF_ERROR(section.Get("id", &target.id));
  RETURN_IF_ERROR(section.Get("host", &target.endpoint.host));
  RETURN_IF_ERROR(section.Get("port", &target.endpoint.port));
  RETURN_IF_ERROR(section.Get("user", &target.endpoint.user));
  RETURN_IF_ERROR(section.Get("receive_command", &target.receive_command));
  RETURN_IF_ERROR(section.Get("receive_session", &target.receive_session));
  std::string compression = "none";
  RETURN_IF_ERROR(section.Get("compression", &compression));
  absl::StatusOr<StreamCompression> parsed = ParseStreamCompression(compression);
  if (!parsed.ok())
    return absl::InvalidArgumentError(
        absl::StrCat(section.where(), ".compression: ", parsed.status().message()));
  target.compression = *parsed;
  // Absent keys keep ReplicaTarget's defaults; either one without zstd is a mistake to report.
  for (const char* key : {"zstd_level", "zstd_workers"}) {
    if (section.Has(key) && target.compression != StreamCompression::kZstd)
      return absl::InvalidArgumentError(
          absl::StrCat(section.where(), ".", key, ": set, but the replica's compression is ",
                       std::string(StreamCompressionName(target.compression)), ", not zstd"));
  }
  auto named = [&](absl::string_view key, const absl::Status& st) {
    return absl::InvalidArgumentError(absl::StrCat(section.where(), ".", key, ": ", st.message()));
  };
  RETURN_IF_ERROR(section.GetSigned("zstd_level", &target.zstd.level));
  if (absl::Status st = ValidateZstdLevel(target.zstd.level); !st.ok())
    return named("zstd_level", st);
  RETURN_IF_ERROR(section.Get("zstd_workers", &target.zstd.workers));
  if (absl::Status st = ValidateZstdWorkers(target.zstd.workers); !st.ok())
    return named("zstd_workers", st);
  RETURN_IF_ERROR(section.CheckNoUnknownKeys());
  if (target.id.empty())
    return absl::InvalidArgumentError(absl::StrCat(section.where(), ".id: required"));
  if (target.endpoint.host.empty())
    return absl::InvalidArgumentError(absl::StrCat(section.where(), ".host: required"));
  return target;
}

}  // namespace

absl::StatusOr<PrimaryConfig> LoadPrimaryConfig(const std::string& path) {
  ASSIGN_OR_RETURN(YAML::Node root, LoadYamlFile(path));
  YamlSection top(root, path);
  PrimaryConfig config;
  RETURN_IF_ERROR(top.Get("node_id", &config.node_id));
  RETURN_IF_ERROR(top.Get("ledger_root", &config.ledger_root));
  RETURN_IF_ERROR(top.Get("epoch", &config.epoch));
  RETURN_IF_ERROR(top.Get("grpc_listen", &config.grpc_listen));
  RETURN_IF_ERROR(top.Get("metrics_listen", &config.metrics_listen));
  RETURN_IF_ERROR(top.Get("index_dir", &config.index_dir));
  RETURN_IF_ERROR(top.GetSeconds("stall_after_seconds", &config.stall_after));
  ASSIGN_OR_RETURN(YamlSection blocks, top.Section("blocks"));
  RETURN_IF_ERROR(ReadBlocks(std::move(blocks), &config.blocks));
  ASSIGN_OR_RETURN(YamlSection retention, top.Section("retention"));
  RETURN_IF_ERROR(ReadRetention(std::move(retention), &config.retention));
  ASSIGN_OR_RETURN(YamlSection ssh, top.Section("ssh"));
  RETURN_IF_ERROR(ReadSsh(std::move(ssh), &config.ssh));
  ASSIGN_OR_RETURN(YamlSection shipping, top.Section("shipping"));
  RETURN_IF_ERROR(ReadShipping(std::move(shipping), &config.shipping));
  ASSIGN_OR_RETURN(YamlSection vector_index, top.Section("vector_index"));
  RETURN_IF_ERROR(ReadVectorIndexConfig(std::move(vector_index), &config.vector_index));
  ASSIGN_OR_RETURN(std::vector<YamlSection> replicas, top.SectionList("replicas"));
  for (YamlSection& r : replicas) {
    ASSIGN_OR_RETURN(ReplicaTarget target, ReadReplica(std::move(r)));
    config.replicas.push_back(std::move(target));
  }
  RETURN_IF_ERROR(top.CheckNoUnknownKeys());
  return config;
}

absl::Status ValidatePrimaryConfig(const PrimaryConfig& config) {
  if (config.ledger_root.empty())
    return absl::InvalidArgumentError("ledger_root: required (a directory on btrfs)");
  if (config.epoch == 0) return absl::InvalidArgumentError("epoch: must be at least 1");
  if (config.grpc_listen.empty()) return absl::InvalidArgumentError("grpc_listen: required");
  if (config.retention.keep_newest == 0)
    return absl::InvalidArgumentError("retention.keep_newest: must be at least 1");
  if (config.blocks.max_events == 0 && config.blocks.max_age == absl::ZeroDuration())
    return absl::InvalidArgumentError(
        "blocks: every_events and interval_ms are both 0, so no block would ever be cut");
  if (config.shipping.backoff_initial <= absl::ZeroDuration() ||
      config.shipping.backoff_max < config.shipping.backoff_initial)
    return absl::InvalidArgumentError(
        "shipping: backoff_initial_ms must be > 0 and at most backoff_max_ms");
  VectorIndexConfig vector_index = config.vector_index;
  ApplyVectorIndexDefaults(config.ledger_root, &vector_index);
  RETURN_IF_ERROR(ValidateVectorIndexConfig(vector_index));
  if (config.shipping.watchdog <= absl::ZeroDuration())
    return absl::InvalidArgumentError("shipping.watchdog_seconds: must be > 0");
  if (config.shipping.verdict_timeout <= absl::ZeroDuration())
    return absl::InvalidArgumentError("shipping.verdict_timeout_seconds: must be > 0");
  if (!config.replicas.empty()) {
    if (config.ssh.identity_file.empty())
      return absl::InvalidArgumentError("ssh.identity_file: required when replicas are set");
    if (config.ssh.known_hosts_file.empty())
      return absl::InvalidArgumentError(
          "ssh.known_hosts_file: required when replicas are set (host keys are never "
          "trusted blindly)");
  }
  std::set<std::string> ids;
  for (const ReplicaTarget& r : config.replicas) {
    if (r.id.empty() || r.endpoint.host.empty())
      return absl::InvalidArgumentError(
          absl::StrCat("replicas: every replica needs an id and a host (id '", r.id, "', host '",
                       r.endpoint.host, "')"));
    if (r.endpoint.port < 1 || r.endpoint.port > 65535)
      return absl::InvalidArgumentError(absl::StrCat("replicas: replica '", r.id, "' port ",
                                                     r.endpoint.port, " is not in 1-65535"));
    if (!ids.insert(r.id).second)
      return absl::InvalidArgumentError(absl::StrCat("replicas: id '", r.id, "' appears twice"));
    if (r.id.find_first_of("/ \t\n\"'") != std::string::npos)
      return absl::InvalidArgumentError(
          absl::StrCat("replicas: id '", r.id, "' may not contain '/', quotes or spaces"));
  }
  return absl::OkStatus();
}

}  // namespace snapledger
