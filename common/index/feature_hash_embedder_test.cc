#include "common/index/feature_hash_embedder.h"

#include <gtest/gtest.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/testing/ovs_event_generator.h"

#ifndef SNAPLEDGER_SOURCE_DIR
#error "SNAPLEDGER_SOURCE_DIR must be defined"
#endif

namespace snapledger {
namespace {

std::vector<float> Embed(Embedder& e, std::string_view body) {
  std::vector<float> v;
  std::string_view bodies[] = {body};
  absl::Status st = e.EmbedEvents(bodies, &v);
  EXPECT_TRUE(st.ok()) << st << " for " << body;
  return v;
}

std::vector<float> EmbedQuery(Embedder& e, std::string_view text) {
  std::vector<float> v;
  EXPECT_TRUE(e.EmbedText(text, &v).ok());
  return v;
}

double Dot(absl::Span<const float> a, absl::Span<const float> b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double{a[i]} * b[i];
  return s;
}

std::vector<std::string> FeatureTexts(const std::vector<HashedFeature>& features) {
  std::vector<std::string> texts;
  for (const HashedFeature& f : features) texts.push_back(f.text);
  return texts;
}

// An independent FNV-1a 64 and fmix64, to pin FeatureHash to the documented functions.
uint64_t ReferenceFnv1a64(std::string_view s) {
  uint64_t h = 14695981039346656037ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}
uint64_t ReferenceFmix64(uint64_t k) {
  k = (k ^ (k >> 33)) * 0xff51afd7ed558ccdULL;
  k = (k ^ (k >> 33)) * 0xc4ceb9fe1a85ec53ULL;
  return k ^ (k >> 33);
}

TEST(FeatureHashEmbedder, IdNamesTheRuleAndTheDimension) {
  EXPECT_EQ(FeatureHashEmbedder().Id(), "feature-hash-v1/dim=128");
  EXPECT_EQ(FeatureHashEmbedder().Dimension(), 128);
  EXPECT_EQ(FeatureHashEmbedder({.dimension = 16}).Id(), "feature-hash-v1/dim=16");
}

TEST(FeatureHashEmbedder, CreateAcceptsOnlyPowersOfTwoFrom16To4096) {
  for (int d : {16, 32, 64, 128, 256, 512, 1024, 2048, 4096}) {
    auto e = FeatureHashEmbedder::Create({.dimension = d});
    ASSERT_TRUE(e.ok()) << d << ": " << e.status();
    EXPECT_EQ((*e)->Dimension(), d);
  }
  for (int d : {-16, 0, 1, 8, 15, 17, 100, 129, 8192}) {
    auto e = FeatureHashEmbedder::Create({.dimension = d});
    ASSERT_FALSE(e.ok()) << d;
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(e.status().message().find(absl::StrCat("dimension ", d)), absl::string_view::npos);
  }
}

TEST(FeatureHashEmbedder, FeatureHashIsFnv1a64ThenFmix64) {
  EXPECT_EQ(ReferenceFnv1a64(""), 0xcbf29ce484222325ULL);  // the published test vectors
  EXPECT_EQ(ReferenceFnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(ReferenceFnv1a64("foobar"), 0x85944171f73967e8ULL);
  for (std::string_view s : {"", "a", "k:bridge", "kv:bridge=br-int", "g:<br"}) {
    EXPECT_EQ(FeatureHashEmbedder::FeatureHash(s), ReferenceFmix64(ReferenceFnv1a64(s))) << s;
  }
}

TEST(FeatureHashEmbedder, FeaturesFollowTheDocumentedRule) {
  FeatureHashEmbedder e({.dimension = 16});
  auto f = e.BodyFeatures(R"({"A":{"b":[1,"X y",true]},"e":""})");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(FeatureTexts(*f), (std::vector<std::string>{"k:a", "k:a.b", "kv:a.b=1", "t:1", "g:<1>",
                                                        "kv:a.b=x y", "t:x", "g:<x>", "t:y",
                                                        "g:<y>", "kv:a.b=true", "k:e", "kv:e="}));
  auto g = e.BodyFeatures(R"({"port":"tap5e-3F","mtu":1.5E3})");
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(FeatureTexts(*g),
            (std::vector<std::string>{"k:port", "kv:port=tap5e-3f", "t:tap5e", "t:3f", "g:<3f",
                                      "g:3f>", "k:mtu", "kv:mtu=1.5e3", "t:1", "g:<1>", "t:5e3",
                                      "g:<5e", "g:5e3", "g:e3>"}));
  std::map<std::string_view, double> weight = {{"k:", 0.5}, {"kv", 1.0}, {"t:", 1.0}, {"g:", 0.5}};
  for (const HashedFeature& h : *g) {
    EXPECT_EQ(h.weight, weight[std::string_view(h.text).substr(0, 2)]) << h.text;
    EXPECT_EQ(h.hash, FeatureHashEmbedder::FeatureHash(h.text));
    EXPECT_EQ(h.bucket, static_cast<int>(h.hash % 16));
    EXPECT_EQ(h.sign, (h.hash >> 63) ? -1 : 1);
  }
}

TEST(FeatureHashEmbedder, VectorIsTheNormalisedSignedSumOfFeatures) {
  FeatureHashEmbedder e({.dimension = 32});
  std::string body = R"({"bridge":"br-int","event":"port_created","ofport":7})";
  auto features = e.BodyFeatures(body);
  ASSERT_TRUE(features.ok());
  std::vector<double> acc(32);
  for (const HashedFeature& f : *features) acc[f.bucket] += f.sign * f.weight;
  double norm = 0;
  for (double x : acc) norm += x * x;
  norm = std::sqrt(norm);
  std::vector<float> v = Embed(e, body);
  ASSERT_EQ(v.size(), 32u);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(v[i], static_cast<float>(acc[i] / norm)) << i;
}

TEST(FeatureHashEmbedder, SameBodyGivesTheSameUnitVector) {
  FeatureHashEmbedder e;
  std::vector<std::string> bodies = OvsEventGenerator(7).Generate(200);
  std::vector<std::string_view> views(bodies.begin(), bodies.end());
  std::vector<float> all;
  ASSERT_TRUE(e.EmbedEvents(views, &all).ok());
  ASSERT_EQ(all.size(), 200u * 128);
  for (size_t i = 0; i < bodies.size(); ++i) {
    absl::Span<const float> v(all.data() + i * 128, 128);
    EXPECT_NEAR(Dot(v, v), 1.0, 1e-5) << bodies[i];
    EXPECT_EQ(Embed(e, bodies[i]), std::vector<float>(v.begin(), v.end()));
    EXPECT_EQ(Embed(*FeatureHashEmbedder::Create({}).value(), bodies[i]),
              std::vector<float>(v.begin(), v.end()));
  }
}

TEST(FeatureHashEmbedder, EmptyObjectIsTheZeroVector) {
  FeatureHashEmbedder e({.dimension = 16});
  EXPECT_EQ(Embed(e, "{}"), std::vector<float>(16, 0.0f));
  std::vector<float> v;
  ASSERT_TRUE(e.EmbedText(" ,;- ", &v).ok());
  EXPECT_EQ(v, std::vector<float>(16, 0.0f));
}

TEST(FeatureHashEmbedder, EmptyBatchWritesNothing) {
  FeatureHashEmbedder e;
  std::vector<float> v(5, 1.0f);
  ASSERT_TRUE(e.EmbedEvents({}, &v).ok());
  EXPECT_TRUE(v.empty());
}

TEST(FeatureHashEmbedder, DimensionsFoldTheSameFeatureHashes) {
  std::string body = OvsEventGenerator(3).Next();
  FeatureHashEmbedder small({.dimension = 16}), large({.dimension = 4096});
  auto fs = small.BodyFeatures(body);
  auto fl = large.BodyFeatures(body);
  ASSERT_TRUE(fs.ok() && fl.ok());
  ASSERT_EQ(fs->size(), fl->size());
  for (size_t i = 0; i < fs->size(); ++i) {
    EXPECT_EQ((*fs)[i].hash, (*fl)[i].hash);
    EXPECT_EQ((*fs)[i].bucket, (*fl)[i].bucket % 16);
  }
  EXPECT_EQ(Embed(small, body).size(), 16u);
  EXPECT_EQ(Embed(large, body).size(), 4096u);
  EXPECT_NEAR(Dot(Embed(large, body), Embed(large, body)), 1.0, 1e-5);
}

TEST(FeatureHashEmbedder, WhitespaceAndEscapesDoNotChangeTheVector) {
  FeatureHashEmbedder e;
  std::string canonical = R"({"a":[1,{"b":"x\"y"}],"c":"Grüße"})";
  EXPECT_EQ(Embed(e, canonical), Embed(e,
                                       " {\n\t\"a\" : [ 1 , { \"b\":\"x\\\"y\" } ] ,"
                                       " \"c\" : \"Gr\\u00fc\\u00DFe\" }\r\n"));
  EXPECT_EQ(Embed(e, R"({"e":"😀"})"), Embed(e, R"({"e":"\ud83d\ude00"})"));
  EXPECT_EQ(Embed(e, R"({"p":"a/b"})"), Embed(e, R"({"p":"a\/b"})"));
}

