#include "common/index/feature_hash_embedder.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/base/status_macros.h"
#include "common/ledger/canonical_json.h"

namespace snapledger {
namespace {

constexpr uint64_t kFnvOffsetBasis = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

constexpr uint64_t FnvAppend(uint64_t h, std::string_view bytes) {
  for (char c : bytes) {
    h ^= static_cast<unsigned char>(c);
    h *= kFnvPrime;
  }
  return h;
}

constexpr uint64_t FnvAppendByte(uint64_t h, char c) {
  return (h ^ static_cast<unsigned char>(c)) * kFnvPrime;
}

// MurmurHash3's 64-bit finaliser. FNV-1a alone is a poor bucket function for small
// dimensions: the low k bits of an FNV-1a hash depend only on the low k bits of each input
// byte, so with 16 buckets "a" (0x61) and "q" (0x71) would always collide.
constexpr uint64_t Fmix64(uint64_t k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  k ^= k >> 33;
  return k;
}

// This Abseil build has its own string_view type; StrCat needs one.
inline absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

enum Kind : int { kKey = 0, kValue = 1, kToken = 2, kGram = 3 };
constexpr std::array<std::string_view, 4> kPrefix = {"k:", "kv:", "t:", "g:"};
constexpr std::array<double, 4> kWeight = {0.5, 1.0, 1.0, 0.5};
// The FNV state after each kind's prefix, so a feature hashes only its variable part.
constexpr std::array<uint64_t, 4> kPrefixState = {
    FnvAppend(kFnvOffsetBasis, kPrefix[0]), FnvAppend(kFnvOffsetBasis, kPrefix[1]),
    FnvAppend(kFnvOffsetBasis, kPrefix[2]), FnvAppend(kFnvOffsetBasis, kPrefix[3])};

constexpr std::array<char, 256> MakeLowerTable() {
  std::array<char, 256> t{};
  for (int i = 0; i < 256; ++i) t[i] = static_cast<char>(i >= 'A' && i <= 'Z' ? i - 'A' + 'a' : i);
  return t;
}
constexpr std::array<char, 256> kLower = MakeLowerTable();

constexpr std::array<bool, 256> MakeTokenTable() {
  std::array<bool, 256> t{};
  for (int i = 0; i < 256; ++i)
    t[i] = (i >= '0' && i <= '9') || (i >= 'a' && i <= 'z') || (i >= 'A' && i <= 'Z') || i >= 0x80;
  return t;
}
constexpr std::array<bool, 256> kTokenByte = MakeTokenTable();

inline char Lower(char c) { return kLower[static_cast<unsigned char>(c)]; }
inline bool IsTokenByte(char c) { return kTokenByte[static_cast<unsigned char>(c)]; }
inline bool IsTextSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// Sums signed feature weights into `acc` (dimension = mask + 1). The hot path.
class VectorSink {
 public:
  VectorSink(double* acc, uint64_t mask) : acc_(acc), mask_(mask) {}

  void Emit(Kind kind, std::string_view a, std::string_view b = {}, std::string_view c = {}) {
    uint64_t h = FnvAppend(FnvAppend(FnvAppend(kPrefixState[kind], a), b), c);
    Add(Fmix64(h), kWeight[kind]);
  }
  void EmitGram(char x, char y, char z) {
    uint64_t h = FnvAppendByte(FnvAppendByte(FnvAppendByte(kPrefixState[kGram], x), y), z);
    Add(Fmix64(h), kWeight[kGram]);
  }

 private:
  void Add(uint64_t h, double weight) { acc_[h & mask_] += (h >> 63) ? -weight : weight; }

  double* acc_;
  uint64_t mask_;
};

// Records every feature with its text; for BodyFeatures / TextFeatures.
class ListSink {
 public:
  explicit ListSink(int dimension) : dimension_(dimension) {}

  void Emit(Kind kind, std::string_view a, std::string_view b = {}, std::string_view c = {}) {
    Record(absl::StrCat(Av(kPrefix[kind]), Av(a), Av(b), Av(c)), kWeight[kind]);
  }
  void EmitGram(char x, char y, char z) {
    Record(absl::StrCat(Av(kPrefix[kGram]), std::string{x, y, z}), kWeight[kGram]);
  }
  std::vector<HashedFeature> Take() { return std::move(features_); }

 private:
  void Record(std::string text, double weight) {
    uint64_t h = FeatureHashEmbedder::FeatureHash(text);
    features_.push_back(
        {std::move(text), weight, h, static_cast<int>(h & (dimension_ - 1)), (h >> 63) ? -1 : 1});
  }

