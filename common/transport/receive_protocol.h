// The receive protocol: what the replica's receive command (`snapledger-receive`,
// replica/receive_command.h) answers the primary's shipper (primary/block_shipper.h), as typed
// values shared by both ends. The framing of a session's input is receive_session.h.
//
// For every block it is asked for, the command writes one verdict line on stdout (JSON, one
// object, at most kMaxVerdictLine bytes with its '\n'), and a one-block command or a session
// that stops at a failed block exits with the exit code that matches the verdict:
//
//   {"verdict":"received","block":B,"seq":S,"hash":H,"events_verified":N,
//    "prefix_bytes_shared":N,"prefix_bytes_compared":N,"bytes_verified_in_stream":N,
//    "already_held":true|false,
//    "seconds":{"stream":X,"verify":X,"promote":X,"process":X}}             exit 0
//   {"verdict":"transfer_failed","block":B,"error":E}                       exit 1
//   {"verdict":"refused","refusal":R,"block":B,"error":E}                   exit 2
//   {"verdict":"not_verified","block":B,"error":E}                          exit 3
//
// B is the block's name as requested (absent from a failure before any request was read),
// N non-negative integers, X non-negative seconds, E a message for people (at most
// kMaxVerdictError bytes), R one of the refusal names below. A command that fails before it
// can write (killed, or sshd refusing it) leaves only its exit code and stderr; a session that
// ends cleanly (end of input between blocks) writes nothing more and exits 0.
//
// Parsing is strict about what it knows and never throws: the line must be one JSON object
// whose "verdict" is one of the four names, with every member the verdict needs present and of
// its type; a member this version does not know is ignored (so a newer replica may add one).
//
// Pure functions of their arguments; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace snapledger {

// The receive command's exit codes, one per verdict.
enum class ReceiveExit : int {
  kReceived = 0,        // the block was promoted, or was already held
  kTransferFailed = 1,  // the stream was cut or garbled, or the replica failed locally
  kRefused = 2,         // the request was refused before anything was received (ReceiveRefusal)
  kNotVerified = 3,     // the block arrived and did not verify
};

// The verdict's name ("received", "transfer_failed", "refused", "not_verified").
std::string_view ReceiveExitName(ReceiveExit exit);
// The verdict an exit status stands for; nullopt for any other status.
std::optional<ReceiveExit> ReceiveExitFromStatus(int exit_status);

// Why the command refused a request (ReceiveExit::kRefused), as the primary acts on it.
enum class ReceiveRefusal {
  kBadRequest,        // "bad_request": options that do not parse or do not validate (block
                      // names, epoch, announced head, --compress), a request line longer than
                      // kMaxRequestLine, --session with a block's options
  kNotPermitted,      // "not_permitted": SSH_ORIGINAL_COMMAND asks for another program
  kForcedCommand,     // "forced_command": the forced command itself carries transfer options
                      // (the replica's authorized_keys is misconfigured)
  kParentNotHeld,     // "parent_not_held": the delta's parent is not a block held here
  kNewerBlockHeld,    // "newer_block_held": the replica holds a block newer than this one
  kReceiveInProgress  // "receive_in_progress": another receive held the receive lock too long
};

// The refusal's name on the wire (above).
std::string_view ReceiveRefusalName(ReceiveRefusal refusal);
// The refusal named `name`; InvalidArgument naming it otherwise.
absl::StatusOr<ReceiveRefusal> ParseReceiveRefusal(std::string_view name);

// Carries a refusal inside an absl::Status: on the replica from where it is found (the block
// receiver) to the command that writes the verdict; on the primary from the shipper that read
// the verdict to the replica driver that acts on it. `status` (not OK) with `refusal` attached
// as a payload.
absl::Status WithRefusal(absl::Status status, ReceiveRefusal refusal);
// The refusal attached to `status` by WithRefusal, if any.
std::optional<ReceiveRefusal> RefusalOf(const absl::Status& status);

inline constexpr size_t kMaxVerdictLine = 64 << 10;  // with its '\n'
inline constexpr size_t kMaxVerdictError = 4 << 10;

// Text from the other end that is not a parsed verdict (its stderr, a line that is no verdict)
// made safe to log and to carry in a status or a proto string: at most `max` bytes of it (cut
// at a character boundary and marked "..."), every byte that does not begin or continue a
// well-formed UTF-8 character replaced by U+FFFD. Pure.
std::string ForeignText(std::string_view text, size_t max = kMaxVerdictError);

// Where the replica's time went, in seconds (ReceiveTimings, and the command's whole run).
struct ReceiveSeconds {
  double stream = 0;
  double verify = 0;
  double promote = 0;
  double process = 0;
};

// One verdict line. The members after `error` belong to a received block only.
struct ReceiveVerdict {
  ReceiveExit verdict = ReceiveExit::kReceived;
  std::optional<ReceiveRefusal> refusal;  // exactly when verdict is kRefused
  std::string block;                      // empty: no request had been read
  std::string error;                      // a failure's message; empty when received
  uint64_t seq = 0;
  std::string hash;
  uint64_t events_verified = 0;
  uint64_t prefix_bytes_shared = 0;
  uint64_t prefix_bytes_compared = 0;
  uint64_t bytes_verified_in_stream = 0;
  bool already_held = false;
  ReceiveSeconds seconds;

  bool received() const { return verdict == ReceiveExit::kReceived; }
};

// A failure verdict (`verdict` is not kReceived; `refusal` given exactly with kRefused).
ReceiveVerdict FailedVerdict(ReceiveExit verdict, std::string block, std::string error,
                             std::optional<ReceiveRefusal> refusal = std::nullopt);

// The verdict line, without its '\n'. An error longer than kMaxVerdictError is cut (at a
// character boundary, marked with "..."); bytes that are not UTF-8 are replaced. Seconds that
// are negative or not finite are written as 0. The line always parses back with
// ParseReceiveVerdict to the same verdict (error cut as said).
std::string WriteReceiveVerdict(const ReceiveVerdict& verdict);

// Parses one verdict line (without its '\n'). Never throws. InvalidArgument naming what is
// wrong for a line longer than kMaxVerdictLine, one that is not a JSON object, an unknown
// verdict or refusal name, a missing member or a member of the wrong type (a negative or
// fractional count, a string where a number belongs, ...), a refusal on a verdict other than
// "refused" or none on one, or a failure without its error.
absl::StatusOr<ReceiveVerdict> ParseReceiveVerdict(std::string_view line);

}  // namespace snapledger
