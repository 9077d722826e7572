#include "common/index/faiss/inner_product.h"

#include <immintrin.h>

#include <algorithm>
#include <thread>
#include <vector>

namespace snapledger {
namespace {

using idx_t = int64_t;

// Assigning vectors to IVF lists. FAISS's own assignment (a BLAS product or a scalar loop in
// Debian's build) costs ~15 us per 128-dim vector against 256 centroids and dominates an
// index build; this kernel is ~10x faster. Both paths sum lane l (dims j with j % 8 == l) in
// increasing j and reduce the 8 lanes in one fixed order, without fused multiply-add, so they
// agree bit for bit; ties go to the lowest list.

float ReduceLanes(const float lanes[8]) {
  const float t0 = lanes[0] + lanes[4], t1 = lanes[1] + lanes[5];
  const float t2 = lanes[2] + lanes[6], t3 = lanes[3] + lanes[7];
  return (t0 + t2) + (t1 + t3);
}

// Adds dims [from, d) to `lanes` one by one.
void DotTail(const float* a, const float* b, size_t from, size_t d, float lanes[8]) {
  for (size_t j = from; j < d; ++j) lanes[j % 8] += a[j] * b[j];
}

float DotPortable(const float* a, const float* b, size_t d) {
  float lanes[8] = {};
  size_t j = 0;
  for (; j + 8 <= d; j += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] += a[j + l] * b[j + l];
  }
  DotTail(a, b, j, d, lanes);
  return ReduceLanes(lanes);
}

void AssignPortable(const float* centroids, size_t nlist, size_t d, const float* x, size_t n,
                    idx_t* out, float* scores) {
  for (size_t v = 0; v < n; ++v) {
    const float* xv = x + v * d;
    float best = DotPortable(xv, centroids, d);
    idx_t best_list = 0;
    for (size_t c = 1; c < nlist; ++c) {
      float s = DotPortable(xv, centroids + c * d, d);
      if (s > best) best = s, best_list = static_cast<idx_t>(c);
    }
    out[v] = best_list;
    scores[v] = best;
  }
}

// Lane sums of vectors x[0..V) (rows of d floats) with centroids c0 .. c0+C-1, finished and
// compared in centroid order. A V x C tile of accumulators reuses each load V or C times and
// hides the add latency.
template <size_t V, size_t C>
__attribute__((target("avx2"))) inline void TileAvx2(const float* x, const float* centroids,
                                                     size_t c0, size_t d, float* best,
                                                     idx_t* best_list) {
  const size_t d8 = d / 8 * 8;
  __m256 acc[V][C];
#pragma GCC unroll 16
  for (size_t v = 0; v < V; ++v) {
#pragma GCC unroll 16
    for (size_t i = 0; i < C; ++i) acc[v][i] = _mm256_setzero_ps();
  }
  for (size_t j = 0; j < d8; j += 8) {
    __m256 xj[V];
#pragma GCC unroll 16
    for (size_t v = 0; v < V; ++v) xj[v] = _mm256_loadu_ps(x + v * d + j);
#pragma GCC unroll 16
    for (size_t i = 0; i < C; ++i) {
      const __m256 cj = _mm256_loadu_ps(centroids + (c0 + i) * d + j);
#pragma GCC unroll 16
      for (size_t v = 0; v < V; ++v) acc[v][i] = _mm256_add_ps(acc[v][i], _mm256_mul_ps(xj[v], cj));
    }
  }
  for (size_t v = 0; v < V; ++v) {
    for (size_t i = 0; i < C; ++i) {
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, acc[v][i]);
      DotTail(x + v * d, centroids + (c0 + i) * d, d8, d, lanes);
      const float s = ReduceLanes(lanes);
      if (s > best[v] || c0 + i == 0) best[v] = s, best_list[v] = static_cast<idx_t>(c0 + i);
    }
  }
}

// Vectors x[0..V) against every centroid.
template <size_t V>
__attribute__((target("avx2"))) void AssignRowsAvx2(const float* centroids, size_t nlist, size_t d,
                                                    const float* x, idx_t* out, float* scores) {
  constexpr size_t kC = 3;  // V x kC accumulators + V + 1 operands fit 16 registers for V <= 3
  float best[V] = {};
  size_t c = 0;
  for (; c + kC <= nlist; c += kC) TileAvx2<V, kC>(x, centroids, c, d, best, out);
  for (; c < nlist; ++c) TileAvx2<V, 1>(x, centroids, c, d, best, out);
  std::copy_n(best, V, scores);
}