  int dimension_;
  std::vector<HashedFeature> features_;
};

// "t:T" for every word token T of `lowered`, each followed by "g:G" for the 3-grams G of
// "<" T ">" (a token of n bytes has n of them) unless T is longer than 3 bytes and has a
// digit. Such tokens are identifiers (UUID parts, tap names, datapath ids): their grams
// match other identifiers only by chance, and at 128 dimensions that noise cost more
// nearest-neighbour and query precision on generated OVS histories than the grams gained.
template <typename Sink>
void EmitTokens(Sink& sink, std::string_view lowered) {
  const char* p = lowered.data();
  const char* end = p + lowered.size();
  while (p < end) {
    if (!IsTokenByte(*p)) {
      ++p;
      continue;
    }
    const char* start = p;
    bool digit = false;
    for (; p < end && IsTokenByte(*p); ++p) digit |= (*p >= '0' && *p <= '9');
    size_t n = p - start;
    sink.Emit(kToken, std::string_view(start, n));
    if (n > 3 && digit) continue;
    if (n == 1) {
      sink.EmitGram('<', start[0], '>');
      continue;
    }
    sink.EmitGram('<', start[0], start[1]);
    for (size_t i = 0; i + 2 < n; ++i) sink.EmitGram(start[i], start[i + 1], start[i + 2]);
    sink.EmitGram(start[n - 2], start[n - 1], '>');
  }
}

// A strict, allocation-light scanner over one JSON object that emits the rule's features
// as it goes (no DOM). Buffers are reused across bodies.
template <typename Sink>
class BodyWalker {
 public:
  explicit BodyWalker(Sink& sink) : sink_(sink) {}

  absl::Status Walk(std::string_view text) {
    text_ = text;
    pos_ = 0;
    path_.clear();
    SkipSpace();
    if (!At('{')) return Error("expected '{' (a body is a JSON object)");
    RETURN_IF_ERROR(Object(1));
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected data after the object");
    return absl::OkStatus();
  }

 private:
  bool At(char c) const { return pos_ < text_.size() && text_[pos_] == c; }

  void SkipSpace() {
    while (pos_ < text_.size()) {
      char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') return;
      ++pos_;
    }
  }

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(Av(what), " at byte ", pos_));
  }

  // At '{'. Every member: "k:P", then its value's features.
  absl::Status Object(int depth) {
    if (depth > kMaxBodyDepth)
      return Error(absl::StrCat("nesting deeper than ", kMaxBodyDepth, " levels"));
    ++pos_;
    SkipSpace();
    if (At('}')) {
      ++pos_;
      return absl::OkStatus();
    }
    while (true) {
      if (!At('"')) return Error("expected a string key");
      size_t saved = path_.size();
      if (saved != 0) path_.push_back('.');
      RETURN_IF_ERROR(String(&path_));
      sink_.Emit(kKey, path_);
      SkipSpace();
      if (!At(':')) return Error("expected ':'");
      ++pos_;
      SkipSpace();
      RETURN_IF_ERROR(Value(depth));
      path_.resize(saved);
      SkipSpace();
      if (At('}')) {
        ++pos_;
        return absl::OkStatus();
      }
      if (!At(',')) return Error("expected ',' or '}'");
      ++pos_;
      SkipSpace();
    }
  }

  // At '['. Elements share the array's path.
  absl::Status Array(int depth) {
    if (depth > kMaxBodyDepth)
      return Error(absl::StrCat("nesting deeper than ", kMaxBodyDepth, " levels"));
    ++pos_;
    SkipSpace();
    if (At(']')) {
      ++pos_;
      return absl::OkStatus();
    }
    while (true) {
      RETURN_IF_ERROR(Value(depth));
      SkipSpace();
      if (At(']')) {
        ++pos_;
        return absl::OkStatus();
      }
      if (!At(',')) return Error("expected ',' or ']'");
      ++pos_;
      SkipSpace();
    }
  }

  absl::Status Value(int depth) {
    if (pos_ >= text_.size()) return Error("unexpected end of input, expected a value");
    char c = text_[pos_];
    switch (c) {
      case '{':
        return Object(depth + 1);
      case '[':
        return Array(depth + 1);
      case '"':
        value_.clear();
        RETURN_IF_ERROR(String(&value_));
        Scalar(value_, /*tokens=*/true);
        return absl::OkStatus();
      case 't':
        return Literal("true");
      case 'f':
        return Literal("false");
      case 'n':
        return Literal("null");
      default:
        if (c == '-' || (c >= '0' && c <= '9')) return Number();
        return Error("expected a value");
    }
  }

