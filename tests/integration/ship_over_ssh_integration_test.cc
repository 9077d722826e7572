// End to end over real SSH: a primary ledger on one loop-mounted btrfs, a replica on another,
// an OpenSSH sshd whose authorized_keys restricts the primary's key to the real
// `snapledger-receive`, and the BlockShipper streaming `btrfs send -p` deltas through
// one persistent libssh session, run by its ReplicaDriver or given steps directly; the same
// compressed with zstd; and the shipper's watchdog aborting a transfer the replica stopped
// reading.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"
#include "common/btrfs/btrfs.h"
#include "common/ledger/block_maker.h"
#include "common/ledger/event_log.h"
#include "primary/block_shipper.h"
#include "primary/replica_driver.h"
#include "primary/replication_state.h"
#include "tests/integration/loop_btrfs.h"
#include "tests/integration/primary_ledger.h"
#include "tests/integration/test_sshd.h"

#ifndef SNAPLEDGER_RECEIVE_BIN
#error "SNAPLEDGER_RECEIVE_BIN must name the snapledger-receive binary"
#endif

namespace snapledger {
namespace {

using ::testing::HasSubstr;

// The metric label the driver gives a failed Execute.
std::string_view Label(const absl::Status& status) {
  return ReplicationFailureLabel(ClassifyExecuteFailure(status));
}

// Entries of a /proc directory of this process (fds, threads).
int CountEntries(const std::string& dir) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++n;
  }
  return n;
}

// This process's children whose command name is `comm` (live or zombie: not reaped).
std::vector<pid_t> ChildrenNamed(const std::string& comm) {
  std::vector<pid_t> out;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream children(task.path() / "children");
    pid_t pid;
    while (children >> pid) {
      std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
      std::string name;
      std::getline(in, name);
      if (name == comm) out.push_back(pid);
    }
  }
  return out;
}

class ShipOverSshTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSIGN_LOOP_BTRFS_OR_SKIP(primary_fs_);
    ASSIGN_LOOP_BTRFS_OR_SKIP(replica_fs_);
    ASSIGN_TEST_SSHD_OR_SKIP(
        sshd_, absl::StrCat(SNAPLEDGER_RECEIVE_BIN, " --root ", replica_fs_->mount_point()));
    btrfs_ = Btrfs::Linux();
    auto primary = testing::CreatePrimaryLedger(*btrfs_, primary_fs_->mount_point());
    ASSERT_TRUE(primary.ok()) << primary.status();
    log_ = std::move(primary->log);
    maker_ = std::move(primary->maker);
  }

  void Append(int n) {
    std::vector<std::string> bodies;
    for (int i = 0; i < n; ++i, ++next_)
      bodies.push_back(absl::StrCat("{\"event\":\"port_moved\",\"port\":\"tap", next_,
                                    "\",\"from_vlan\":", next_ % 4000,
                                    ",\"to_vlan\":", (next_ + 7) % 4000, "}"));
    ASSERT_TRUE(log_->AppendBatch(bodies).ok());
  }

  std::vector<BlockInfo> CutAndList() {
    EXPECT_TRUE(maker_->Cut().ok());
    auto blocks = maker_->ListBlocks();
    EXPECT_TRUE(blocks.ok());
    return *blocks;
  }

  ReplicaTarget Target() { return ReplicaTarget{"replica-1", sshd_->Endpoint()}; }

  // A driver for `shipper` (shipping to "replica-1"), planning with the primary's blocks as
  // the daemon's drivers do, without waiting for a first report.
  std::unique_ptr<ReplicaDriver> DriverFor(BlockShipper& shipper) {
    ReplicaDriverOptions options;
    options.initial_report_wait = absl::ZeroDuration();
    return std::make_unique<ReplicaDriver>(
        shipper, state_, metrics_, retention_mu_,
        [this] { return maker_->ListBlocks().value_or(std::vector<BlockInfo>{}); },
        primary_fs_->mount_point(), options);
  }

  testing::LoopBtrfsPtr primary_fs_, replica_fs_;
  testing::TestSshdPtr sshd_;
  BtrfsPtr btrfs_;
  EventLogPtr log_;
  BlockMakerPtr maker_;
  int next_ = 1;
  ReplicationState state_{{"replica-1"}, {}};
  prometheus::Registry registry_;
  PrimaryMetrics metrics_{registry_};
  absl::Mutex retention_mu_;
};

