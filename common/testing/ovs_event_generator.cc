#include "common/testing/ovs_event_generator.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string_view>

namespace snapledger {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kAgent = "ovs-agent";  // neutron-openvswitch-agent
constexpr std::array<int, 4> kMtus = {1450, 1500, 8950, 9000};

// xoshiro256** seeded through splitmix64: fast, and the same sequence on every platform
// (std:: distributions are implementation-defined, so they are not used).
class Prng {
 public:
  explicit Prng(uint64_t seed) {
    for (uint64_t& s : s_) {
      seed += 0x9e3779b97f4a7c15ULL;
      uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      s = z ^ (z >> 31);
    }
  }

  uint64_t Next() {
    uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, n), n > 0 (rejection sampling, no modulo bias).
  uint64_t Below(uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = Next();
    while (x >= limit);
    return x % n;
  }

  template <typename T>
  const T& Pick(const std::vector<T>& v) {
    return v[Below(v.size())];
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

std::string Hex(uint64_t value, int digits) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%0*llx", digits, static_cast<unsigned long long>(value));
  return std::string(buf, digits);
}

// A random (version 4) UUID in its canonical lowercase form.
std::string Uuid(Prng& rng) {
  uint64_t hi = rng.Next(), lo = rng.Next();
  hi = (hi & ~0xf000ULL) | 0x4000ULL;            // version 4
  lo = (lo & ~(0xcULL << 60)) | (0x8ULL << 60);  // RFC 4122 variant
  return Hex(hi >> 32, 8) + "-" + Hex((hi >> 16) & 0xffff, 4) + "-" + Hex(hi & 0xffff, 4) + "-" +
         Hex(lo >> 48, 4) + "-" + Hex(lo & 0xffffffffffffULL, 12);
}

// OpenStack's MAC prefix and three random octets.
std::string Mac(Prng& rng) {
  uint64_t r = rng.Next();
  char buf[18];
  std::snprintf(buf, sizeof buf, "fa:16:3e:%02x:%02x:%02x", static_cast<unsigned>(r & 0xff),
                static_cast<unsigned>((r >> 8) & 0xff), static_cast<unsigned>((r >> 16) & 0xff));
  return buf;
}

struct Port {
  std::string name;      // "tap" / "qvo" / "qr-" / "qg-" + the first 11 chars of iface_id
  std::string iface_id;  // the neutron port UUID
  std::string bridge;
  std::string network_id;
  std::string mac;
  std::string device_owner;
  int ofport = 0;
  int vlan = 0;
  int mtu = 1450;
  bool link_up = true;
};

struct Bridge {
  std::string datapath_id;
  int next_ofport = 1;
  int ports = 0;
};

struct Host {
  std::string name;
  bool network_node = false;
  std::map<std::string, Bridge> bridges;
  std::vector<Port> ports;
  std::map<std::string, int> local_vlan;  // network_id -> host-local VLAN tag
  int next_vlan = 1;
};

// Weighted choice among the events feasible for a host.
enum class Kind {
  kBridgeCreated,
  kBridgeDeleted,
  kPortCreated,
  kPortDeleted,
  kVlanChanged,
  kLinkChanged,
  kMtuChanged
};

}  // namespace

class OvsEventGenerator::State {
 public:
  State(uint64_t seed, const OvsEventGeneratorOptions& options) : rng_(seed), options_(options) {
    for (int i = 0; i < options_.compute_hosts + options_.network_hosts; ++i) {
      Host h;
      h.network_node = i >= options_.compute_hosts;
      char name[40];
      if (h.network_node) {
        std::snprintf(name, sizeof name, "network-%02d.dc1", i - options_.compute_hosts + 1);
      } else {
        std::snprintf(name, sizeof name, "compute-%03d.dc1", i + 1);
      }
      h.name = name;
      hosts_.push_back(std::move(h));
    }
    for (int i = 0; i < std::max(1, options_.networks); ++i) networks_.push_back(Uuid(rng_));
  }

  std::string Next() {
    Host& host = hosts_[rng_.Below(hosts_.size())];
    Json ev = Json::object();
    ev["host"] = host.name;
    ev["agent"] = kAgent;
    switch (Choose(host)) {
      case Kind::kBridgeCreated:
        BridgeCreated(host, ev);
        break;
      case Kind::kBridgeDeleted:
        BridgeDeleted(host, ev);
        break;
      case Kind::kPortCreated:
        PortCreated(host, ev);
        break;
      case Kind::kPortDeleted:
        PortDeleted(host, ev);
        break;
      case Kind::kVlanChanged:
        VlanChanged(host, ev);
        break;
      case Kind::kLinkChanged:
        LinkChanged(host, ev);
        break;
      case Kind::kMtuChanged:
        MtuChanged(host, ev);
        break;
    }
    return ev.dump();
  }

