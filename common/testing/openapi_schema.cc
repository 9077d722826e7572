#include "common/testing/openapi_schema.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"

namespace snapledger {
namespace {

using nlohmann::json;

// Deep enough for any real request body; stops a schema that refers to itself without
// consuming the value (A: anyOf [$ref A]) from recursing forever.
constexpr int kMaxDepth = 512;

const std::vector<std::string_view>& ValidationKeywords() {
  static const auto* kKeywords = new std::vector<std::string_view>{"$ref",
                                                                   "type",
                                                                   "nullable",
                                                                   "format",
                                                                   "properties",
                                                                   "required",
                                                                   "additionalProperties",
                                                                   "items",
                                                                   "minItems",
                                                                   "maxItems",
                                                                   "uniqueItems",
                                                                   "enum",
                                                                   "anyOf",
                                                                   "oneOf",
                                                                   "allOf",
                                                                   "minimum",
                                                                   "maximum",
                                                                   "exclusiveMinimum",
                                                                   "exclusiveMaximum",
                                                                   "minLength",
                                                                   "maxLength"};
  return *kKeywords;
}

const std::vector<std::string_view>& AnnotationKeywords() {
  static const auto* kKeywords = new std::vector<std::string_view>{
      "description", "default",   "example",      "examples", "deprecated",   "title",
      "readOnly",    "writeOnly", "externalDocs", "xml",      "discriminator"};
  return *kKeywords;
}

bool Contains(const std::vector<std::string_view>& list, std::string_view s) {
  for (std::string_view k : list) {
    if (k == s) return true;
  }
  return false;
}

std::string EscapePointerToken(std::string_view token) {
  return absl::StrReplaceAll(std::string(token), {{"~", "~0"}, {"/", "~1"}});
}

std::string TypeName(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "object";
    case json::value_t::array:
      return "array";
    case json::value_t::string:
      return "string";
    case json::value_t::boolean:
      return "boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "integer";
    case json::value_t::number_float:
      return "number";
    default:
      return "unsupported value";
  }
}

// A short rendering of a value for messages.
std::string Excerpt(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 80) s = absl::StrCat(s.substr(0, 77), "...");
  return s;
}

// Numbers compared as long double: exact for every 64-bit integer on x86-64.
long double AsLongDouble(const json& v) {
  if (v.is_number_unsigned()) return static_cast<long double>(v.get<uint64_t>());
  if (v.is_number_integer()) return static_cast<long double>(v.get<int64_t>());
  return static_cast<long double>(v.get<double>());
}

size_t CodePoints(std::string_view s) {
  size_t n = 0;
  for (char c : s) {
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  }
  return n;
}

bool IsUuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !absl::ascii_isxdigit(static_cast<unsigned char>(s[i]))) {
      return false;
    }
  }
  return true;
}

// Why a value does not conform (or, with schema_error, why the schema cannot be used).
struct Failure {
  bool schema_error = false;
  std::string instance;     // JSON pointer into the value
  std::string schema_path;  // where the failing keyword is, "#/components/schemas/X/type"
  std::string message;
  bool explained_alternatives = false;  // message already says which anyOf/oneOf it is from

  size_t Depth() const {
    return static_cast<size_t>(std::count(instance.begin(), instance.end(), '/'));
  }
};
using Result = std::optional<Failure>;

class Checker {
 public:
  explicit Checker(const json& document) : document_(document) {}

  Result Check(const json& v, const json& s, const std::string& inst, const std::string& path,
               int depth) const {
    if (depth > kMaxDepth) return SchemaError(inst, path, "schema recursion too deep");
    if (s.is_boolean()) {
      if (s.get<bool>()) return std::nullopt;
      return Fail(inst, path, "no value is allowed here");
    }
    if (!s.is_object()) return SchemaError(inst, path, "a schema must be an object");
    if (auto ref = s.find("$ref"); ref != s.end()) return CheckRef(v, *ref, inst, path, depth);
    if (Result r = CheckKeywordsKnown(s, inst, path)) return r;

    bool nullable = false;
    if (auto it = s.find("nullable"); it != s.end()) {
      if (!it->is_boolean()) return SchemaError(inst, path + "/nullable", "must be a boolean");
      nullable = it->get<bool>();
    }
    const bool null_only = nullable && CountValidationKeywords(s) == 1;
    if (v.is_null()) {
      if (nullable || CountValidationKeywords(s) == 0) return std::nullopt;
      if (s.contains("type")) {
        return Fail(inst, path + "/type",
                    absl::StrCat("expected ",
                                 s["type"].is_string() ? s["type"].get<std::string>() : "a value",
                                 ", got null"));
      }
    } else if (null_only) {
      return Fail(inst, path + "/nullable", absl::StrCat("expected null, got ", TypeName(v)));
    }
    if (v.is_number_float() && !std::isfinite(v.get<double>())) {
      return Fail(inst, path, "not a finite number (JSON has no NaN or Infinity)");
    }

    using Step = Result (Checker::*)(const json&, const json&, const std::string&,
                                     const std::string&, int) const;
    for (Step step :
         {&Checker::CheckType, &Checker::CheckEnum, &Checker::CheckFormat, &Checker::CheckNumber,
          &Checker::CheckString, &Checker::CheckArray, &Checker::CheckObject}) {
      if (Result r = (this->*step)(v, s, inst, path, depth)) return r;
    }
    return CheckCombinators(v, s, inst, path, depth);
  }