TEST_F(ShipOverSshTest, FullSendThenIncrementalDeltasOverOneSession) {
  BlockShipper shipper(*btrfs_, *SshTransport::Libssh(), Target(), primary_fs_->mount_point());
  std::unique_ptr<ReplicaDriver> driver = DriverFor(shipper);
  Append(20000);
  auto blocks = CutAndList();
  DriverPass first = driver->RunOnce(1);
  ASSERT_EQ(first.outcome, DriverPass::Outcome::kShipped) << first.error;
  EXPECT_FALSE(first.shipped->parent.has_value());
  EXPECT_EQ(first.shipped->events_verified, 20000u);

  Append(200);
  blocks = CutAndList();
  DriverPass second = driver->RunOnce(1);
  ASSERT_EQ(second.outcome, DriverPass::Outcome::kShipped) << second.error;
  EXPECT_EQ(second.shipped->parent, blocks.front());
  EXPECT_EQ(second.shipped->events_verified, 200u);
  // The delta carries the new events, not the log again.
  EXPECT_LT(second.shipped->stream_bytes * 20, first.shipped->stream_bytes)
      << "full " << first.shipped->stream_bytes << " delta " << second.shipped->stream_bytes;

  EXPECT_EQ(driver->RunOnce(1).outcome, DriverPass::Outcome::kInSync);
  // Both blocks went to one receive command (a receive session), not one command each.
  EXPECT_EQ(shipper.ReceiveCommandsStarted(), 1u);
  std::string replica_log =
      LedgerLayout(replica_fs_->mount_point()).block(blocks.back()) + "/events.jsonl";
  std::string primary_log =
      LedgerLayout(primary_fs_->mount_point()).block(blocks.back()) + "/events.jsonl";
  EXPECT_EQ(*ReadFileToString(replica_log), *ReadFileToString(primary_log));
}