  size_t PortCount() const {
    size_t n = 0;
    for (const Host& h : hosts_) n += h.ports.size();
    return n;
  }

 private:
  // The bridges a host has when its agent is fully set up, in creation order.
  std::vector<std::string> WantedBridges(const Host& h) const {
    if (h.network_node) return {"br-int", "br-ex", "br-tun"};
    return {"br-int", "br-tun"};
  }

  Kind Choose(const Host& h) {
    if (!h.bridges.contains("br-int")) return Kind::kBridgeCreated;
    int target = std::max(1, options_.ports_per_host);
    int n = static_cast<int>(h.ports.size());
    std::vector<std::pair<Kind, int>> weights;
    bool missing_bridge = false, deletable_bridge = false;
    for (const std::string& b : WantedBridges(h)) {
      auto it = h.bridges.find(b);
      if (it == h.bridges.end())
        missing_bridge = true;
      else if (b != "br-int" && it->second.ports == 0)
        deletable_bridge = true;
    }
    if (missing_bridge) weights.push_back({Kind::kBridgeCreated, 40});
    if (deletable_bridge) weights.push_back({Kind::kBridgeDeleted, 1});
    weights.push_back({Kind::kPortCreated, n < target ? 300 : 150});
    if (n > 0) {
      weights.push_back({Kind::kPortDeleted, n > target ? 300 : 150});
      weights.push_back({Kind::kLinkChanged, 350});
      if (networks_.size() > 1) weights.push_back({Kind::kVlanChanged, 150});
      weights.push_back({Kind::kMtuChanged, 50});
    }
    int total = 0;
    for (auto& [k, w] : weights) total += w;
    int r = static_cast<int>(rng_.Below(total));
    for (auto& [k, w] : weights) {
      if (r < w) return k;
      r -= w;
    }
    return weights.back().first;
  }

  int LocalVlan(Host& h, const std::string& network_id) {
    auto [it, inserted] = h.local_vlan.try_emplace(network_id, h.next_vlan);
    if (inserted) h.next_vlan = h.next_vlan % 4094 + 1;
    return it->second;
  }

  void BridgeCreated(Host& h, Json& ev) {
    for (const std::string& b : WantedBridges(h)) {
      if (h.bridges.contains(b)) continue;
      Bridge& bridge = h.bridges[b];
      bridge.datapath_id = Hex(rng_.Next() & 0xffffffffffffULL, 16);
      ev["event"] = "bridge_created";
      ev["bridge"] = b;
      ev["datapath_id"] = bridge.datapath_id;
      ev["datapath_type"] = "system";
      ev["fail_mode"] = "secure";
      return;
    }
  }

  void BridgeDeleted(Host& h, Json& ev) {
    for (const std::string& b : WantedBridges(h)) {
      auto it = h.bridges.find(b);
      if (b == "br-int" || it == h.bridges.end() || it->second.ports != 0) continue;
      ev["event"] = "bridge_deleted";
      ev["bridge"] = b;
      ev["datapath_id"] = it->second.datapath_id;
      ev["reason"] = "agent resync";
      h.bridges.erase(it);
      return;
    }
  }

  void PortCreated(Host& h, Json& ev) {
    Port p;
    p.iface_id = Uuid(rng_);
    bool gateway = h.network_node && h.bridges.contains("br-ex") && rng_.Below(4) == 0;
    std::string prefix;
    std::string owner;
    if (gateway) {
      p.bridge = "br-ex";
      prefix = "qg-";
      owner = "network:router_gateway";
    } else {
      p.bridge = "br-int";
      if (h.network_node) {
        bool dhcp = rng_.Below(2) == 0;
        prefix = dhcp ? "tap" : "qr-";
        owner = dhcp ? "network:dhcp" : "network:router_interface";
      } else {
        prefix = rng_.Below(3) == 0 ? "qvo" : "tap";
        owner = "compute:nova";
      }
    }
    p.name = prefix + p.iface_id.substr(0, 11);
    p.network_id = rng_.Pick(networks_);
    p.mac = Mac(rng_);
    Bridge& bridge = h.bridges[p.bridge];
    p.ofport = bridge.next_ofport++;
    ++bridge.ports;
    p.vlan = LocalVlan(h, p.network_id);
    p.mtu = gateway ? 1500 : 1450;
    ev["event"] = "port_created";
    ev["bridge"] = p.bridge;
    ev["port"] = p.name;
    ev["iface_id"] = p.iface_id;
    ev["network_id"] = p.network_id;
    ev["mac"] = p.mac;
    ev["ofport"] = p.ofport;
    ev["vlan"] = p.vlan;
    ev["mtu"] = p.mtu;
    ev["device_owner"] = owner;
    p.device_owner = owner;
    h.ports.push_back(std::move(p));
  }

