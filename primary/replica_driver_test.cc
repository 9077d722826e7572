#include "primary/replica_driver.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "common/testing/block_ledger.h"
#include "common/testing/manual_clock.h"
#include "common/testing/memory_btrfs.h"
#include "common/testing/replica_ssh_double.h"
#include "common/testing/temp_dir.h"

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using testing::FakeReplica;
using testing::FakeTransport;
using ::testing::HasSubstr;
using testing::OptionValue;
using Outcome = DriverPass::Outcome;

std::string_view Label(const absl::Status& status) {
  return ReplicationFailureLabel(ClassifyExecuteFailure(status));
}

TEST(ReplicationFailure, EachFailureClassHasItsLabel) {
  EXPECT_EQ(Label(absl::DeadlineExceededError("no bytes moved")), "watchdog");
  EXPECT_EQ(Label(absl::PermissionDeniedError("host key")), "trust");
  EXPECT_EQ(Label(absl::UnauthenticatedError("auth")), "trust");
  EXPECT_EQ(Label(absl::FailedPreconditionError("diverged")), "conflict");
  EXPECT_EQ(Label(absl::DataLossError("did not verify")), "verification");
  EXPECT_EQ(Label(absl::AbortedError("exit 1")), "refused");
  EXPECT_EQ(Label(absl::UnavailableError("connect")), "network");
  EXPECT_EQ(Label(absl::InternalError("btrfs send exited 1")), "local");
  EXPECT_EQ(Label(absl::NotFoundError("btrfs not installed")), "local");
  EXPECT_EQ(Label(absl::OkStatus()), "local");
}

TEST(ReplicationFailure, EveryLabelIsAMetricsReason) {
  for (int code = 0; code <= 16; ++code) {
    std::string_view reason = Label(absl::Status(static_cast<absl::StatusCode>(code), "x"));
    EXPECT_NE(
        std::find(kReplicationFailureReasons.begin(), kReplicationFailureReasons.end(), reason),
        kReplicationFailureReasons.end())
        << "code " << code << " -> " << reason;
  }
}

TEST(ReplicationFailure, EveryClassHasItsOwnMetricsReason) {
  ASSERT_EQ(kReplicationFailures.size(), kReplicationFailureReasons.size());
  for (size_t i = 0; i < kReplicationFailures.size(); ++i)
    EXPECT_EQ(ReplicationFailureLabel(kReplicationFailures[i]), kReplicationFailureReasons[i]);
}

TEST(ReplicationFailure, AConflictWaitsTheMaximumAndTheRestBackOff) {
  const absl::Duration initial = absl::Milliseconds(200), max = absl::Seconds(30);
  EXPECT_EQ(RetryDelayAfter(ReplicationFailure::kConflict, 1, initial, max), max);
  for (ReplicationFailure f : kReplicationFailures) {
    if (f == ReplicationFailure::kConflict) continue;
    EXPECT_EQ(RetryDelayAfter(f, 1, initial, max), initial) << ReplicationFailureLabel(f);
    EXPECT_EQ(RetryDelayAfter(f, 3, initial, max), initial * 4) << ReplicationFailureLabel(f);
    EXPECT_EQ(RetryDelayAfter(f, 20, initial, max), max) << ReplicationFailureLabel(f);
  }
}

// Connections fail the way an unreachable host does while `down`; otherwise they reach the
// fake replica.
class FlakyTransport final : public SshTransport {
 public:
  explicit FlakyTransport(SshTransport& reachable) : reachable_(reachable) {}
  absl::StatusOr<SshSessionPtr> Connect(const SshEndpoint& endpoint) override {
    if (down) return absl::UnavailableError("test: the replica is unreachable");
    return reachable_.Connect(endpoint);
  }
  bool down = false;

 private:
  SshTransport& reachable_;
};

// Calls `on_exec` before each command its sessions start: what a test sees there is the state
// while a transfer is under way.
class ObservingTransport final : public SshTransport {
 public:
  ObservingTransport(SshTransport& inner, std::function<void()> on_exec)
      : inner_(inner), on_exec_(std::move(on_exec)) {}
  absl::StatusOr<SshSessionPtr> Connect(const SshEndpoint& endpoint) override {
    absl::StatusOr<SshSessionPtr> session = inner_.Connect(endpoint);
    if (!session.ok()) return session.status();
    return SshSessionPtr(new Session(std::move(*session), on_exec_));
  }

