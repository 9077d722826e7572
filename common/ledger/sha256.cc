// OpenSSL 3 deprecates the SHA256_* functions in favour of EVP. They are used anyway: the chain
// hashes every event line (~400 bytes) on its own, and EVP's provider dispatch costs ~80 ns per
// digest there, a quarter of the hashing; the same SHA-NI code runs underneath (bench/README.md,
// the verify benchmark).
#define OPENSSL_SUPPRESS_DEPRECATED
#include "common/ledger/sha256.h"

#include <openssl/sha.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace snapledger {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

// The two hex digits of every byte value, so that a digest is written a byte (two
// characters) at a time.
constexpr auto kHexPairs = [] {
  std::array<char, 512> t{};
  for (int b = 0; b < 256; ++b) {
    t[2 * b] = kHexDigits[b >> 4];
    t[2 * b + 1] = kHexDigits[b & 0xf];
  }
  return t;
}();

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

}  // namespace

Sha256::Sha256() : ctx_(std::make_unique<SHA256_CTX>()) { Reset(); }

Sha256::~Sha256() = default;

void Sha256::Reset() {
  if (SHA256_Init(ctx_.get()) != 1) std::abort();
}

void Sha256::Update(std::string_view bytes) {
  if (SHA256_Update(ctx_.get(), bytes.data(), bytes.size()) != 1) std::abort();
}

Digest Sha256::Finish() {
  Digest d;
  if (SHA256_Final(d.data(), ctx_.get()) != 1) std::abort();
  return d;
}

Digest Sha256::Of(std::string_view bytes) {
  thread_local Sha256 hasher;
  hasher.Reset();
  hasher.Update(bytes);
  return hasher.Finish();
}

void ToHex(const Digest& d, char* out) {
  for (size_t i = 0; i < d.size(); ++i) std::memcpy(out + 2 * i, &kHexPairs[2 * d[i]], 2);
}

std::string ToHex(const Digest& d) {
  std::string s(64, '0');
  ToHex(d, s.data());
  return s;
}

bool FromHex(std::string_view hex, Digest* out) {
  if (hex.size() != 64) return false;
  for (size_t i = 0; i < 32; ++i) {
    int hi = HexValue(hex[2 * i]), lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    (*out)[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

bool IsLowerHex64(std::string_view s) {
  // Sixteen characters at a time (SSE2 on x86-64, NEON on arm64, plain code elsewhere): a
  // character is '0'-'9' when c - '0' < 10 and 'a'-'f' when c - 'a' < 6, as unsigned bytes.
  // Every line of the log carries two hashes, and checking them a byte at a time (even
  // branch-free, through a table) was a fifth of chain verification's CPU.
  using Bytes = unsigned char __attribute__((vector_size(16)));
  if (s.size() != 64) return false;
  Bytes bad{};
  for (size_t i = 0; i < 64; i += 16) {
    Bytes c;
    std::memcpy(&c, s.data() + i, sizeof c);
    // Byte lanes wrap as unsigned; a comparison yields 0 or -1 per lane (signed), cast back.
    Bytes digit = (Bytes)(c - '0' < 10);
    Bytes letter = (Bytes)(c - 'a' < 6);
    bad |= ~(digit | letter);
  }
  uint64_t halves[2];
  std::memcpy(halves, &bad, sizeof halves);
  return (halves[0] | halves[1]) == 0;
}

}  // namespace snapledger
