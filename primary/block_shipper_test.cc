#include "primary/block_shipper.h"

#include <gtest/gtest.h>

#include <algorithm>

#include "common/metrics.h"

namespace snapledger {
namespace {

TEST(ShipFailureReason, EachFailureClassHasItsLabel) {
  EXPECT_EQ(ShipFailureReason(absl::DeadlineExceededError("no bytes moved")), "watchdog");
  EXPECT_EQ(ShipFailureReason(absl::PermissionDeniedError("host key")), "trust");
  EXPECT_EQ(ShipFailureReason(absl::UnauthenticatedError("auth")), "trust");
  EXPECT_EQ(ShipFailureReason(absl::FailedPreconditionError("diverged")), "conflict");
  EXPECT_EQ(ShipFailureReason(absl::DataLossError("did not verify")), "verification");
  EXPECT_EQ(ShipFailureReason(absl::AbortedError("exit 1")), "refused");
  EXPECT_EQ(ShipFailureReason(absl::UnavailableError("connect")), "network");
  EXPECT_EQ(ShipFailureReason(absl::InternalError("btrfs send exited 1")), "local");
  EXPECT_EQ(ShipFailureReason(absl::NotFoundError("btrfs not installed")), "local");
  EXPECT_EQ(ShipFailureReason(absl::OkStatus()), "local");
}

TEST(ShipFailureReason, EveryLabelIsAMetricsReason) {
  for (int code = 0; code <= 16; ++code) {
    std::string_view reason =
        ShipFailureReason(absl::Status(static_cast<absl::StatusCode>(code), "x"));
    EXPECT_NE(
        std::find(kReplicationFailureReasons.begin(), kReplicationFailureReasons.end(), reason),
        kReplicationFailureReasons.end())
        << "code " << code << " -> " << reason;
  }
}

}  // namespace
}  // namespace snapledger