TEST(FeatureHashEmbedder, MalformedBodiesAreRejectedWithTheirByteOffset) {
  FeatureHashEmbedder e;
  struct Case {
    std::string body;
    std::string message;
  };
  std::string deep = std::string(64, '[');
  std::vector<Case> cases = {
      {"", "expected '{' (a body is a JSON object) at byte 0"},
      {"[1]", "expected '{' (a body is a JSON object) at byte 0"},
      {R"("x")", "expected '{' (a body is a JSON object) at byte 0"},
      {R"({"a":1)", "expected ',' or '}' at byte 6"},
      {R"({"a":1,})", "expected a string key at byte 7"},
      {R"({a:1})", "expected a string key at byte 1"},
      {R"({"a" 1})", "expected ':' at byte 5"},
      {R"({"a":})", "expected a value at byte 5"},
      {R"({"a":)", "unexpected end of input, expected a value at byte 5"},
      {R"({"a":"b)", "unterminated string at byte 7"},
      {"{\"a\":\"b\nc\"}", "unescaped control character in string at byte 7"},
      {R"({"a":"\x"})", "invalid escape in string at byte 6"},
      {R"({"a":"\u12"})", "invalid hex digit in \\u escape at byte 6"},
      {R"({"a":"\ud800"})", "unpaired high surrogate in \\u escape at byte 12"},
      {R"({"a":"\udc00"})", "unpaired low surrogate in \\u escape at byte 12"},
      {R"({"a":"\ud800\u0041"})", "invalid low surrogate in \\u escape at byte 18"},
      {R"({"a":01})", "expected ',' or '}' at byte 6"},
      {R"({"a":-})", "invalid number at byte 6"},
      {R"({"a":1.})", "invalid number: no digits after '.' at byte 7"},
      {R"({"a":1e})", "invalid number: no digits in the exponent at byte 7"},
      {R"({"a":tru})", "invalid literal at byte 5"},
      {R"({"a":[1 2]})", "expected ',' or ']' at byte 8"},
      {R"({"a":1}x)", "unexpected data after the object at byte 7"},
      {R"({"a":1}{})", "unexpected data after the object at byte 7"},
      {R"({"a":)" + deep + "]", "nesting deeper than 64 levels at byte 68"},
  };
  for (const Case& c : cases) {
    std::string_view bodies[] = {R"({"ok":1})", c.body};
    std::vector<float> v;
    absl::Status st = e.EmbedEvents(bodies, &v);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.body;
    EXPECT_EQ(st.message(), "body 1: " + c.message) << c.body;
  }
  // 63 levels of arrays inside the object are 64 levels: allowed.
  EXPECT_TRUE(e.BodyFeatures(R"({"a":)" + std::string(63, '[') + std::string(63, ']') + "}").ok());
}