  void Scalar(std::string_view lowered, bool tokens) {
    sink_.Emit(kValue, path_, "=", lowered);
    if (tokens) EmitTokens(sink_, lowered);
  }

  absl::Status Literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return Error("invalid literal");
    pos_ += word.size();
    Scalar(word, /*tokens=*/false);
    return absl::OkStatus();
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  absl::Status Number() {
    size_t start = pos_;
    if (At('-')) ++pos_;
    if (At('0')) {
      ++pos_;
    } else if (Digits() == 0) {
      return Error("invalid number");
    }
    if (At('.')) {
      ++pos_;
      if (Digits() == 0) return Error("invalid number: no digits after '.'");
    }
    if (At('e') || At('E')) {
      ++pos_;
      if (At('+') || At('-')) ++pos_;
      if (Digits() == 0) return Error("invalid number: no digits in the exponent");
    }
    value_.assign(text_.substr(start, pos_ - start));
    for (char& ch : value_) ch = Lower(ch);
    Scalar(value_, /*tokens=*/true);
    return absl::OkStatus();
  }

  size_t Digits() {
    size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    return pos_ - start;
  }

  // At '"'. Appends the decoded, ASCII-lowercased contents to *out.
  absl::Status String(std::string* out) {
    ++pos_;
    while (true) {
      size_t run = pos_;
      while (pos_ < text_.size()) {
        unsigned char c = text_[pos_];
        if (c == '"' || c == '\\' || c < 0x20) break;
        ++pos_;
      }
      size_t old_size = out->size();
      out->resize(old_size + (pos_ - run));
      char* dest = out->data() + old_size;
      for (size_t i = run; i < pos_; ++i) *dest++ = Lower(text_[i]);
      if (pos_ >= text_.size()) return Error("unterminated string");
      char c = text_[pos_];
      if (c == '"') {
        ++pos_;
        return absl::OkStatus();
      }
      if (c != '\\') return Error("unescaped control character in string");
      RETURN_IF_ERROR(Escape(out));
    }
  }

  // At '\\'.
  absl::Status Escape(std::string* out) {
    if (pos_ + 1 >= text_.size()) return Error("unterminated string");
    char e = text_[pos_ + 1];
    char decoded;
    switch (e) {
      case '"':
        decoded = '"';
        break;
      case '\\':
        decoded = '\\';
        break;
      case '/':
        decoded = '/';
        break;
      case 'b':
        decoded = '\b';
        break;
      case 'f':
        decoded = '\f';
        break;
      case 'n':
        decoded = '\n';
        break;
      case 'r':
        decoded = '\r';
        break;
      case 't':
        decoded = '\t';
        break;
      case 'u':
        return UnicodeEscape(out);
      default:
        return Error("invalid escape in string");
    }
    out->push_back(decoded);
    pos_ += 2;
    return absl::OkStatus();
  }

