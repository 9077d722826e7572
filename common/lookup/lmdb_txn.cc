#include "common/lookup/lmdb_txn.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace snapledger::lmdb {

absl::Status Error(const std::string& dir, absl::string_view what, int rc) {
  std::string msg = absl::StrCat("lookup index ", dir, ": ", what, ": ", mdb_strerror(rc));
  if (rc == MDB_MAP_FULL) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

absl::StatusOr<Txn> Txn::Begin(MDB_env* env, const std::string& dir, bool write) {
  MDB_txn* txn = nullptr;
  int rc = mdb_txn_begin(env, nullptr, write ? 0 : MDB_RDONLY, &txn);
  if (rc != 0) return Error(dir, "mdb_txn_begin", rc);
  return Txn(txn, dir);
}

Txn::Txn(Txn&& o) noexcept : txn_(std::exchange(o.txn_, nullptr)), dir_(o.dir_) {}

Txn& Txn::operator=(Txn&& o) noexcept {
  if (this != &o) {
    Abort();
    txn_ = std::exchange(o.txn_, nullptr);
    dir_ = o.dir_;
  }
  return *this;
}

Txn::~Txn() { Abort(); }

absl::Status Txn::Commit() {
  int rc = mdb_txn_commit(std::exchange(txn_, nullptr));
  return rc == 0 ? absl::OkStatus() : Error(*dir_, "mdb_txn_commit", rc);
}

void Txn::Abort() {
  if (txn_ != nullptr) mdb_txn_abort(std::exchange(txn_, nullptr));
}

Cursor::~Cursor() {
  if (cursor_ != nullptr) mdb_cursor_close(cursor_);
}

Cursor::Cursor(Cursor&& o) noexcept : cursor_(std::exchange(o.cursor_, nullptr)) {}

absl::StatusOr<Cursor> Cursor::Open(const Txn& txn, MDB_dbi dbi, const std::string& dir) {
  MDB_cursor* c = nullptr;
  if (int rc = mdb_cursor_open(txn.get(), dbi, &c); rc != 0)
    return Error(dir, "mdb_cursor_open", rc);
  return Cursor(c);
}

}  // namespace snapledger::lmdb