// Events that share their kind, host and bridge are closer than events that do not, on
// average over a generated cloud's history.
TEST(FeatureHashEmbedder, SimilarEventsAreCloserThanDissimilarOnes) {
  FeatureHashEmbedder e;
  std::string a =
      R"({"agent":"ovs-agent","bridge":"br-int","event":"port_vlan_changed","host":"compute-003.dc1","network_id":"5f0d8a52-1c3e-4b7a-9d2f-0e6b3c9a1d44","new_vlan":17,"ofport":12,"old_vlan":4,"port":"tap1a2b3c4d-5e","reason":"network rebind"})";
  std::string b =
      R"({"agent":"ovs-agent","bridge":"br-int","event":"port_vlan_changed","host":"compute-004.dc1","network_id":"77aa1b3e-9c0d-4e2f-8a6b-5d4c3b2a1f00","new_vlan":9,"ofport":30,"old_vlan":17,"port":"tap9f8e7d6c-5b","reason":"segmentation update"})";
  std::string c =
      R"({"agent":"ovs-agent","bridge":"br-ex","datapath_id":"00003a5c1d9e7f21","datapath_type":"system","event":"bridge_created","fail_mode":"secure","host":"network-001.dc1"})";
  EXPECT_GT(Dot(Embed(e, a), Embed(e, b)), Dot(Embed(e, a), Embed(e, c)) + 0.2);

  std::vector<std::string> bodies = OvsEventGenerator(11).Generate(600);
  std::vector<std::vector<float>> vecs;
  std::vector<std::string> kinds;
  for (const std::string& body : bodies) {
    vecs.push_back(Embed(e, body));
    kinds.push_back(nlohmann::json::parse(body).at("event"));
  }
  double same = 0, other = 0;
  int n_same = 0, n_other = 0;
  for (size_t i = 0; i < vecs.size(); ++i) {
    for (size_t j = i + 1; j < vecs.size(); ++j) {
      double d = Dot(vecs[i], vecs[j]);
      (kinds[i] == kinds[j] ? same : other) += d;
      ++(kinds[i] == kinds[j] ? n_same : n_other);
    }
  }
  EXPECT_GT(same / n_same, other / n_other + 0.15);
}

