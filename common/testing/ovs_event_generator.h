// Realistic Open vSwitch port-agent events, for benchmarks, demos and tests.
//
// OvsEventGenerator simulates the OVS agents of a small cloud: hosts, their bridges
// ("br-int", "br-tun", and "br-ex" on network nodes), the ports on those bridges, and the
// neutron networks the ports belong to (each network has a host-local VLAN tag, as the OVS
// agent assigns them). Every call to Next() changes that simulated state and returns one
// event describing the change as a JSON object body:
//
//   bridge_created / bridge_deleted    a bridge appears or (when it has no ports) goes away
//   port_created / port_deleted        a port is plugged or unplugged
//   port_vlan_changed                  a port is rebound to another network: old_vlan is the
//                                      tag it had, new_vlan the new network's local tag
//   port_link_changed                  link_state "up" <-> "down" (never to the same state)
//   port_mtu_changed                   old_mtu is the port's MTU, new_mtu a different one
//
// The events are consistent: a port is deleted, moved or changed only while it exists on the
// bridge the event names, a bridge is deleted only when empty, and "old_*" fields state the
// port's current value. Bodies average about 200 bytes and are already canonical (sorted
// keys, no whitespace, ASCII only), so CanonicalizeBody returns them unchanged.
//
// Deterministic: the same seed and options give the same events on every platform (its own
// PRNG, no std:: distributions, no clock, no I/O). Not thread-safe; use one per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace snapledger {

struct OvsEventGeneratorOptions {
  int compute_hosts = 12;   // hosts with br-int and br-tun
  int network_hosts = 2;    // hosts that also have br-ex (router gateway ports)
  int networks = 24;        // neutron networks a port can belong to
  int ports_per_host = 40;  // ports hover around this many per host
};

class OvsEventGenerator {
 public:
  explicit OvsEventGenerator(uint64_t seed, const OvsEventGeneratorOptions& options = {});
  ~OvsEventGenerator();
  OvsEventGenerator(const OvsEventGenerator&) = delete;
  OvsEventGenerator& operator=(const OvsEventGenerator&) = delete;

  // The next event's body: one JSON object, canonical form, no trailing newline.
  std::string Next();
  // The next `count` bodies.
  std::vector<std::string> Generate(size_t count);

  // The number of ports that currently exist across all hosts (for tests).
  size_t PortCount() const;

  class State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace snapledger