TEST_F(ShipOverSshTest, ReplicaWithAnUnknownHostKeyIsRefused) {
  ReplicaTarget target = Target();
  target.endpoint.known_hosts_file = sshd_->dir() + "/no_such_known_hosts";
  BlockShipper shipper(*btrfs_, *SshTransport::Libssh(), target, primary_fs_->mount_point());
  Append(10);
  auto r = shipper.Execute(SendStep{CutAndList().back(), std::nullopt}, 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(ShipOverSshTest, ParentMissingOnTheReplicaFallsBackToAFullSend) {
  BlockShipper shipper(*btrfs_, *SshTransport::Libssh(), Target(), primary_fs_->mount_point());
  std::unique_ptr<ReplicaDriver> driver = DriverFor(shipper);
  Append(100);
  auto blocks = CutAndList();
  // The driver is told the replica holds a block it never received.
  ReplicaReport report{"replica-1", {blocks.front().name}, {}, ""};
  ASSERT_TRUE(state_.ApplyReport(report, 0).ok());
  Append(100);
  blocks = CutAndList();
  DriverPass refused = driver->RunOnce(1);
  ASSERT_EQ(refused.outcome, DriverPass::Outcome::kFailed);
  EXPECT_EQ(refused.failure, ReplicationFailure::kRefused);
  EXPECT_THAT(refused.error, HasSubstr("parent_not_held"));
  EXPECT_THAT(refused.error, HasSubstr("is not held here"));
  DriverPass full = driver->RunOnce(1);
  ASSERT_EQ(full.outcome, DriverPass::Outcome::kShipped) << full.error;
  EXPECT_FALSE(full.shipped->parent.has_value());
  EXPECT_EQ(full.shipped->events_verified, 200u);
  // The refused block ended its receive session; the full send ran on a new one.
  EXPECT_EQ(shipper.ReceiveCommandsStarted(), 2u);
}

TEST_F(ShipOverSshTest, WithoutReceiveSessionsEachBlockHasItsOwnCommand) {
  ReplicaTarget target = Target();
  target.receive_session = false;
  BlockShipper shipper(*btrfs_, *SshTransport::Libssh(), target, primary_fs_->mount_point());
  std::vector<BlockInfo> blocks;
  std::optional<BlockInfo> parent;
  for (int i = 0; i < 3; ++i) {
    Append(100);
    blocks = CutAndList();
    auto r = shipper.Execute(SendStep{blocks.back(), parent}, 1);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->events_verified, 100u);
    parent = blocks.back();
  }
  EXPECT_EQ(shipper.ReceiveCommandsStarted(), 3u);
  EXPECT_EQ(*ReadFileToString(LedgerLayout(replica_fs_->mount_point()).block(blocks.back()) +
                              "/events.jsonl"),
            *ReadFileToString(LedgerLayout(primary_fs_->mount_point()).block(blocks.back()) +
                              "/events.jsonl"));
}

TEST_F(ShipOverSshTest, ZstdCompressedFullSendThenDeltaPutLessOnTheWire) {
  ReplicaTarget target = Target();
  target.compression = StreamCompression::kZstd;
  BlockShipper shipper(*btrfs_, *SshTransport::Libssh(), target, primary_fs_->mount_point());
  Append(20000);
  auto blocks = CutAndList();
  auto first = shipper.Execute(SendStep{blocks.back(), std::nullopt}, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(first->parent.has_value());
  EXPECT_EQ(first->events_verified, 20000u);
  EXPECT_GT(first->wire_bytes, 0u);
  EXPECT_LT(first->wire_bytes, first->stream_bytes);
  EXPECT_EQ(shipper.TransferBytes(), first->wire_bytes);

  Append(300);
  blocks = CutAndList();
  auto second = shipper.Execute(SendStep{blocks.back(), blocks.front()}, 1);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->parent, blocks.front());
  EXPECT_EQ(second->events_verified, 300u);
  EXPECT_LT(second->wire_bytes, second->stream_bytes);
  EXPECT_LT(second->stream_bytes * 20, first->stream_bytes);

  std::string replica_log =
      LedgerLayout(replica_fs_->mount_point()).block(blocks.back()) + "/events.jsonl";
  std::string primary_log =
      LedgerLayout(primary_fs_->mount_point()).block(blocks.back()) + "/events.jsonl";
  EXPECT_EQ(*ReadFileToString(replica_log), *ReadFileToString(primary_log));
}

TEST_F(ShipOverSshTest, WatchdogAbortsATransferTheReplicaStoppedReading) {
  // A forced command that never reads its stdin: the channel's window fills and the shipper's
  // write blocks. It ends by itself once its sshd session process is gone (or after ~60 s).
  testing::TestSshdPtr stalling;
  ASSIGN_TEST_SSHD_OR_SKIP(
      stalling, "for i in $(seq 600); do kill -0 $PPID 2>/dev/null || exit 0; sleep 0.1; done");
  BlockShipperOptions options;
  options.watchdog = absl::Seconds(2);
  BlockShipper shipper(*btrfs_, *SshTransport::Libssh(),
                       ReplicaTarget{"stalling-replica", stalling->Endpoint()},
                       primary_fs_->mount_point(), options);
  Append(60000);  // a stream well beyond the channel window and the socket buffers
  auto blocks = CutAndList();
  const int fds_before = CountEntries("/proc/self/fd");
  const int threads_before = CountEntries("/proc/self/task");

  absl::Time start = absl::Now();
  auto r = shipper.Execute(SendStep{blocks.back(), std::nullopt}, 1);
  absl::Duration took = absl::Now() - start;

  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("no bytes moved"));
  EXPECT_EQ(Label(r.status()), "watchdog");
  EXPECT_LT(took, absl::Seconds(20)) << "bounded by the 2 s watchdog, not by the remote command";
  EXPECT_GT(shipper.TransferBytes(), 0u) << "some bytes moved before the stall";
  // Nothing left behind: `btrfs send` killed and reaped, the session's socket closed, the
  // watchdog thread joined.
  EXPECT_THAT(ChildrenNamed("btrfs"), ::testing::IsEmpty());
  EXPECT_EQ(CountEntries("/proc/self/fd"), fds_before);
  EXPECT_EQ(CountEntries("/proc/self/task"), threads_before);
}

}  // namespace
}  // namespace snapledger
