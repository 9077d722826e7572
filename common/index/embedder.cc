#include "common/index/embedder.h"

#include <algorithm>
#include <thread>

#include "common/base/status_macros.h"

namespace snapledger {

absl::Status EmbedInParallel(Embedder& embedder, absl::Span<const std::string_view> bodies,
                             int threads, std::vector<float>* out) {
  if (threads <= 1) return embedder.EmbedEvents(bodies, out);
  const size_t per = (bodies.size() + threads - 1) / threads;
  std::vector<std::vector<float>> parts(threads);
  std::vector<absl::Status> results(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    const size_t from = std::min(bodies.size(), t * per);
    const size_t n = std::min(per, bodies.size() - from);
    workers.emplace_back(
        [&, t, from, n] { results[t] = embedder.EmbedEvents(bodies.subspan(from, n), &parts[t]); });
  }
  for (std::thread& w : workers) w.join();
  out->clear();
  out->reserve(bodies.size() * static_cast<size_t>(embedder.Dimension()));
  for (int t = 0; t < threads; ++t) {
    RETURN_IF_ERROR(results[t]);
    out->insert(out->end(), parts[t].begin(), parts[t].end());
  }
  return absl::OkStatus();
}

}  // namespace snapledger
