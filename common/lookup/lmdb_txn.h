// Owning wrappers of LMDB's environment, transaction and cursor handles, and how an LMDB
// failure becomes a Status, for the lookup index (lookup_index.h). Each wrapper releases its
// handle on destruction; none is thread-safe (LMDB's rules apply: a write transaction and its
// cursors belong to one thread at a time; the environment is opened with MDB_NOTLS, so read
// transactions are not tied to threads).
#pragma once

#include <lmdb.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace snapledger::lmdb {

struct EnvCloser {
  void operator()(MDB_env* env) const { mdb_env_close(env); }
};
// An environment, closed on destruction.
using EnvHandle = std::unique_ptr<MDB_env, EnvCloser>;

// "lookup index <dir>: <what>: <LMDB's message>" as ResourceExhausted when the map is full
// (MDB_MAP_FULL), else Internal.
absl::Status Error(const std::string& dir, absl::string_view what, int rc);

// An LMDB transaction, aborted on destruction unless committed. Move-only. `dir` (for error
// messages) must outlive it.
class Txn {
 public:
  // A read-only transaction, or a write transaction when `write`.
  static absl::StatusOr<Txn> Begin(MDB_env* env, const std::string& dir, bool write);
  Txn(Txn&& o) noexcept;
  Txn& operator=(Txn&& o) noexcept;
  ~Txn();

  MDB_txn* get() const { return txn_; }
  // Commits; the transaction is gone afterwards, whatever the outcome (and so are the
  // cursors of a write transaction).
  absl::Status Commit();

 private:
  Txn(MDB_txn* txn, const std::string& dir) : txn_(txn), dir_(&dir) {}
  void Abort();
  MDB_txn* txn_ = nullptr;
  const std::string* dir_;
};

// A cursor, closed on destruction: declare it after its Txn, and in a write transaction let
// it go before the commit (which frees the transaction's cursors). Move-only.
class Cursor {
 public:
  explicit Cursor(MDB_cursor* c) : cursor_(c) {}
  ~Cursor();
  Cursor(Cursor&& o) noexcept;
  Cursor& operator=(Cursor&&) = delete;
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;

  // A cursor on `dbi` in `txn`; errors as Error(dir, "mdb_cursor_open", rc).
  static absl::StatusOr<Cursor> Open(const Txn& txn, MDB_dbi dbi, const std::string& dir);

  MDB_cursor* get() const { return cursor_; }

 private:
  MDB_cursor* cursor_;
};

// A key or value for LMDB over bytes the caller keeps alive (LMDB does not write through it).
inline MDB_val Val(const void* data, size_t size) { return MDB_val{size, const_cast<void*>(data)}; }
inline MDB_val Val(std::string_view s) { return Val(s.data(), s.size()); }

}  // namespace snapledger::lmdb
