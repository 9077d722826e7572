// The layering rule of docs/ARCHITECTURE.md, checked: every project #include under common/,
// primary/, replica/ and cli/ goes to the file's own layer or to one its layer may use. The
// table is read from the document itself, so the rule is written down once.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/base/posix_file.h"

#ifndef SNAPLEDGER_SOURCE_DIR
#error "SNAPLEDGER_SOURCE_DIR must be defined"
#endif

namespace snapledger {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kProto[] = "proto";
constexpr char kTesting[] = "common/testing";

// layer -> the layers it may use directly.
using LayerTable = std::map<std::string, std::vector<std::string>>;

// Reads the rows between <!-- layers:begin --> and <!-- layers:end -->: "| layer | holds |
// may use, comma separated |".
absl::StatusOr<LayerTable> ParseLayerTable(const std::string& doc) {
  size_t begin = doc.find("<!-- layers:begin -->");
  size_t end = doc.find("<!-- layers:end -->");
  if (begin == std::string::npos || end == std::string::npos || end < begin)
    return absl::InvalidArgumentError("no <!-- layers:begin/end --> table");
  LayerTable table;
  for (absl::string_view line : absl::StrSplit(doc.substr(begin, end - begin), '\n')) {
    if (!absl::StartsWith(line, "| ") || absl::StartsWith(line, "| layer")) continue;
    std::vector<std::string> cells = absl::StrSplit(line, '|');
    if (cells.size() != 5) return absl::InvalidArgumentError(absl::StrCat("malformed row: ", line));
    std::string layer(absl::StripAsciiWhitespace(cells[1]));
    std::vector<std::string>& uses = table[layer];
    for (absl::string_view use : absl::StrSplit(cells[3], ',', absl::SkipWhitespace()))
      uses.emplace_back(absl::StripAsciiWhitespace(use));
  }
  if (table.empty()) return absl::InvalidArgumentError("the layer table is empty");
  return table;
}

// Everything `layer` may use: its own list, and theirs, transitively.
std::set<std::string> Allowed(const LayerTable& table, const std::string& layer) {
  std::set<std::string> seen;
  std::vector<std::string> todo = {layer};
  while (!todo.empty()) {
    std::string next = todo.back();
    todo.pop_back();
    if (!seen.insert(next).second) continue;
    auto it = table.find(next);
    if (it != table.end()) todo.insert(todo.end(), it->second.begin(), it->second.end());
  }
  return seen;
}

// The layer a repository path belongs to: the longest table folder holding it; "proto" for
// the generated gRPC headers; nullopt for anything else (system and third-party headers).
std::optional<std::string> LayerOf(const LayerTable& table, const std::string& path) {
  if (absl::StartsWith(path, "snapledger/v1/") || absl::StartsWith(path, "grpc/health/"))
    return kProto;
  std::optional<std::string> best;
  for (const auto& [layer, uses] : table) {
    if (absl::StartsWith(path, layer + "/") && (!best || layer.size() > best->size())) best = layer;
  }
  if (!best && absl::StartsWith(path, "tests/integration/")) return "tests/integration";
  return best;
}

bool IsRole(const std::string& layer) {
  return layer == "primary" || layer == "replica" || layer == "cli";
}

// One #include the table forbids: "<file>:<line>: <layer> may not include <target>".
std::vector<std::string> CheckFile(const LayerTable& table, const std::string& file,
                                   const std::string& contents) {
  std::vector<std::string> violations;
  std::optional<std::string> layer = LayerOf(table, file);
  if (!layer) return violations;
  bool test = absl::EndsWith(file, "_test.cc");
  std::set<std::string> allowed = Allowed(table, *layer);
  static const std::regex kInclude(R"re(^\s*#\s*include\s*"([^"]+)")re");
  std::istringstream in(contents);
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    std::smatch m;
    if (!std::regex_search(line, m, kInclude)) continue;
    std::string target = m[1].str();
    std::optional<std::string> target_layer = LayerOf(table, target);
    if (!target_layer || allowed.count(*target_layer)) continue;
    if (test && (*target_layer == kTesting || *target_layer == "tests/integration")) continue;
    if (test && IsRole(*layer) && IsRole(*target_layer)) continue;
    // Doubles may use any layer of common/ (not the roles, not tests/integration).
    if (*layer == kTesting && absl::StartsWith(*target_layer, "common/")) continue;
    violations.push_back(
        absl::StrCat(file, ":", number, ": ", *layer, " may not include ", target));
  }
  return violations;
}

LayerTable ReadRealTable() {
  auto doc = ReadFileToString(std::string(SNAPLEDGER_SOURCE_DIR) + "/docs/ARCHITECTURE.md");
  EXPECT_TRUE(doc.ok()) << doc.status();
  if (!doc.ok()) return {};
  auto table = ParseLayerTable(*doc);
  EXPECT_TRUE(table.ok()) << table.status();
  return table.ok() ? *table : LayerTable{};
}

TEST(Layering, EveryIncludeGoesToALayerItMayUse) {
  LayerTable table = ReadRealTable();
  ASSERT_FALSE(table.empty());
  namespace fs = std::filesystem;
  const fs::path root(SNAPLEDGER_SOURCE_DIR);
  std::vector<std::string> violations;
  size_t files = 0;
  for (const char* top : {"common", "primary", "replica", "cli"}) {
    for (const fs::directory_entry& e : fs::recursive_directory_iterator(root / top)) {
      std::string ext = e.path().extension();
      if (!e.is_regular_file() || (ext != ".h" && ext != ".cc")) continue;
      std::string rel = fs::relative(e.path(), root).generic_string();
      auto contents = ReadFileToString(e.path());
      ASSERT_TRUE(contents.ok()) << contents.status();
      ++files;
      for (std::string& v : CheckFile(table, rel, *contents)) violations.push_back(std::move(v));
    }
  }
  EXPECT_GT(files, 100u);
  EXPECT_THAT(violations, IsEmpty());
}

TEST(Layering, EveryFolderOfCommonIsALayer) {
  LayerTable table = ReadRealTable();
  namespace fs = std::filesystem;
  for (const fs::directory_entry& e :
       fs::directory_iterator(fs::path(SNAPLEDGER_SOURCE_DIR) / "common")) {
    if (!e.is_directory()) continue;
    std::string layer = "common/" + e.path().filename().string();
    EXPECT_TRUE(table.count(layer)) << layer << " is not in docs/ARCHITECTURE.md's table";
  }
}

// The checker itself, on a small table.
LayerTable SmallTable() {
  return {{"common/base", {}},
          {"common/ledger", {"common/base"}},
          {"common/index", {"common/ledger"}},
          {"common/rpc", {"common/index", "proto"}},
          {"common/testing", {"common/rpc"}},
          {"primary", {"common/rpc"}},
          {"replica", {"common/rpc"}}};
}

TEST(Layering, AnUpwardIncludeIsAViolation) {
  EXPECT_THAT(CheckFile(SmallTable(), "common/ledger/event_log.cc",
                        "#include \"common/base/clock.h\"\n#include \"common/rpc/x.h\"\n"),
              ElementsAre("common/ledger/event_log.cc:2: common/ledger may not include "
                          "common/rpc/x.h"));
}

TEST(Layering, LayersBelowAreAllowedTransitively) {
  EXPECT_THAT(CheckFile(SmallTable(), "common/rpc/s.cc",
                        "#include \"common/base/clock.h\"\n#include \"snapledger/v1/a.pb.h\"\n"
                        "#include <vector>\n#include \"absl/status/status.h\"\n"),
              IsEmpty());
}

TEST(Layering, ProductionCodeNeverIncludesTesting) {
  EXPECT_THAT(CheckFile(SmallTable(), "primary/daemon.cc", "#include \"common/testing/fake.h\""),
              ElementsAre(HasSubstr("primary may not include common/testing/fake.h")));
  EXPECT_THAT(
      CheckFile(SmallTable(), "primary/daemon_test.cc", "#include \"common/testing/fake.h\""),
      IsEmpty());
}

TEST(Layering, ARoleNeverIncludesAnotherOutsideTests) {
  EXPECT_THAT(CheckFile(SmallTable(), "primary/daemon.cc", "#include \"replica/receiver.h\""),
              ElementsAre(HasSubstr("primary may not include replica/receiver.h")));
  EXPECT_THAT(CheckFile(SmallTable(), "primary/daemon_test.cc", "#include \"replica/receiver.h\""),
              IsEmpty());
}

TEST(Layering, TestingMayUseAnyLayerOfCommonButNoRole) {
  EXPECT_THAT(
      CheckFile(SmallTable(), "common/testing/fake.h",
                "#include \"common/rpc/x.h\"\n#include \"primary/daemon.h\"\n"),
      ElementsAre("common/testing/fake.h:2: common/testing may not include primary/daemon.h"));
}

TEST(Layering, ProtoIsALayerToo) {
  EXPECT_THAT(CheckFile(SmallTable(), "common/index/x.cc", "#include \"snapledger/v1/a.pb.h\""),
              ElementsAre(HasSubstr("common/index may not include snapledger/v1/a.pb.h")));
}

TEST(Layering, TheLongestFolderDecidesTheLayer) {
  EXPECT_EQ(LayerOf(SmallTable(), "common/index/faiss/store.h"), "common/index");
  EXPECT_EQ(LayerOf(SmallTable(), "vendor/thing.h"), std::nullopt);
}

TEST(Layering, AMalformedTableIsAnError) {
  EXPECT_FALSE(ParseLayerTable("no table here").ok());
  EXPECT_FALSE(ParseLayerTable("<!-- layers:begin -->\n| a | b |\n<!-- layers:end -->").ok());
  auto table = ParseLayerTable(
      "<!-- layers:begin -->\n| layer | holds | may use |\n|---|---|---|\n"
      "| common/a | x | |\n| common/b | y | common/a, proto |\n<!-- layers:end -->");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_THAT((*table)["common/b"], ElementsAre("common/a", "proto"));
  EXPECT_THAT((*table)["common/a"], IsEmpty());
}

}  // namespace
}  // namespace snapledger
