// The receive command (`snapledger-receive`, replica/receive_main.cc): the one program the
// primary's key may run on a replica, as the forced command of its authorized_keys entry:
//
//   command="/usr/bin/snapledger-receive --root /srv/ledger",restrict ssh-ed25519 AAAA...
//
// sshd passes the primary's requested command in SSH_ORIGINAL_COMMAND; only its transfer
// arguments (--block, --parent, --epoch, --head-seq, --head-hash, --compress) are taken from
// it, parsed without a shell and validated; the root always comes from the forced command.
// With `--compress zstd` stdin is a zstd stream, decompressed before `btrfs receive`.
//
// With `--session` it takes block after block on stdin (common/transport/receive_session.h), so sshd
// starts it once per SSH session rather than once per block.
//
// It is its own small executable, not a subcommand of the daemon's: sshd starts it for every
// session (and, without sessions, every block), and loading the daemon's libraries (gRPC,
// FAISS, ...) took about twice as long as everything else it does before `btrfs receive`
// starts. It links only what receiving needs.
//
// Exit codes: 0 promoted (or already held), 1 error (including a corrupt or truncated
// compressed stream), 2 bad arguments, 3 the block did not verify. Every attempt is appended
// to the receive journal (replica/receive_journal.h), from which the daemon counts metrics.
// On success one JSON line goes to stdout: the block, its head, what verification did and
// where the time went ("seconds": stream, verify, promote, process).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace snapledger {

struct TransferArgs {
  std::string block, parent;
  uint64_t epoch = 0;
  uint64_t head_seq = 0;
  std::string head_hash;
  std::string compress = "none";
  bool session = false;  // --session: block after block on stdin (common/transport/receive_session.h)
};

// Adds --block, --parent, --epoch, --head-seq, --head-hash, --compress and --session to `app`.
void AddTransferOptions(CLI::App& app, TransferArgs& t);

// Parses SSH_ORIGINAL_COMMAND: "snapledger-receive <transfer options>" or
// "snapledger-receive --session" (the program may be
// given by path; "snapledger-replica receive" and "receive" are accepted too, as primaries
// configured before the command had its own executable send them) and nothing else. False
// with `*error` saying why for anything else.
bool ParseOriginalCommand(const std::string& command, TransferArgs& t, std::string* error);

// Parses one request line of a session (the transfer options alone, --session not among
// them). False with `*error` saying why otherwise.
bool ParseRequestLine(const std::string& line, TransferArgs& t, std::string* error);

// Receives one block from stdin into the ledger at `root`; returns the exit code above. When
// SSH_ORIGINAL_COMMAND is set, the transfer arguments come from it and `t` must not carry
// any (a forced command with transfer arguments is refused).
//
// With --session (common/transport/receive_session.h), blocks follow one another on stdin, each a
// request line and a framed stream, each answered with its verdict line and recorded in the
// journal on its own. The exit code is 0 when the input ends between blocks; a block that
// fails ends the session with that block's exit code. A bad request line is refused (2); input
// cut or garbled inside a stream is a transfer failure (1). After a block's verdict, a session
// whose executable has been replaced on disk (an upgrade) exits 0, so that the next block runs
// the new program.
int RunReceiveCommand(const std::string& root, TransferArgs t);

}  // namespace snapledger