// Over a generated history, the events nearest a query are the ones it describes.
TEST(FeatureHashEmbedder, TextQueryLandsNearMatchingEvents) {
  FeatureHashEmbedder e;
  std::vector<std::string> bodies = OvsEventGenerator(5).Generate(3000);
  std::vector<std::vector<float>> vecs;
  for (const std::string& body : bodies) vecs.push_back(Embed(e, body));
  auto top = [&](std::string_view query, size_t k) {
    std::vector<float> q = EmbedQuery(e, query);
    std::vector<std::pair<double, size_t>> scored;
    for (size_t i = 0; i < vecs.size(); ++i) scored.push_back({-Dot(q, vecs[i]), i});
    std::partial_sort(scored.begin(), scored.begin() + k, scored.end());
    std::vector<nlohmann::json> hits;
    for (size_t i = 0; i < k; ++i) hits.push_back(nlohmann::json::parse(bodies[scored[i].second]));
    return hits;
  };
  // Plain words: the kind and bridge always match; the host is one token among many, so at
  // 128 dimensions hash collisions let a few events of other hosts in (7 of 10 match).
  int on_host = 0;
  for (const nlohmann::json& hit : top("port_vlan_changed compute-003 br-int", 10)) {
    EXPECT_EQ(hit["event"], "port_vlan_changed") << hit;
    EXPECT_EQ(hit["bridge"], "br-int") << hit;
    on_host += hit["host"] == "compute-003.dc1";
  }
  EXPECT_GE(on_host, 6);
  // A field=value word adds the exact "kv:" feature the events carry: 9 of 10.
  on_host = 0;
  for (const nlohmann::json& hit : top("port_vlan_changed host=compute-003.dc1 br-int", 10)) {
    EXPECT_EQ(hit["event"], "port_vlan_changed") << hit;
    EXPECT_EQ(hit["bridge"], "br-int") << hit;
    on_host += hit["host"] == "compute-003.dc1";
  }
  EXPECT_GE(on_host, 9);
  for (const nlohmann::json& hit : top("link down on network-02", 5)) {
    EXPECT_EQ(hit["event"], "port_link_changed") << hit;
    EXPECT_EQ(hit["link_state"], "down") << hit;
    EXPECT_EQ(hit["host"], "network-02.dc1") << hit;
  }
  for (const nlohmann::json& hit : top("new_mtu=9000", 5)) {
    EXPECT_EQ(hit["new_mtu"], 9000) << hit;
  }
}

