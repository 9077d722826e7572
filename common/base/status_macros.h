// Early-return helpers for absl::Status / absl::StatusOr.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define SNAPLEDGER_CONCAT_INNER(a, b) a##b
#define SNAPLEDGER_CONCAT(a, b) SNAPLEDGER_CONCAT_INNER(a, b)

// RETURN_IF_ERROR(expr): returns the status of `expr` from the enclosing function when it is
// not OK.
#define RETURN_IF_ERROR(expr)                             \
  do {                                                    \
    if (absl::Status _st = (expr); !_st.ok()) return _st; \
  } while (0)

// ASSIGN_OR_RETURN(lhs, expr): evaluates the StatusOr `expr`; on error returns its status,
// otherwise moves its value into `lhs` (which may be a declaration).
#define ASSIGN_OR_RETURN(lhs, expr)                          \
  auto SNAPLEDGER_CONCAT(_statusor_, __LINE__) = (expr);     \
  if (!SNAPLEDGER_CONCAT(_statusor_, __LINE__).ok())         \
    return SNAPLEDGER_CONCAT(_statusor_, __LINE__).status(); \
  lhs = std::move(SNAPLEDGER_CONCAT(_statusor_, __LINE__)).value()