 private:
  class Session final : public SshSession {
   public:
    Session(SshSessionPtr inner, std::function<void()>& on_exec)
        : inner_(std::move(inner)), on_exec_(on_exec) {}
    absl::StatusOr<RemoteCommandPtr> Exec(const std::string& command) override {
      on_exec_();
      return inner_->Exec(command);
    }
    bool Connected() const override { return inner_->Connected(); }

   private:
    SshSessionPtr inner_;
    std::function<void()>& on_exec_;
  };

  SshTransport& inner_;
  std::function<void()> on_exec_;
};

// A primary ledger on the in-memory btrfs, a fake replica behind a (flaky) SSH transport, the
// replication state and metrics of a primary with that one replica, and a driver for it.
class ReplicaDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto ledger = testing::BlockLedger::Create(btrfs_, dir_.path());
    ASSERT_TRUE(ledger.ok()) << ledger.status();
    ledger_ = std::move(*ledger);
    metrics_.ForReplica("r1");
  }

  // Makes the shipper and the driver, shipping through `transport` (by default the flaky one).
  void Start(ReplicaDriverOptions options = NoReportWait(), SshTransport* transport = nullptr,
             bool receive_session = true) {
    ReplicaTarget target{"r1", SshEndpoint{}};
    target.receive_session = receive_session;
    shipper_ = std::make_unique<BlockShipper>(btrfs_, transport ? *transport : flaky_, target,
                                              dir_.path(), &clock_);
    driver_ = std::make_unique<ReplicaDriver>(
        *shipper_, state_, metrics_, retention_mu_, [this] { return Blocks(); }, dir_.path(),
        options, &clock_);
  }

  static ReplicaDriverOptions NoReportWait() {
    ReplicaDriverOptions options;
    options.initial_report_wait = absl::ZeroDuration();
    return options;
  }

  // Appends an event, cuts a block, and returns every block.
  std::vector<BlockInfo> NewBlock() {
    ledger_->Cut(1);
    return Blocks();
  }

  std::vector<BlockInfo> Blocks() { return ledger_->Blocks(); }

  // The replica reports holding `blocks`.
  void Report(const std::vector<std::string>& blocks) {
    ReplicaReport report{"r1", blocks, {}, ""};
    ASSERT_TRUE(state_.ApplyReport(report, clock_.NowMicros()).ok());
  }

  // The blocks retention keeps for replicas now (keeping only the newest otherwise).
  std::set<std::string> Holds() {
    return state_.PlanRetention(Blocks(), {.keep_newest = 1, .max_blocks_behind = 100}).plan.holds;
  }

  double Failures(std::string_view reason) {
    for (const auto& family : registry_.Collect()) {
      if (family.name != "snapledger_replication_failures_total") continue;
      for (const auto& m : family.metric) {
        std::map<std::string, std::string> labels;
        for (const auto& l : m.label) labels[l.name] = l.value;
        if (labels["replica"] == "r1" && labels["reason"] == reason) return m.counter.value;
      }
    }
    return -1;
  }

  ReplicaLag Lag() {
    std::vector<ReplicaLag> lags =
        state_.Evaluate(ledger_->log().Head(), Blocks(), clock_.NowMicros());
    EXPECT_EQ(lags.size(), 1u);
    return lags.empty() ? ReplicaLag{} : lags[0];
  }

  testing::TempDir dir_;
  MemoryBtrfs btrfs_;
  ManualClock clock_;
  FakeReplica replica_;
  FakeTransport transport_{replica_};
  FlakyTransport flaky_{transport_};
  testing::BlockLedgerPtr ledger_;
  ReplicationState state_{{"r1"}, {}};
  prometheus::Registry registry_;
  PrimaryMetrics metrics_{registry_};
  absl::Mutex retention_mu_;
  std::unique_ptr<BlockShipper> shipper_;
  std::unique_ptr<ReplicaDriver> driver_;
};