 private:
  static Failure Fail(const std::string& inst, const std::string& path, std::string message) {
    return Failure{false, inst, path, std::move(message), false};
  }
  static Failure SchemaError(const std::string& inst, const std::string& path,
                             std::string message) {
    return Failure{true, inst, path, std::move(message), false};
  }

  static int CountValidationKeywords(const json& s) {
    int n = 0;
    for (const auto& [key, unused] : s.items()) n += Contains(ValidationKeywords(), key);
    return n;
  }

  Result CheckKeywordsKnown(const json& s, const std::string& inst, const std::string& path) const {
    for (const auto& [key, unused] : s.items()) {
      if (Contains(ValidationKeywords(), key) || Contains(AnnotationKeywords(), key) ||
          absl::StartsWith(key, "x-")) {
        continue;
      }
      return SchemaError(inst, path, absl::StrCat("unsupported schema keyword \"", key, "\""));
    }
    return std::nullopt;
  }

  Result CheckRef(const json& v, const json& ref, const std::string& inst, const std::string& path,
                  int depth) const {
    if (!ref.is_string() || !absl::StartsWith(ref.get<std::string>(), "#")) {
      return SchemaError(inst, path + "/$ref", "only local references (\"#/...\") are supported");
    }
    const std::string target = ref.get<std::string>();
    const json* resolved = Resolve(target);
    if (resolved == nullptr) {
      return SchemaError(inst, path + "/$ref", absl::StrCat("dangling reference ", target));
    }
    return Check(v, *resolved, inst, target, depth + 1);
  }

  Result CheckType(const json& v, const json& s, const std::string& inst, const std::string& path,
                   int) const {
    auto it = s.find("type");
    if (it == s.end()) return std::nullopt;
    if (!it->is_string()) return SchemaError(inst, path + "/type", "must be a string");
    const std::string type = it->get<std::string>();
    bool ok;
    if (type == "object") {
      ok = v.is_object();
    } else if (type == "array") {
      ok = v.is_array();
    } else if (type == "string") {
      ok = v.is_string();
    } else if (type == "boolean") {
      ok = v.is_boolean();
    } else if (type == "integer") {
      ok = v.is_number_integer();
    } else if (type == "number") {
      ok = v.is_number();
    } else {
      return SchemaError(inst, path + "/type", absl::StrCat("unknown type \"", type, "\""));
    }
    if (ok) return std::nullopt;
    return Fail(inst, path + "/type", absl::StrCat("expected ", type, ", got ", TypeName(v)));
  }

  Result CheckEnum(const json& v, const json& s, const std::string& inst, const std::string& path,
                   int) const {
    auto it = s.find("enum");
    if (it == s.end()) return std::nullopt;
    if (!it->is_array()) return SchemaError(inst, path + "/enum", "must be an array");
    for (const json& allowed : *it) {
      if (allowed == v) return std::nullopt;
    }
    return Fail(inst, path + "/enum",
                absl::StrCat("expected one of ", Excerpt(*it), ", got ", Excerpt(v)));
  }