TEST(FeatureHashEmbedder, FieldEqualsValueWordsInTextGiveValueFeatures) {
  FeatureHashEmbedder e({.dimension = 16});
  EXPECT_EQ(
      FeatureTexts(e.TextFeatures("Vlan=17 =x y=")),
      (std::vector<std::string>{"kv:vlan=17", "kv:y=", "t:17", "g:<17", "g:17>", "t:x", "g:<x>"}));
  // The same feature an event with that field emits.
  auto body = e.BodyFeatures(R"({"vlan":17})");
  ASSERT_TRUE(body.ok());
  EXPECT_EQ((*body)[1].text, "kv:vlan=17");
}

TEST(FeatureHashEmbedder, ConcurrentCallsOnOneEmbedderGiveTheSameVectors) {
  FeatureHashEmbedder e;
  std::vector<std::string> bodies = OvsEventGenerator(9).Generate(3000);
  std::vector<std::string_view> views(bodies.begin(), bodies.end());
  std::vector<float> expected;
  ASSERT_TRUE(e.EmbedEvents(views, &expected).ok());
  std::vector<float> r1, r2;
  absl::Status s1, s2;
  std::thread t1([&] {
    for (int i = 0; i < 5 && s1.ok(); ++i) s1 = e.EmbedEvents(views, &r1);
  });
  std::thread t2([&] {
    for (int i = 0; i < 5 && s2.ok(); ++i) s2 = e.EmbedEvents(views, &r2);
  });
  t1.join();
  t2.join();
  ASSERT_TRUE(s1.ok() && s2.ok());
  EXPECT_EQ(r1, expected);
  EXPECT_EQ(r2, expected);
}

// --- docs/EMBEDDING.md's worked test vector ---

struct TestVector {
  std::string body, features, coordinates;
};

// The three fenced blocks between the test-vector markers: body, features, coordinates.
TestVector DocTestVector() {
  std::ifstream in(std::string(SNAPLEDGER_SOURCE_DIR) + "/docs/EMBEDDING.md");
  std::stringstream doc;
  doc << in.rdbuf();
  std::string text = doc.str();
  size_t b = text.find("<!-- test-vector:begin -->"), e = text.find("<!-- test-vector:end -->");
  EXPECT_NE(b, std::string::npos);
  EXPECT_NE(e, std::string::npos);
  if (b == std::string::npos || e == std::string::npos) return {};
  std::vector<std::string> parts = absl::StrSplit(text.substr(b, e - b), "```");
  std::vector<std::string> blocks;
  for (size_t i = 1; i < parts.size(); i += 2)
    blocks.push_back(parts[i].substr(parts[i].find('\n') + 1));
  EXPECT_EQ(blocks.size(), 3u);
  if (blocks.size() != 3) return {};
  return {std::string(absl::StripTrailingAsciiWhitespace(blocks[0])), blocks[1], blocks[2]};
}

