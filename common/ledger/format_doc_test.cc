// Keeps docs/FORMAT.md true: its worked example must be what the code computes, and its
// verification recipe (jq, sed, sha256sum) must accept a ledger snapledger wrote and reject a
// tampered one.
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/base/posix_file.h"
#include "common/ledger/event_log.h"
#include "common/testing/temp_dir.h"

#ifndef SNAPLEDGER_SOURCE_DIR
#error "SNAPLEDGER_SOURCE_DIR must be defined"
#endif

namespace snapledger {
namespace {

std::string DocSection(const std::string& begin, const std::string& end) {
  auto doc = ReadFileToString(std::string(SNAPLEDGER_SOURCE_DIR) + "/docs/FORMAT.md");
  EXPECT_TRUE(doc.ok()) << doc.status();
  size_t b = doc->find(begin), e = doc->find(end);
  EXPECT_NE(b, std::string::npos);
  EXPECT_NE(e, std::string::npos);
  std::string section = doc->substr(b + begin.size(), e - b - begin.size());
  size_t fence = section.find("```");
  size_t code = section.find('\n', fence) + 1;
  return section.substr(code, section.rfind("```") - code);
}

struct ShellRun {
  int exit_code;
  std::string output;
};

ShellRun RunShell(const std::string& dir, const std::string& script) {
  std::string path = dir + "/recipe.sh";
  std::ofstream(path) << script;
  std::string cmd = absl::StrCat("cd '", dir, "' && bash recipe.sh 2>&1");
  FILE* p = ::popen(cmd.c_str(), "r");
  ShellRun r{-1, ""};
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) r.output.append(buf, n);
  int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(FormatDoc, WorkedExampleIsWhatTheCodeComputes) {
  std::vector<std::string> lines = absl::StrSplit(
      DocSection("<!-- example:begin -->", "<!-- example:end -->"), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u);
  std::string prev(kGenesisHash);
  for (const std::string& line : lines) {
    auto ev = ParseEventLine(line);
    ASSERT_TRUE(ev.ok()) << ev.status();
    EXPECT_EQ(ev->prev, prev);
    std::string hash;
    std::string encoded = EncodeEventLine(ev->seq, ev->ts, prev, ev->body, &hash);
    EXPECT_EQ(encoded, line + "\n");
    EXPECT_EQ(hash, ev->hash);
    prev = hash;
  }
}

TEST(FormatDoc, RecipeVerifiesALedgerWeWroteAndCatchesTampering) {
  if (std::system("command -v jq >/dev/null && command -v sha256sum >/dev/null") != 0)
    GTEST_SKIP() << "jq or sha256sum is not installed (scripts/install-deps.sh installs them)";
  testing::TempDir dir;
  std::string head;
  {
    auto log = EventLog::Create(dir.path(), 1);
    ASSERT_TRUE(log.ok());
    std::vector<std::string> bodies = {
        R"({"event":"bridge_created","bridge":"br-int","host":"compute-1"})",
        R"({"event":"port_created","port":"tap3f9c2a1b-4e","vlan":101,"note":"quote \" and \\ and tab \t"})",
        R"({"event":"port_moved","port":"tap3f9c2a1b-4e","from_vlan":101,"to_vlan":205,"host":"Grüße-节点"})",
        R"({"z":1.5,"a":[true,false,null],"m":{"y":-0.25,"x":1e3}})",
    };
    for (int i = 0; i < 3; ++i)
      for (const auto& b : bodies) ASSERT_TRUE((*log)->Append(b).ok());
    head = (*log)->Head().head.hash;
  }
  std::string recipe = DocSection("<!-- recipe:begin -->", "<!-- recipe:end -->");
  ShellRun ok = RunShell(dir.path(), recipe);
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  EXPECT_EQ(ok.output, absl::StrCat("OK 12 events, head ", head, "\n"));

  std::string text = *ReadFileToString(dir.Sub("events.jsonl"));
  size_t pos = text.find("br-int");
  text[pos] = 'B';
  ASSERT_TRUE(WriteFileAtomic(dir.Sub("events.jsonl"), text).ok());
  ShellRun bad = RunShell(dir.path(), recipe);
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_EQ(bad.output, "line 1: hash mismatch\n");
}

}  // namespace
}  // namespace snapledger
