// snapledger-eventgen: prints realistic Open vSwitch port-agent event bodies, one JSON object
// per line, on stdout (for demos: `snapledger-eventgen --count 1000 | snapledger append`).
// The same --seed always prints the same events.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "common/testing/ovs_event_generator.h"

int main(int argc, char** argv) {
  CLI::App app{"Print N realistic OVS port-agent event bodies as JSON lines"};
  uint64_t count = 1000;
  uint64_t seed = 1;
  app.add_option("--count,-n", count, "number of events to print")->capture_default_str();
  app.add_option("--seed,-s", seed, "generator seed")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  snapledger::OvsEventGenerator gen(seed);
  std::string line;
  for (uint64_t i = 0; i < count; ++i) {
    line = gen.Next();
    line.push_back('\n');
    if (std::fwrite(line.data(), 1, line.size(), stdout) != line.size()) {
      std::perror("snapledger-eventgen: write");
      return 1;
    }
  }
  if (std::fflush(stdout) != 0) {
    std::perror("snapledger-eventgen: write");
    return 1;
  }
  return 0;
}
