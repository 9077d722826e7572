// Inner products of float vectors, summed in one fixed order on every CPU path, for the
// embedded vector index (faiss_vector_index.h): scoring a query against rows, and assigning
// vectors to the nearest of a set of centroids.
//
// Summation order: lane l holds the products of dims j with j % 8 == l, added in increasing j;
// the 8 lanes are reduced as ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)); no fused
// multiply-add. The AVX2 path and the portable path follow it exactly, so they agree bit for
// bit, and an index built on one CPU answers the same on another.
//
// Rows are dense: row i of `rows` is the d floats at rows + i * d. Pointers must be valid for
// the sizes given; nothing is checked. Pure functions of their inputs; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>

namespace snapledger {

// Which implementation computes the products. kBest is AVX2 when the CPU has it, else
// portable; kAvx2 requires a CPU with AVX2 (CpuHasAvx2()). All give identical results.
enum class InnerProductPath { kBest, kPortable, kAvx2 };

bool CpuHasAvx2();

// out[i] = inner product of the d floats at q with row i of `rows`, for i in [0, n).
void InnerProducts(const float* q, const float* rows, size_t n, size_t d, float* out,
                   InnerProductPath path = InnerProductPath::kBest);

// For each of the n rows of x: the index of the centroid (of nlist >= 1 rows at `centroids`)
// with the largest inner product, the lowest index on ties, in lists[v]; and, when `scores` is
// not null, that product in scores[v]. Large batches are split over threads; each row's result
// does not depend on the split.
void NearestCentroids(const float* centroids, size_t nlist, size_t d, const float* x, size_t n,
                      int64_t* lists, float* scores,
                      InnerProductPath path = InnerProductPath::kBest);

}  // namespace snapledger