  Result CheckFormat(const json& v, const json& s, const std::string& inst, const std::string& path,
                     int) const {
    auto it = s.find("format");
    if (it == s.end()) return std::nullopt;
    if (!it->is_string()) return SchemaError(inst, path + "/format", "must be a string");
    const std::string format = it->get<std::string>();
    const std::string where = path + "/format";
    if (v.is_number_integer()) {
      struct Bounds {
        std::string_view name;
        long double min, max;
      };
      static constexpr Bounds kIntegerFormats[] = {
          {"uint", 0, UINT64_MAX},         {"usize", 0, UINT64_MAX},
          {"uint64", 0, UINT64_MAX},       {"uint32", 0, UINT32_MAX},
          {"uint16", 0, UINT16_MAX},       {"uint8", 0, UINT8_MAX},
          {"int64", INT64_MIN, INT64_MAX}, {"int32", INT32_MIN, INT32_MAX}};
      for (const Bounds& b : kIntegerFormats) {
        if (b.name != format) continue;
        long double x = AsLongDouble(v);
        if (x < b.min || x > b.max) {
          return Fail(inst, where, absl::StrCat(v.dump(), " is out of range for ", format));
        }
      }
    } else if (v.is_number_float() && format == "float") {
      if (std::fabs(v.get<double>()) > FLT_MAX) {
        return Fail(inst, where, absl::StrCat(v.dump(), " is out of range for float"));
      }
    } else if (v.is_string() && format == "uuid") {
      if (!IsUuid(v.get<std::string>())) {
        return Fail(inst, where, absl::StrCat(Excerpt(v), " is not a UUID"));
      }
    }
    return std::nullopt;
  }

  Result CheckNumber(const json& v, const json& s, const std::string& inst, const std::string& path,
                     int) const {
    if (!v.is_number()) return std::nullopt;
    const long double x = AsLongDouble(v);
    for (const std::string keyword : {"minimum", "maximum"}) {
      auto it = s.find(keyword);
      if (it == s.end()) continue;
      const std::string where = absl::StrCat(path, "/", keyword);
      if (!it->is_number()) return SchemaError(inst, where, "must be a number");
      const bool is_min = keyword == "minimum";
      const bool exclusive =
          s.value(is_min ? "exclusiveMinimum" : "exclusiveMaximum", json(false)) == json(true);
      const long double bound = AsLongDouble(*it);
      const bool ok =
          is_min ? (exclusive ? x > bound : x >= bound) : (exclusive ? x < bound : x <= bound);
      if (!ok) {
        return Fail(inst, where,
                    absl::StrCat(v.dump(), " is ", is_min ? "below the" : "above the",
                                 exclusive ? " exclusive " : " ", keyword, " ", it->dump()));
      }
    }
    return std::nullopt;
  }

  Result CheckString(const json& v, const json& s, const std::string& inst, const std::string& path,
                     int) const {
    if (!v.is_string()) return std::nullopt;
    const size_t length = CodePoints(v.get_ref<const std::string&>());
    if (auto it = s.find("minLength"); it != s.end()) {
      if (!it->is_number_unsigned()) return SchemaError(inst, path + "/minLength", "bad value");
      if (length < it->get<uint64_t>()) {
        return Fail(inst, path + "/minLength",
                    absl::StrCat("string of length ", length, " is shorter than ", it->dump()));
      }
    }
    if (auto it = s.find("maxLength"); it != s.end()) {
      if (!it->is_number_unsigned()) return SchemaError(inst, path + "/maxLength", "bad value");
      if (length > it->get<uint64_t>()) {
        return Fail(inst, path + "/maxLength",
                    absl::StrCat("string of length ", length, " is longer than ", it->dump()));
      }
    }
    return std::nullopt;
  }

  Result CheckArray(const json& v, const json& s, const std::string& inst, const std::string& path,
                    int depth) const {
    if (!v.is_array()) return std::nullopt;
    if (auto it = s.find("minItems"); it != s.end()) {
      if (!it->is_number_unsigned()) return SchemaError(inst, path + "/minItems", "bad value");
      if (v.size() < it->get<uint64_t>()) {
        return Fail(
            inst, path + "/minItems",
            absl::StrCat("array of ", v.size(), " items, at least ", it->dump(), " required"));
      }
    }
    if (auto it = s.find("maxItems"); it != s.end()) {
      if (!it->is_number_unsigned()) return SchemaError(inst, path + "/maxItems", "bad value");
      if (v.size() > it->get<uint64_t>()) {
        return Fail(
            inst, path + "/maxItems",
            absl::StrCat("array of ", v.size(), " items, at most ", it->dump(), " allowed"));
      }
    }
    if (s.value("uniqueItems", json(false)) == json(true)) {
      for (size_t i = 0; i < v.size(); ++i) {
        for (size_t j = i + 1; j < v.size(); ++j) {
          if (v[i] == v[j]) {
            return Fail(absl::StrCat(inst, "/", j), path + "/uniqueItems",
                        absl::StrCat("duplicate of item ", i));
          }
        }
      }
    }
    if (auto it = s.find("items"); it != s.end()) {
      for (size_t i = 0; i < v.size(); ++i) {
        if (Result r = Check(v[i], *it, absl::StrCat(inst, "/", i), path + "/items", depth + 1)) {
          return r;
        }
      }
    }
    return std::nullopt;
  }

