// snapledger-replica: the replica's commands. For now `receive`, the command the primary's key
// is restricted to in the replica's authorized_keys:
//
//   command="/usr/bin/snapledger-replica receive --root /srv/ledger",restrict ssh-ed25519 AAAA...
//
// sshd then passes the primary's requested command in SSH_ORIGINAL_COMMAND; only its transfer
// arguments (--block, --parent, --epoch, --head-seq, --head-hash) are taken from it, parsed
// without a shell and validated; the root always comes from the forced command.
// Exit codes: 0 promoted (or already held), 1 error, 2 bad arguments, 3 the block did not verify.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "common/btrfs.h"
#include "common/byte_stream.h"
#include "replica/block_receiver.h"

namespace snapledger {
namespace {

struct TransferArgs {
  std::string block, parent;
  uint64_t epoch = 0;
  uint64_t head_seq = 0;
  std::string head_hash;
};

void AddTransferOptions(CLI::App& app, TransferArgs& t) {
  app.add_option("--block", t.block, "the block being sent (block-<seq>-<hash12>)");
  app.add_option("--parent", t.parent, "the delta's parent block (omit for a full send)");
  app.add_option("--epoch", t.epoch, "the primary's epoch");
  app.add_option("--head-seq", t.head_seq, "the head the primary announces for the block");
  app.add_option("--head-hash", t.head_hash, "its full hash");
}

// Parses SSH_ORIGINAL_COMMAND: "[snapledger-replica] receive <transfer options>" and nothing
// else.
bool ParseOriginalCommand(const std::string& command, TransferArgs& t, std::string* error) {
  std::vector<std::string> words = absl::StrSplit(command, ' ', absl::SkipEmpty());
  if (!words.empty() && (words[0] == "snapledger-replica" ||
                         absl::EndsWith(words[0], "/snapledger-replica")))
    words.erase(words.begin());
  if (words.empty() || words[0] != "receive") {
    *error = "this key may only run `snapledger-replica receive`";
    return false;
  }
  words[0] = "receive";
  CLI::App app{"receive", "receive"};
  AddTransferOptions(app, t);
  std::vector<std::string> reversed(words.rbegin(), words.rend() - 1);
  try {
    app.parse(reversed);
  } catch (const CLI::ParseError& e) {
    *error = e.what();
    return false;
  }
  return true;
}

int Receive(const std::string& root, TransferArgs t) {
  if (const char* original = std::getenv("SSH_ORIGINAL_COMMAND")) {
    if (!t.block.empty()) {
      std::cerr << "snapledger-replica: transfer arguments come from the primary, not the "
                   "forced command\n";
      return 2;
    }
    std::string error;
    if (!ParseOriginalCommand(original, t, &error)) {
      std::cerr << "snapledger-replica: refused command: " << error << "\n";
      return 2;
    }
  }
  ReceiveRequest request;
  request.block = t.block;
  if (!t.parent.empty()) request.parent = t.parent;
  request.epoch = t.epoch;
  if (!t.head_hash.empty()) request.announced = ChainHead{t.head_seq, t.head_hash, 0};
  if (absl::Status st = ValidateReceiveRequest(request); !st.ok()) {
    std::cerr << "snapledger-replica: " << st.message() << "\n";
    return 2;
  }
  BtrfsPtr btrfs = Btrfs::Linux();
  BlockReceiver receiver(*btrfs, root);
  FdSource stdin_source(UniqueFd(::dup(STDIN_FILENO)), "stdin");
  auto result = receiver.Receive(request, stdin_source);
  if (!result.ok()) {
    std::cerr << "snapledger-replica: receive " << t.block << " refused: "
              << result.status().message() << "\n";
    return absl::IsDataLoss(result.status()) ? 3 : 1;
  }
  std::cout << "{\"block\":\"" << result->block.name << "\",\"seq\":" << result->head.head.seq
            << ",\"hash\":\"" << result->head.head.hash
            << "\",\"events_verified\":" << result->events_verified
            << ",\"prefix_bytes_shared\":" << result->prefix_bytes_shared
            << ",\"prefix_bytes_compared\":" << result->prefix_bytes_compared
            << ",\"already_held\":" << (result->already_held ? "true" : "false") << "}\n";
  return 0;
}

}  // namespace
}  // namespace snapledger

int main(int argc, char** argv) {
  CLI::App app{"snapledger-replica: the replica side of snapledger", "snapledger-replica"};
  app.require_subcommand(1);
  std::string root;
  snapledger::TransferArgs transfer;
  auto* receive = app.add_subcommand(
      "receive", "receive one block on stdin (btrfs send stream), verify it, promote it");
  receive->add_option("--root", root, "the replica's ledger root on btrfs")->required();
  snapledger::AddTransferOptions(*receive, transfer);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (receive->parsed()) return snapledger::Receive(root, transfer);
  return 2;
}
