// The vector index commands of `snapledger`:
//   similar        events most similar to a text, an event body or a seq (local, or --node)
//   rebuild-index  rebuild the vector index from the log beside the old one and swap it in
//                  (local, or --node through the Admin RPC), with a progress bar on a
//                  terminal and plain progress lines otherwise.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "cli/cli.h"
#include "common/index/similarity_index.h"

namespace snapledger {

// One progress report of a rebuild as the CLI prints it. On a terminal: a bar for "\r"
// redrawing, e.g. "[##########----------]  50%  500,000/1,000,000 events  41.2 MB/s  ETA 6s";
// otherwise a line, e.g. "rebuild-index: 500000/1000000 events (50%), 41.2 MB/s, ETA 6 s".
// Rate and ETA are by bytes; ETA is omitted until a rate is known. Pure.
std::string RenderRebuildProgress(const RebuildProgressInfo& info, bool terminal);

// Registers the commands on `app`; Run() executes whichever was parsed.
class IndexCommands {
 public:
  explicit IndexCommands(CLI::App& app);
  ~IndexCommands();
  IndexCommands(const IndexCommands&) = delete;
  IndexCommands& operator=(const IndexCommands&) = delete;

  // nullopt if neither command was parsed; else {exit code, message for stderr (may be
  // empty)}. `ledger_dir` is <root>/live (empty when no --root was given: only --node works),
  // `index_root` the derived indexes' directory.
  std::optional<std::pair<int, std::string>> Run(const std::string& ledger_dir,
                                                 const std::string& index_root, const CliEnv& env);

  struct Args;

 private:
  CLI::App* similar_;
  CLI::App* rebuild_;
  std::unique_ptr<Args> args_;
};

}  // namespace snapledger