  Result CheckObject(const json& v, const json& s, const std::string& inst, const std::string& path,
                     int depth) const {
    if (!v.is_object()) return std::nullopt;
    const json empty = json::object();
    auto props_it = s.find("properties");
    const json& props = props_it == s.end() ? empty : *props_it;
    if (!props.is_object()) return SchemaError(inst, path + "/properties", "must be an object");
    if (auto it = s.find("required"); it != s.end()) {
      if (!it->is_array()) return SchemaError(inst, path + "/required", "must be an array");
      for (const json& name : *it) {
        if (!name.is_string()) return SchemaError(inst, path + "/required", "must be strings");
        if (!v.contains(name.get<std::string>())) {
          return Fail(
              inst, path + "/required",
              absl::StrCat("required property \"", name.get<std::string>(), "\" is missing"));
        }
      }
    }
    auto additional_it = s.find("additionalProperties");
    for (const auto& [key, member] : v.items()) {
      const std::string member_inst = absl::StrCat(inst, "/", EscapePointerToken(key));
      if (auto p = props.find(key); p != props.end()) {
        const std::string member_path = absl::StrCat(path, "/properties/", EscapePointerToken(key));
        if (Result r = Check(member, *p, member_inst, member_path, depth + 1)) return r;
        continue;
      }
      if (additional_it == s.end()) continue;
      if (additional_it->is_boolean() && !additional_it->get<bool>()) {
        return Fail(member_inst, path + "/additionalProperties",
                    absl::StrCat("property \"", key, "\" is not allowed"));
      }
      if (Result r = Check(member, *additional_it, member_inst, path + "/additionalProperties",
                           depth + 1)) {
        return r;
      }
    }
    return std::nullopt;
  }

  Result CheckCombinators(const json& v, const json& s, const std::string& inst,
                          const std::string& path, int depth) const {
    if (auto it = s.find("allOf"); it != s.end()) {
      if (!it->is_array()) return SchemaError(inst, path + "/allOf", "must be an array");
      for (size_t i = 0; i < it->size(); ++i) {
        if (Result r = Check(v, (*it)[i], inst, absl::StrCat(path, "/allOf/", i), depth + 1)) {
          return r;
        }
      }
    }
    for (const std::string keyword : {"anyOf", "oneOf"}) {
      auto it = s.find(keyword);
      if (it == s.end()) continue;
      if (Result r = CheckAlternatives(v, *it, keyword, inst, path, depth)) return r;
    }
    return std::nullopt;
  }

  Result CheckAlternatives(const json& v, const json& branches, const std::string& keyword,
                           const std::string& inst, const std::string& path, int depth) const {
    const std::string where = absl::StrCat(path, "/", keyword);
    if (!branches.is_array() || branches.empty()) {
      return SchemaError(inst, where, "must be a non-empty array");
    }
    std::vector<Failure> failures;
    std::vector<size_t> matched;
    for (size_t i = 0; i < branches.size(); ++i) {
      Result r = Check(v, branches[i], inst, absl::StrCat(where, "/", i), depth + 1);
      if (!r) {
        matched.push_back(i);
        if (keyword == "anyOf") return std::nullopt;
        continue;
      }
      if (r->schema_error) return r;
      failures.push_back(std::move(*r));
    }
    if (matched.size() == 1) return std::nullopt;
    if (matched.size() > 1) {
      return Fail(inst, where,
                  absl::StrCat("matches ", matched.size(), " oneOf branches (",
                               absl::StrJoin(matched, ", "), "), exactly one allowed"));
    }
    return NoBranchMatched(std::move(failures), keyword, inst, where);
  }