TEST_F(ReplicaDriverTest, ShipsTheNewestBlockAsADeltaFromTheLastOneShipped) {
  Start();
  std::vector<BlockInfo> blocks = NewBlock();
  DriverPass first = driver_->RunOnce(1);
  ASSERT_EQ(first.outcome, Outcome::kShipped) << first.error;
  EXPECT_EQ(first.shipped->block, blocks.back());
  EXPECT_FALSE(first.shipped->parent.has_value());

  NewBlock();
  blocks = NewBlock();
  DriverPass second = driver_->RunOnce(1);
  ASSERT_EQ(second.outcome, Outcome::kShipped) << second.error;
  EXPECT_EQ(second.shipped->block, blocks.back());
  EXPECT_EQ(second.shipped->parent, blocks.front());

  EXPECT_EQ(driver_->RunOnce(1).outcome, Outcome::kInSync);
  EXPECT_THAT(driver_->view().verified_blocks, ElementsAre(blocks[0].name, blocks[2].name));
  PrimaryMetrics::Replica& m = metrics_.ForReplica("r1");
  EXPECT_EQ(m.transfers.Value(), 2);
  EXPECT_EQ(m.receive_commands.Value(), 1);
  EXPECT_GT(m.stream_bytes_sent.Value(), 0);
  EXPECT_EQ(Lag().last_verified_block, blocks.back().name);
  EXPECT_EQ(Lag().health, ReplicaHealth::kInSync);
}

TEST_F(ReplicaDriverTest, HoldsTheBlockAndItsParentWhileShippingThenTheBlockAlone) {
  std::set<std::string> holds_while_shipping;
  ObservingTransport observing(transport_, [&] { holds_while_shipping = Holds(); });
  Start(NoReportWait(), &observing, /*receive_session=*/false);
  std::vector<BlockInfo> blocks = NewBlock();
  ASSERT_EQ(driver_->RunOnce(1).outcome, Outcome::kShipped);
  NewBlock();
  blocks = NewBlock();
  ASSERT_EQ(driver_->RunOnce(1).outcome, Outcome::kShipped);
  EXPECT_EQ(holds_while_shipping, (std::set<std::string>{blocks[0].name, blocks[2].name}));
  EXPECT_EQ(Holds(), std::set<std::string>{blocks[2].name}) << "the shipped block is the parent";
}

TEST_F(ReplicaDriverTest, APlanStartsFromTheBlocksTheReplicaReported) {
  std::vector<BlockInfo> blocks = NewBlock();
  Report({blocks.back().name});
  Start();
  blocks = NewBlock();
  DriverPass pass = driver_->RunOnce(1);
  ASSERT_EQ(pass.outcome, Outcome::kShipped) << pass.error;
  EXPECT_EQ(pass.shipped->parent, blocks.front());
  ASSERT_EQ(replica_.requests.size(), 1u);
  EXPECT_EQ(OptionValue(replica_.requests[0], "--parent"), blocks.front().name);
}

TEST_F(ReplicaDriverTest, TheFirstReportIsAwaitedBeforeAFullSend) {
  ReplicaDriverOptions options;
  options.initial_report_wait = absl::Seconds(3);
  Start(options);
  NewBlock();
  EXPECT_EQ(driver_->RunOnce(1).outcome, Outcome::kAwaitingReport);
  clock_.Advance(2'999'999);
  EXPECT_EQ(driver_->RunOnce(1).outcome, Outcome::kAwaitingReport);
  EXPECT_TRUE(replica_.commands.empty());
  clock_.Advance(1);
  DriverPass pass = driver_->RunOnce(1);
  ASSERT_EQ(pass.outcome, Outcome::kShipped) << pass.error;
  EXPECT_FALSE(pass.shipped->parent.has_value());
}

TEST_F(ReplicaDriverTest, AParentTheReplicaDoesNotHoldIsForgottenForAFullSend) {
  std::vector<BlockInfo> blocks = NewBlock();
  Report({blocks.back().name});  // a report the replica no longer stands by
  replica_.not_held.insert(blocks.back().name);
  Start();
  blocks = NewBlock();
  DriverPass refused = driver_->RunOnce(1);
  ASSERT_EQ(refused.outcome, Outcome::kFailed);
  EXPECT_EQ(refused.failure, ReplicationFailure::kRefused);
  EXPECT_THAT(refused.error, HasSubstr("is not held here"));
  EXPECT_EQ(refused.retry_after, ReplicaDriverOptions().backoff_initial);
  EXPECT_TRUE(driver_->view().verified_blocks.empty());

  DriverPass full = driver_->RunOnce(1);
  ASSERT_EQ(full.outcome, Outcome::kShipped) << full.error;
  EXPECT_FALSE(full.shipped->parent.has_value());
  EXPECT_EQ(Failures("refused"), 1);
  EXPECT_EQ(metrics_.ForReplica("r1").receive_commands.Value(), 2)
      << "the refusal ended the receive session";
}