__attribute__((target("avx2"))) void AssignAvx2(const float* centroids, size_t nlist, size_t d,
                                                const float* x, size_t n, idx_t* out,
                                                float* scores) {
  constexpr size_t kV = 3;
  size_t v = 0;
  for (; v + kV <= n; v += kV)
    AssignRowsAvx2<kV>(centroids, nlist, d, x + v * d, out + v, scores + v);
  for (; v < n; ++v) AssignRowsAvx2<1>(centroids, nlist, d, x + v * d, out + v, scores + v);
}

// Scoring a query against rows (a search's scan) sums like the assignment kernel. Searching
// uses this rather than FAISS's scan, whose inner product in Debian's build is a scalar loop
// (~170 ns per 128-dim vector, ~6x slower).
void DotsPortable(const float* q, const float* rows, size_t n, size_t d, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = DotPortable(q, rows + i * d, d);
}

__attribute__((target("avx2"))) inline float FinishDot(__m256 acc, const float* q, const float* row,
                                                       size_t d8, size_t d) {
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, acc);
  DotTail(q, row, d8, d, lanes);
  return ReduceLanes(lanes);
}

__attribute__((target("avx2"))) void DotsAvx2(const float* q, const float* rows, size_t n, size_t d,
                                              float* out) {
  constexpr size_t kRows = 4;  // independent accumulators
  const size_t d8 = d / 8 * 8;
  size_t i = 0;
  for (; i + kRows <= n; i += kRows) {
    __m256 acc[kRows];
#pragma GCC unroll 4
    for (size_t r = 0; r < kRows; ++r) acc[r] = _mm256_setzero_ps();
    for (size_t j = 0; j < d8; j += 8) {
      const __m256 qj = _mm256_loadu_ps(q + j);
#pragma GCC unroll 4
      for (size_t r = 0; r < kRows; ++r) {
        acc[r] = _mm256_add_ps(acc[r], _mm256_mul_ps(qj, _mm256_loadu_ps(rows + (i + r) * d + j)));
      }
    }
    for (size_t r = 0; r < kRows; ++r) out[i + r] = FinishDot(acc[r], q, rows + (i + r) * d, d8, d);
  }
  for (; i < n; ++i) {
    __m256 acc = _mm256_setzero_ps();
    for (size_t j = 0; j < d8; j += 8) {
      acc = _mm256_add_ps(acc,
                          _mm256_mul_ps(_mm256_loadu_ps(q + j), _mm256_loadu_ps(rows + i * d + j)));
    }
    out[i] = FinishDot(acc, q, rows + i * d, d8, d);
  }
}

bool UseAvx2(InnerProductPath path) {
  switch (path) {
    case InnerProductPath::kPortable:
      return false;
    case InnerProductPath::kAvx2:
      return true;
    case InnerProductPath::kBest:
      break;
  }
  return CpuHasAvx2();
}

}  // namespace

bool CpuHasAvx2() {
  static const bool avx2 = __builtin_cpu_supports("avx2");
  return avx2;
}

void InnerProducts(const float* q, const float* rows, size_t n, size_t d, float* out,
                   InnerProductPath path) {
  if (UseAvx2(path)) {
    DotsAvx2(q, rows, n, d, out);
  } else {
    DotsPortable(q, rows, n, d, out);
  }
}

void NearestCentroids(const float* centroids, size_t nlist, size_t d, const float* x, size_t n,
                      int64_t* lists, float* scores, InnerProductPath path) {
  const bool avx2 = UseAvx2(path);
  std::vector<float> scratch;
  if (scores == nullptr) {
    scratch.resize(n);
    scores = scratch.data();
  }
  auto run = [&](size_t from, size_t to) {
    if (avx2) {
      AssignAvx2(centroids, nlist, d, x + from * d, to - from, lists + from, scores + from);
    } else {
      AssignPortable(centroids, nlist, d, x + from * d, to - from, lists + from, scores + from);
    }
  };
  constexpr size_t kRowsPerThread = 2048;
  const size_t threads =
      std::clamp<size_t>(n / kRowsPerThread, 1, std::max(1u, std::thread::hardware_concurrency()));
  std::vector<std::thread> helpers;
  const size_t per = (n + threads - 1) / threads;
  for (size_t t = 1; t < threads; ++t) {
    helpers.emplace_back(run, std::min(n, t * per), std::min(n, (t + 1) * per));
  }
  run(0, std::min(n, per));
  for (std::thread& h : helpers) h.join();
}

}  // namespace snapledger