  Port& PickPort(Host& h, size_t* index) {
    *index = rng_.Below(h.ports.size());
    return h.ports[*index];
  }

  // A uniformly chosen element of `v` different from `current` (`v` has at least two
  // distinct elements, or `current` is not in it).
  template <typename T>
  T OtherThan(const std::vector<T>& v, const T& current) {
    auto it = std::find(v.begin(), v.end(), current);
    if (it == v.end() || v.size() < 2) return rng_.Pick(v);
    size_t c = it - v.begin();
    return v[(c + 1 + rng_.Below(v.size() - 1)) % v.size()];
  }

  void PortIdentity(const Port& p, Json& ev) {
    ev["bridge"] = p.bridge;
    ev["port"] = p.name;
    ev["ofport"] = p.ofport;
  }

  void PortDeleted(Host& h, Json& ev) {
    static const std::vector<std::string> kCompute = {"instance terminated", "port unbound",
                                                      "instance migrated"};
    static const std::vector<std::string> kRouter = {"router interface removed", "router deleted"};
    static const std::vector<std::string> kGateway = {"router gateway cleared"};
    static const std::vector<std::string> kDhcp = {"dhcp agent rescheduled", "subnet deleted"};
    size_t i;
    Port& p = PickPort(h, &i);
    ev["event"] = "port_deleted";
    PortIdentity(p, ev);
    ev["iface_id"] = p.iface_id;
    const auto& reasons = p.device_owner == "network:router_interface" ? kRouter
                          : p.device_owner == "network:router_gateway" ? kGateway
                          : p.device_owner == "network:dhcp"           ? kDhcp
                                                                       : kCompute;
    ev["reason"] = rng_.Pick(reasons);
    --h.bridges[p.bridge].ports;
    h.ports[i] = std::move(h.ports.back());
    h.ports.pop_back();
  }

  void VlanChanged(Host& h, Json& ev) {
    static const std::vector<std::string> kReasons = {"network rebind", "segmentation update",
                                                      "port binding changed"};
    size_t i;
    Port& p = PickPort(h, &i);
    std::string network = OtherThan(networks_, p.network_id);
    int new_vlan = LocalVlan(h, network);
    ev["event"] = "port_vlan_changed";
    PortIdentity(p, ev);
    ev["old_vlan"] = p.vlan;
    ev["new_vlan"] = new_vlan;
    ev["network_id"] = network;
    ev["reason"] = rng_.Pick(kReasons);
    p.network_id = network;
    p.vlan = new_vlan;
  }

  void LinkChanged(Host& h, Json& ev) {
    static const std::vector<std::string> kDown = {"carrier lost", "admin down", "instance paused"};
    static const std::vector<std::string> kUp = {"carrier restored", "admin up",
                                                 "instance resumed"};
    size_t i;
    Port& p = PickPort(h, &i);
    p.link_up = !p.link_up;
    ev["event"] = "port_link_changed";
    PortIdentity(p, ev);
    ev["link_state"] = p.link_up ? "up" : "down";
    ev["reason"] = rng_.Pick(p.link_up ? kUp : kDown);
  }

  void MtuChanged(Host& h, Json& ev) {
    size_t i;
    Port& p = PickPort(h, &i);
    int mtu = OtherThan(std::vector<int>(kMtus.begin(), kMtus.end()), p.mtu);
    ev["event"] = "port_mtu_changed";
    PortIdentity(p, ev);
    ev["old_mtu"] = p.mtu;
    ev["new_mtu"] = mtu;
    p.mtu = mtu;
  }

  Prng rng_;
  const OvsEventGeneratorOptions options_;
  std::vector<Host> hosts_;
  std::vector<std::string> networks_;
};

OvsEventGenerator::OvsEventGenerator(uint64_t seed, const OvsEventGeneratorOptions& options)
    : state_(std::make_unique<State>(seed, options)) {}
OvsEventGenerator::~OvsEventGenerator() = default;

std::string OvsEventGenerator::Next() { return state_->Next(); }

std::vector<std::string> OvsEventGenerator::Generate(size_t count) {
  std::vector<std::string> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) out.push_back(Next());
  return out;
}

size_t OvsEventGenerator::PortCount() const { return state_->PortCount(); }

}  // namespace snapledger