TEST_F(ReplicaDriverTest, AConflictShipsNothingAndWaitsTheMaximum) {
  std::vector<BlockInfo> blocks = NewBlock();
  // The replica holds another block at the primary's only seq: the histories diverged.
  BlockInfo foreign = *BlockForHead(blocks.back().seq, std::string(64, 'f'));
  Report({foreign.name});
  Start();
  DriverPass pass = driver_->RunOnce(1);
  ASSERT_EQ(pass.outcome, Outcome::kFailed);
  EXPECT_EQ(pass.failure, ReplicationFailure::kConflict);
  EXPECT_EQ(pass.retry_after, ReplicaDriverOptions().backoff_max);
  EXPECT_THAT(pass.error, HasSubstr("replica r1: replica holds " + foreign.name));
  EXPECT_TRUE(replica_.commands.empty());
  EXPECT_TRUE(Holds().empty()) << "nothing planned, nothing held";
  EXPECT_EQ(Failures("conflict"), 1);
  EXPECT_EQ(Lag().last_error, pass.error);
}

TEST_F(ReplicaDriverTest, NetworkFailuresBackOffUntilATransferSucceeds) {
  ReplicaDriverOptions options = NoReportWait();
  options.backoff_initial = absl::Milliseconds(100);
  options.backoff_max = absl::Milliseconds(250);
  Start(options);
  NewBlock();
  flaky_.down = true;
  std::vector<absl::Duration> delays;
  for (int i = 0; i < 3; ++i) {
    DriverPass pass = driver_->RunOnce(1);
    ASSERT_EQ(pass.outcome, Outcome::kFailed);
    EXPECT_EQ(pass.failure, ReplicationFailure::kNetwork);
    delays.push_back(pass.retry_after);
  }
  EXPECT_THAT(delays, ElementsAre(absl::Milliseconds(100), absl::Milliseconds(200),
                                  absl::Milliseconds(250)));
  EXPECT_EQ(Failures("network"), 3);
  EXPECT_TRUE(Holds().empty()) << "a failed transfer's hold ends with it";

  flaky_.down = false;
  ASSERT_EQ(driver_->RunOnce(1).outcome, Outcome::kShipped);
  EXPECT_EQ(driver_->RunOnce(1).outcome, Outcome::kInSync);
}

TEST_F(ReplicaDriverTest, TheBackoffStartsAgainAfterASuccess) {
  Start();
  std::vector<BlockInfo> blocks = NewBlock();
  replica_.not_verifying.insert(blocks.back().name);
  EXPECT_EQ(driver_->RunOnce(1).retry_after, ReplicaDriverOptions().backoff_initial);
  EXPECT_EQ(driver_->RunOnce(1).retry_after, ReplicaDriverOptions().backoff_initial * 2);
  replica_.not_verifying.clear();
  ASSERT_EQ(driver_->RunOnce(1).outcome, Outcome::kShipped);
  blocks = NewBlock();
  replica_.not_verifying.insert(blocks.back().name);
  DriverPass pass = driver_->RunOnce(1);
  EXPECT_EQ(pass.failure, ReplicationFailure::kVerification);
  EXPECT_EQ(pass.retry_after, ReplicaDriverOptions().backoff_initial);
  EXPECT_EQ(Failures("verification"), 3);
}

TEST_F(ReplicaDriverTest, AnUnconfirmedBlockStaysOutOfTheView) {
  Start();
  NewBlock();
  replica_.verdict_names = "block-000000000099-0123456789ab";
  DriverPass pass = driver_->RunOnce(1);
  ASSERT_EQ(pass.outcome, Outcome::kFailed);
  EXPECT_EQ(pass.failure, ReplicationFailure::kVerification);
  EXPECT_TRUE(driver_->view().verified_blocks.empty());
  EXPECT_EQ(metrics_.ForReplica("r1").transfers.Value(), 0);
}

TEST_F(ReplicaDriverTest, AnAbortedDriverStopsAndHoldsNothing) {
  Start();
  NewBlock();
  driver_->Abort();
  EXPECT_EQ(driver_->RunOnce(1).outcome, Outcome::kStopped);
  EXPECT_TRUE(Holds().empty());
  EXPECT_TRUE(replica_.commands.empty());
  EXPECT_EQ(Failures("local"), 0) << "stopping is no failure";
}

}  // namespace
}  // namespace snapledger
