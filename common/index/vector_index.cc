#include "common/index/vector_index.h"

#include "absl/strings/str_cat.h"

namespace snapledger {

std::string DescribeIdentity(const IndexIdentity& identity) {
  return absl::StrCat(identity.embedder_id, ", ", identity.dimension, " dimensions");
}

}  // namespace snapledger