std::string RenderFeatures(const std::vector<HashedFeature>& features) {
  std::string out = "weight  hash                bucket  sign  feature\n";
  for (const HashedFeature& f : features) {
    absl::StrAppendFormat(&out, "%-6g  0x%016x  %6d  %-4s  %s\n", f.weight, f.hash, f.bucket,
                          f.sign > 0 ? "+" : "-", f.text);
  }
  return out;
}

std::string RenderCoordinates(absl::Span<const float> v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] != 0) absl::StrAppendFormat(&out, "%3d  %.9g\n", i, v[i]);
  return out;
}

TEST(FeatureHashEmbedder, DocTestVectorIsWhatTheCodeComputes) {
  TestVector doc = DocTestVector();
  ASSERT_FALSE(doc.body.empty());
  FeatureHashEmbedder e;  // the doc's vector is for the default dimension, 128
  auto features = e.BodyFeatures(doc.body);
  ASSERT_TRUE(features.ok()) << features.status();
  std::string rendered_features = RenderFeatures(*features);
  std::string rendered_coordinates = RenderCoordinates(Embed(e, doc.body));
  EXPECT_EQ(doc.features, rendered_features) << "features should read:\n" << rendered_features;
  EXPECT_EQ(doc.coordinates, rendered_coordinates) << "coordinates should read:\n"
                                                   << rendered_coordinates;
  // %.9g reads back to the same float, so the doc's numbers are exact.
  std::vector<float> v = Embed(e, doc.body);
  for (absl::string_view line : absl::StrSplit(doc.coordinates, '\n', absl::SkipEmpty())) {
    std::vector<std::string> cols = absl::StrSplit(line, ' ', absl::SkipEmpty());
    ASSERT_EQ(cols.size(), 2u) << line;
    EXPECT_EQ(std::strtof(cols[1].c_str(), nullptr), v[std::stoi(cols[0])]) << line;
  }
}

// Run with --gtest_also_run_disabled_tests to measure: embeds 1,000,000 generated bodies on
// one thread, then on two, and prints MB/s of body bytes.
TEST(FeatureHashEmbedder, DISABLED_Throughput) {
  std::vector<std::string> bodies = OvsEventGenerator(1).Generate(1'000'000);
  std::vector<std::string_view> views(bodies.begin(), bodies.end());
  size_t bytes = 0;
  for (const std::string& b : bodies) bytes += b.size();
  FeatureHashEmbedder e;
  constexpr size_t kBatch = 4096;
  auto embed_range = [&](size_t begin, size_t end) {
    std::vector<float> out;
    for (size_t i = begin; i < end; i += kBatch) {
      size_t n = std::min(kBatch, end - i);
      ASSERT_TRUE(e.EmbedEvents(absl::MakeConstSpan(views).subspan(i, n), &out).ok());
    }
  };
  auto seconds = [](auto start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  // CPU time of this thread as well as wall time: on a shared machine the wall-clock
  // figure says more about the neighbours than about the embedder.
  auto thread_cpu_seconds = [] {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
  };
  auto t0 = std::chrono::steady_clock::now();
  double cpu0 = thread_cpu_seconds();
  embed_range(0, views.size());
  double one = seconds(t0);
  double one_cpu = thread_cpu_seconds() - cpu0;
  auto t1 = std::chrono::steady_clock::now();
  std::thread other([&] { embed_range(0, views.size() / 2); });
  embed_range(views.size() / 2, views.size());
  other.join();
  double two = seconds(t1);
  std::printf(
      "%zu bodies, %.1f MB, mean %.0f bytes: 1 thread %.1f MB/s (%.2f s; %.1f MB per CPU "
      "second), 2 threads %.1f MB/s (%.2f s)\n",
      views.size(), bytes / 1e6, double(bytes) / views.size(), bytes / 1e6 / one, one,
      bytes / 1e6 / one_cpu, bytes / 1e6 / two, two);
}

}  // namespace
}  // namespace snapledger
