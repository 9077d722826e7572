// SHA-256 digests (OpenSSL) and their lowercase hex form.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

struct SHA256state_st;  // OpenSSL's SHA256_CTX

namespace snapledger {

using Digest = std::array<uint8_t, 32>;

// An incremental SHA-256 hasher. Reusable: Reset() starts a new digest without reallocating.
// Not thread-safe; use one per thread. Built on OpenSSL's low-level SHA256_* functions (needs
// OpenSSL or LibreSSL, whose context is `struct SHA256state_st`; they bypass a FIPS provider).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Reset();
  void Update(std::string_view bytes);
  Digest Finish();  // The hasher must be Reset() before the next Update().

  // One-shot digest of `bytes`.
  static Digest Of(std::string_view bytes);

 private:
  std::unique_ptr<SHA256state_st> ctx_;
};

// 64 lowercase hex characters.
std::string ToHex(const Digest& d);
// Writes 64 lowercase hex characters to `out` (which must have room for 64 bytes).
void ToHex(const Digest& d, char* out);
// Parses exactly 64 lowercase hex characters; false otherwise.
bool FromHex(std::string_view hex, Digest* out);
// True if `s` is exactly 64 lowercase hex characters.
bool IsLowerHex64(std::string_view s);

}  // namespace snapledger
