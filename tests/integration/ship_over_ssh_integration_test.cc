// End to end over real SSH: a primary ledger on one loop-mounted btrfs, a replica on another,
// an OpenSSH sshd whose authorized_keys restricts the primary's key to the real
// `snapledger-replica receive`, and the BlockShipper streaming `btrfs send -p` deltas through
// one persistent libssh session.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/block_maker.h"
#include "common/btrfs.h"
#include "common/event_log.h"
#include "common/file_util.h"
#include "primary/block_shipper.h"
#include "tests/integration/loop_btrfs.h"
#include "tests/integration/primary_ledger.h"
#include "tests/integration/test_sshd.h"

#ifndef SNAPLEDGER_REPLICA_BIN
#error "SNAPLEDGER_REPLICA_BIN must name the snapledger-replica binary"
#endif

namespace snapledger {
namespace {

using ::testing::HasSubstr;

class ShipOverSshTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSIGN_LOOP_BTRFS_OR_SKIP(primary_fs_);
    ASSIGN_LOOP_BTRFS_OR_SKIP(replica_fs_);
    ASSIGN_TEST_SSHD_OR_SKIP(sshd_, absl::StrCat(SNAPLEDGER_REPLICA_BIN, " receive --root ",
                                                 replica_fs_->mount_point()));
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
                                    "\",\"from_vlan\":", next_ % 4000, ",\"to_vlan\":",
                                    (next_ + 7) % 4000, "}"));
    ASSERT_TRUE(log_->AppendBatch(bodies).ok());
  }

  std::vector<BlockInfo> CutAndList() {
    EXPECT_TRUE(maker_->Cut().ok());
    auto blocks = maker_->ListBlocks();
    EXPECT_TRUE(blocks.ok());
    return *blocks;
  }

  ReplicaTarget Target() { return ReplicaTarget{"replica-1", sshd_->Endpoint()}; }

  testing::LoopBtrfsPtr primary_fs_, replica_fs_;
  testing::TestSshdPtr sshd_;
  BtrfsPtr btrfs_;
  EventLogPtr log_;
  BlockMakerPtr maker_;
  int next_ = 1;
};

TEST_F(ShipOverSshTest, FullSendThenIncrementalDeltasOverOneSession) {
  BlockShipper shipper(*btrfs_, *SshTransport::Libssh(), Target(), primary_fs_->mount_point());
  Append(20000);
  auto blocks = CutAndList();
  auto first = shipper.ShipOnce(blocks, 1);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->has_value());
  EXPECT_FALSE((*first)->parent.has_value());
  EXPECT_EQ((*first)->events_verified, 20000u);

  Append(200);
  blocks = CutAndList();
  auto second = shipper.ShipOnce(blocks, 1);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_TRUE(second->has_value());
  EXPECT_EQ((*second)->parent, blocks.front());
  EXPECT_EQ((*second)->events_verified, 200u);
  // The delta carries the new events, not the log again.
  EXPECT_LT((*second)->stream_bytes * 20, (*first)->stream_bytes)
      << "full " << (*first)->stream_bytes << " delta " << (*second)->stream_bytes;

  auto in_sync = shipper.ShipOnce(blocks, 1);
  ASSERT_TRUE(in_sync.ok());
  EXPECT_FALSE(in_sync->has_value());
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
  auto r = shipper.ShipOnce(CutAndList(), 1);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(ShipOverSshTest, ParentMissingOnTheReplicaFallsBackToAFullSend) {
  BlockShipper shipper(*btrfs_, *SshTransport::Libssh(), Target(), primary_fs_->mount_point());
  Append(100);
  auto blocks = CutAndList();
  // The shipper believes the replica holds a block it never received.
  shipper.SetView(ReplicaView{"replica-1", {blocks.front().name}});
  Append(100);
  blocks = CutAndList();
  auto refused = shipper.ShipOnce(blocks, 1);
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("is not held here"));
  auto full = shipper.ShipOnce(blocks, 1);
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_TRUE(full->has_value());
  EXPECT_FALSE((*full)->parent.has_value());
  EXPECT_EQ((*full)->events_verified, 200u);
}

}  // namespace
}  // namespace snapledger