  // At "\\u": one code point, or a surrogate pair as two escapes; appended as UTF-8 (ASCII
  // letters lowercased).
  absl::Status UnicodeEscape(std::string* out) {
    ASSIGN_OR_RETURN(uint32_t cp, Hex4());
    if (cp >= 0xDC00 && cp <= 0xDFFF) return Error("unpaired low surrogate in \\u escape");
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (text_.substr(pos_, 2) != "\\u") return Error("unpaired high surrogate in \\u escape");
      ASSIGN_OR_RETURN(uint32_t low, Hex4());
      if (low < 0xDC00 || low > 0xDFFF) return Error("invalid low surrogate in \\u escape");
      cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
    }
    AppendUtf8(cp, out);
    return absl::OkStatus();
  }

  // At "\\uXXXX"; consumes it.
  absl::StatusOr<uint32_t> Hex4() {
    if (pos_ + 6 > text_.size()) return Error("truncated \\u escape");
    uint32_t v = 0;
    for (size_t i = pos_ + 2; i < pos_ + 6; ++i) {
      char h = text_[i];
      uint32_t d;
      if (h >= '0' && h <= '9') {
        d = h - '0';
      } else if (h >= 'a' && h <= 'f') {
        d = h - 'a' + 10;
      } else if (h >= 'A' && h <= 'F') {
        d = h - 'A' + 10;
      } else {
        return Error("invalid hex digit in \\u escape");
      }
      v = v * 16 + d;
    }
    pos_ += 6;
    return v;
  }

  static void AppendUtf8(uint32_t cp, std::string* out) {
    if (cp < 0x80) {
      out->push_back(Lower(static_cast<char>(cp)));
    } else if (cp < 0x800) {
      out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  Sink& sink_;
  std::string_view text_;
  size_t pos_ = 0;
  std::string path_;   // dotted, lowercased path of the member being read
  std::string value_;  // decoded, lowercased scalar
};

template <typename Sink>
void WalkText(Sink& sink, std::string_view text) {
  std::string lowered(text);
  for (char& c : lowered) c = Lower(c);
  size_t i = 0;
  while (i < lowered.size()) {
    while (i < lowered.size() && IsTextSpace(lowered[i])) ++i;
    size_t start = i;
    while (i < lowered.size() && !IsTextSpace(lowered[i])) ++i;
    std::string_view word(lowered.data() + start, i - start);
    size_t eq = word.find('=');
    if (eq != std::string_view::npos && eq > 0) {
      sink.Emit(kValue, word.substr(0, eq), "=", word.substr(eq + 1));
      // The field name is not a value word: events do not tokenise their keys.
      std::fill(lowered.begin() + start, lowered.begin() + start + eq + 1, ' ');
    }
  }
  EmitTokens(sink, lowered);
}

// Divides by the Euclidean norm (computed in double) and rounds to float; zeros stay zeros.
// The weights are multiples of 1/2, so the sums in `acc` are exact and independent of
// summation order.
void Normalize(const double* acc, int dimension, float* out) {
  double sum = 0;
  for (int i = 0; i < dimension; ++i) sum += acc[i] * acc[i];
  if (sum == 0) {
    std::fill(out, out + dimension, 0.0f);
    return;
  }
  double norm = std::sqrt(sum);
  for (int i = 0; i < dimension; ++i) out[i] = static_cast<float>(acc[i] / norm);
}

bool ValidDimension(int d) {
  return d >= FeatureHashEmbedder::kMinDimension && d <= FeatureHashEmbedder::kMaxDimension &&
         (d & (d - 1)) == 0;
}

}  // namespace

FeatureHashEmbedder::FeatureHashEmbedder(FeatureHashOptions options)
    : dimension_(options.dimension) {
  if (!ValidDimension(dimension_)) {
    std::fprintf(stderr, "FeatureHashEmbedder: invalid dimension %d\n", dimension_);
    std::abort();
  }
}

absl::StatusOr<std::unique_ptr<FeatureHashEmbedder>> FeatureHashEmbedder::Create(
    FeatureHashOptions options) {
  if (!ValidDimension(options.dimension)) {
    return absl::InvalidArgumentError(absl::StrCat("feature-hash embedder: dimension ",
                                                   options.dimension, " is not a power of two in [",
                                                   kMinDimension, ", ", kMaxDimension, "]"));
  }
  return std::make_unique<FeatureHashEmbedder>(options);
}

std::string FeatureHashEmbedder::Id() const {
  return absl::StrCat(Av(kRuleVersion), "/dim=", dimension_);
}

uint64_t FeatureHashEmbedder::FeatureHash(std::string_view feature) {
  return Fmix64(FnvAppend(kFnvOffsetBasis, feature));
}

absl::Status FeatureHashEmbedder::EmbedEvents(absl::Span<const std::string_view> bodies,
                                              std::vector<float>* out) {
  out->resize(bodies.size() * dimension_);
  std::vector<double> acc(dimension_);
  VectorSink sink(acc.data(), dimension_ - 1);
  BodyWalker<VectorSink> walker(sink);
  for (size_t i = 0; i < bodies.size(); ++i) {
    std::fill(acc.begin(), acc.end(), 0.0);
    if (absl::Status st = walker.Walk(bodies[i]); !st.ok())
      return absl::InvalidArgumentError(absl::StrCat("body ", i, ": ", st.message()));
    Normalize(acc.data(), dimension_, out->data() + i * dimension_);
  }
  return absl::OkStatus();
}

absl::Status FeatureHashEmbedder::EmbedText(std::string_view text, std::vector<float>* out) {
  std::vector<double> acc(dimension_);
  VectorSink sink(acc.data(), dimension_ - 1);
  WalkText(sink, text);
  out->resize(dimension_);
  Normalize(acc.data(), dimension_, out->data());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<HashedFeature>> FeatureHashEmbedder::BodyFeatures(
    std::string_view body) const {
  ListSink sink(dimension_);
  BodyWalker<ListSink> walker(sink);
  RETURN_IF_ERROR(walker.Walk(body));
  return sink.Take();
}

std::vector<HashedFeature> FeatureHashEmbedder::TextFeatures(std::string_view text) const {
  ListSink sink(dimension_);
  WalkText(sink, text);
  return sink.Take();
}

}  // namespace snapledger
