#include "common/index/faiss/inner_product.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace snapledger {
namespace {

std::vector<float> RandomFloats(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& f : v) f = normal(rng);
  return v;
}

bool SameBits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// The documented order, written out: lanes by j % 8, then ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7)).
float ReferenceDot(const float* a, const float* b, size_t d) {
  float lanes[8] = {};
  for (size_t j = 0; j < d; ++j) lanes[j % 8] += a[j] * b[j];
  return ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) +
         ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
}

TEST(InnerProducts, EveryPathSumsInTheDocumentedOrderBitForBit) {
  for (size_t d : {1, 7, 8, 9, 16, 100, 128, 131}) {
    const size_t n = 23;  // not a multiple of the AVX2 path's row block
    std::vector<float> q = RandomFloats(d, 1), rows = RandomFloats(n * d, 2);
    std::vector<InnerProductPath> paths = {InnerProductPath::kBest, InnerProductPath::kPortable};
    if (CpuHasAvx2()) paths.push_back(InnerProductPath::kAvx2);
    for (InnerProductPath path : paths) {
      std::vector<float> out(n);
      InnerProducts(q.data(), rows.data(), n, d, out.data(), path);
      for (size_t i = 0; i < n; ++i) {
        EXPECT_TRUE(SameBits(out[i], ReferenceDot(q.data(), &rows[i * d], d)))
            << "d " << d << " row " << i << " path " << static_cast<int>(path);
      }
    }
  }
}

TEST(NearestCentroids, PicksTheLargestProductAndItsScore) {
  const size_t d = 12, nlist = 10, n = 50;
  std::vector<float> centroids = RandomFloats(nlist * d, 3), x = RandomFloats(n * d, 4);
  std::vector<int64_t> lists(n);
  std::vector<float> scores(n);
  NearestCentroids(centroids.data(), nlist, d, x.data(), n, lists.data(), scores.data());
  for (size_t v = 0; v < n; ++v) {
    size_t best = 0;
    for (size_t c = 1; c < nlist; ++c) {
      if (ReferenceDot(&x[v * d], &centroids[c * d], d) >
          ReferenceDot(&x[v * d], &centroids[best * d], d))
        best = c;
    }
    EXPECT_EQ(lists[v], static_cast<int64_t>(best)) << "row " << v;
    EXPECT_TRUE(SameBits(scores[v], ReferenceDot(&x[v * d], &centroids[best * d], d)));
  }
}

TEST(NearestCentroids, TiesGoToTheLowestCentroid) {
  const size_t d = 16, nlist = 7;
  std::vector<float> c = RandomFloats(d, 5), centroids;
  for (size_t i = 0; i < nlist; ++i) centroids.insert(centroids.end(), c.begin(), c.end());
  std::vector<float> x = RandomFloats(4 * d, 6);
  std::vector<InnerProductPath> paths = {InnerProductPath::kPortable};
  if (CpuHasAvx2()) paths.push_back(InnerProductPath::kAvx2);
  for (InnerProductPath path : paths) {
    std::vector<int64_t> lists(4, -1);
    NearestCentroids(centroids.data(), nlist, d, x.data(), 4, lists.data(), nullptr, path);
    EXPECT_EQ(lists, (std::vector<int64_t>{0, 0, 0, 0}));
  }
}

TEST(NearestCentroids, ABatchSplitOverThreadsGivesEachRowsOwnAnswer) {
  const size_t d = 32, nlist = 33, n = 10000;  // large enough to be split over threads
  std::vector<float> centroids = RandomFloats(nlist * d, 7), x = RandomFloats(n * d, 8);
  std::vector<int64_t> lists(n);
  std::vector<float> scores(n);
  NearestCentroids(centroids.data(), nlist, d, x.data(), n, lists.data(), scores.data());
  std::vector<InnerProductPath> paths = {InnerProductPath::kPortable};
  if (CpuHasAvx2()) paths.push_back(InnerProductPath::kAvx2);
  for (InnerProductPath path : paths) {
    for (size_t v = 0; v < n; v += 97) {
      int64_t list = -1;
      float score = 0;
      NearestCentroids(centroids.data(), nlist, d, &x[v * d], 1, &list, &score, path);
      EXPECT_EQ(list, lists[v]) << "row " << v;
      EXPECT_TRUE(SameBits(score, scores[v])) << "row " << v;
    }
  }
}

}  // namespace
}  // namespace snapledger