  // All branches failed. If every branch failed on the value itself (say, each wants another
  // type), list them; otherwise report the branch that got furthest into the value, which
  // is almost always the one the author meant.
  static Failure NoBranchMatched(std::vector<Failure> failures, const std::string& keyword,
                                 const std::string& inst, const std::string& where) {
    size_t best = 0;
    bool all_at_top = true;
    for (size_t i = 0; i < failures.size(); ++i) {
      if (failures[i].instance != inst) all_at_top = false;
      if (failures[i].Depth() > failures[best].Depth()) best = i;
    }
    if (all_at_top) {
      std::vector<std::string> messages;
      for (const Failure& f : failures) {
        if (std::find(messages.begin(), messages.end(), f.message) == messages.end()) {
          messages.push_back(f.message);
        }
      }
      return Fail(inst, where,
                  absl::StrCat("matches none of the ", failures.size(), " ", keyword,
                               " branches: ", absl::StrJoin(messages, "; ")));
    }
    // Only the innermost alternative is explained; the ones around it add length, not help.
    Failure f = std::move(failures[best]);
    if (!f.explained_alternatives) {
      f.message = absl::StrCat(f.message, " (so none of the ", failures.size(), " ", keyword,
                               " branches at ", where, " matched ", inst.empty() ? "(root)" : inst,
                               "; closest: branch ", best, ")");
      f.explained_alternatives = true;
    }
    return f;
  }

  const json* Resolve(const std::string& ref) const {
    try {
      json::json_pointer pointer(ref.substr(1));
      if (!document_.contains(pointer)) return nullptr;
      return &document_.at(pointer);
    } catch (const json::exception&) {
      return nullptr;
    }
  }

  const json& document_;
};

std::string UpperMethod(std::string_view method) {
  return absl::AsciiStrToUpper(std::string(method));
}
std::string LowerMethod(std::string_view method) {
  return absl::AsciiStrToLower(std::string(method));
}

}  // namespace

absl::StatusOr<OpenApiDocument> OpenApiDocument::Load(const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  json document = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (document.is_discarded()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON"));
  }
  auto version = document.find("openapi");
  if (!document.is_object() || version == document.end() || !version->is_string() ||
      !absl::StartsWith(version->get<std::string>(), "3.0")) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not an OpenAPI 3.0 document (no \"openapi\": \"3.0.x\")"));
  }
  return OpenApiDocument(std::move(document));
}

bool OpenApiDocument::HasOperation(std::string_view path_template, std::string_view method) const {
  const json* paths = document_.contains("paths") ? &document_["paths"] : nullptr;
  if (paths == nullptr || !paths->is_object()) return false;
  auto item = paths->find(std::string(path_template));
  return item != paths->end() && item->is_object() && item->contains(LowerMethod(method));
}

absl::StatusOr<std::string> OpenApiDocument::RequestBodySchema(std::string_view path_template,
                                                               std::string_view method) const {
  const std::string op = absl::StrCat(UpperMethod(method), " ", std::string(path_template));
  if (!HasOperation(path_template, method)) {
    return absl::NotFoundError(absl::StrCat("the spec has no operation ", op));
  }
  const std::string pointer =
      absl::StrCat("/paths/", EscapePointerToken(path_template), "/", LowerMethod(method),
                   "/requestBody/content/application~1json/schema");
  if (!document_.contains(json::json_pointer(pointer))) {
    return absl::NotFoundError(
        absl::StrCat("the spec's operation ", op, " has no application/json request body"));
  }
  return absl::StrCat("#", pointer);
}

absl::StatusOr<std::string> OpenApiDocument::ResponseSchema(std::string_view path_template,
                                                            std::string_view method,
                                                            std::string_view status) const {
  const std::string op = absl::StrCat(UpperMethod(method), " ", std::string(path_template));
  if (!HasOperation(path_template, method)) {
    return absl::NotFoundError(absl::StrCat("the spec has no operation ", op));
  }
  const std::string pointer = absl::StrCat(
      "/paths/", EscapePointerToken(path_template), "/", LowerMethod(method), "/responses/",
      EscapePointerToken(std::string(status)), "/content/application~1json/schema");
  if (!document_.contains(json::json_pointer(pointer))) {
    return absl::NotFoundError(absl::StrCat("the spec's operation ", op, " has no ",
                                            std::string(status), " application/json response"));
  }
  return absl::StrCat("#", pointer);
}

absl::Status OpenApiDocument::Validate(const nlohmann::json& value,
                                       std::string_view schema_pointer) const {
  Checker checker(document_);
  const json ref = {{"$ref", std::string(schema_pointer)}};
  Result r = checker.Check(value, ref, "", "", 0);
  if (!r) return absl::OkStatus();
  std::string message =
      absl::StrCat(r->instance.empty() ? "(root)" : r->instance, ": ", r->message, " (at ",
                   r->schema_path.empty() ? std::string(schema_pointer) : r->schema_path, ")");
  if (r->schema_error) {
    return absl::FailedPreconditionError(absl::StrCat("unusable schema: ", message));
  }
  return absl::InvalidArgumentError(message);
}

}  // namespace snapledger
