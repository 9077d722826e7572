#include "cli/cli_index.h"

#include <gtest/gtest.h>

namespace snapledger {
namespace {

RebuildProgressInfo Halfway() {
  RebuildProgressInfo info;
  info.events_done = 500000;
  info.events_total = 1000000;
  info.bytes_done = 100'000'000;
  info.bytes_total = 200'000'000;
  info.elapsed = absl::Seconds(4);
  return info;
}

TEST(RenderRebuildProgress, TerminalShowsABarRateAndEta) {
  EXPECT_EQ(RenderRebuildProgress(Halfway(), true),
            "[##########----------]  50%  500,000/1,000,000 events  25.0 MB/s  ETA 4s");
}

TEST(RenderRebuildProgress, PlainLinesForLogs) {
  EXPECT_EQ(RenderRebuildProgress(Halfway(), false),
            "rebuild-index: 500000/1000000 events (50%), 25.0 MB/s, ETA 4 s");
}

TEST(RenderRebuildProgress, NoEtaBeforeARateIsKnownAndFullAtTheEnd) {
  RebuildProgressInfo start;
  start.events_total = 10;
  start.bytes_total = 1000;
  EXPECT_EQ(RenderRebuildProgress(start, false), "rebuild-index: 0/10 events (0%), 0.0 MB/s");
  RebuildProgressInfo done = start;
  done.events_done = 10;
  done.bytes_done = 1000;
  done.elapsed = absl::Milliseconds(1);
  EXPECT_EQ(RenderRebuildProgress(done, true),
            "[####################] 100%  10/10 events  1.0 MB/s  ETA 0s");
}

TEST(RenderRebuildProgress, AnEmptyLogIsComplete) {
  EXPECT_EQ(RenderRebuildProgress(RebuildProgressInfo{}, false),
            "rebuild-index: 0/0 events (100%), 0.0 MB/s");
}

}  // namespace
}  // namespace snapledger
