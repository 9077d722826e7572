// FeatureHashEmbedder: the default embedder of the derived similarity index. Deterministic,
// local, no model: it hashes features of an event body (field names, field=value pairs, word
// tokens and character 3-grams of values) into a fixed number of signed buckets and
// L2-normalises the result. Events that share fields, values and words end up close in cosine
// similarity; free query text ("port_vlan_changed compute-003 br-int", "vlan=17") uses the
// same tokens and lands near the events that contain them.
//
// The rule ("feature-hash-v1") is specified exactly in docs/EMBEDDING.md, with a worked test
// vector, so that any third party can reimplement it bit for bit. In short:
//   - walk the body's JSON object; for every member at dotted path P (keys ASCII-lowercased,
//     joined by '.'; array elements share their array's path) emit "k:P" (weight 0.5); for
//     every scalar at P with text V emit "kv:P=V" (weight 1.0), where V is a string's decoded
//     contents or a number's / literal's JSON text, ASCII-lowercased; for strings and numbers
//     also each word token T of V (maximal runs of ASCII letters, digits and bytes >= 0x80) as
//     "t:T" (weight 1.0) and, unless T is longer than 3 bytes and has a digit (an
//     identifier), each 3-gram G of "<" T ">" as "g:G" (weight 0.5);
//   - hash each feature's bytes with FNV-1a 64 (standard offset basis and prime), then the
//     MurmurHash3 fmix64 finaliser; bucket = low log2(D) bits, sign = -1 if bit 63 is set;
//   - sum in double, divide by the Euclidean norm, round to float. No features: all zeros.
//
// Bodies are read by a small strict JSON scanner (no DOM): any RFC 8259 object is accepted
// (insignificant whitespace too), at most kMaxBodyDepth levels deep. It does not check UTF-8
// validity, duplicate keys or canonical form; the ledger did that when it stored the body.
// Features do not depend on key order or whitespace, only on the number spelling, which is
// canonical in stored bodies.
//
// Thread safety: immutable after construction; all methods may be called concurrently.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/index/embedder.h"

namespace snapledger {

struct FeatureHashOptions {
  int dimension = 128;  // a power of two in [16, 4096]
};

// One hashed feature, for documentation, debugging and tests (see Features()).
struct HashedFeature {
  std::string text;  // e.g. "kv:bridge=br-int"
  double weight;     // before the sign is applied
  uint64_t hash;     // FeatureHash(text)
  int bucket;        // hash & (dimension - 1)
  int sign;          // +1 or -1
};

class FeatureHashEmbedder final : public Embedder {
 public:
  static constexpr std::string_view kRuleVersion = "feature-hash-v1";
  static constexpr int kMinDimension = 16;
  static constexpr int kMaxDimension = 4096;

  // Aborts if options.dimension is invalid; use Create() for configured values.
  explicit FeatureHashEmbedder(FeatureHashOptions options = {});
  // InvalidArgument unless options.dimension is a power of two in [16, 4096].
  static absl::StatusOr<std::unique_ptr<FeatureHashEmbedder>> Create(FeatureHashOptions options);

  // "feature-hash-v1/dim=<D>".
  std::string Id() const override;
  int Dimension() const override { return dimension_; }
  // Stateless: any number of threads may embed at once.
  int MaxConcurrency() const override { return 64; }

  // Errors: InvalidArgument "body <i>: <what> at byte <offset>" for a body that is not a
  // well-formed JSON object (nothing after the object but whitespace).
  absl::Status EmbedEvents(absl::Span<const std::string_view> bodies,
                           std::vector<float>* out) override;
  // Free text: every whitespace-separated word of the form field=value (non-empty field)
  // gives "kv:field=value"; every word token of the whole text gives "t:" and "g:" features.
  // Never fails.
  absl::Status EmbedText(std::string_view text, std::vector<float>* out) override;

  // The features of a body / of query text in the order the rule emits them, with their
  // hashes and buckets under this embedder's dimension. Slow; for docs, debugging and tests.
  absl::StatusOr<std::vector<HashedFeature>> BodyFeatures(std::string_view body) const;
  std::vector<HashedFeature> TextFeatures(std::string_view text) const;

  // FNV-1a 64 of `feature`, then fmix64: the hash the rule applies to every feature text.
  static uint64_t FeatureHash(std::string_view feature);

 private:
  int dimension_;
};

}  // namespace snapledger
