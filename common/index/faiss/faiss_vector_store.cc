#include "common/index/faiss/faiss_vector_store.h"

#include <dirent.h>
#include <errno.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <filesystem>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/base/posix_file.h"
#include "common/base/status_macros.h"
#include "common/index/faiss/faiss_vector_index.h"
#include "common/index/faiss/vector_files.h"

namespace snapledger {
namespace {

IndexStructure StructureOf(const EmbeddedIndexOptions& o) {
  return {o.exact_below, static_cast<uint32_t>(o.nlist), o.train_size, o.kmeans_seed,
          static_cast<uint32_t>(o.kmeans_iterations)};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The store.

FaissVectorStore::FaissVectorStore(std::string dir, EmbeddedIndexOptions options)
    : dir_(std::move(dir)),
      options_(options),
      published_(std::make_shared<PublishedFileRecord>()) {}

FaissVectorStore::~FaissVectorStore() = default;

absl::StatusOr<std::unique_ptr<FaissVectorStore>> FaissVectorStore::Open(
    std::string dir, EmbeddedIndexOptions options) {
  const EmbeddedIndexOptions& o = options;
  if (o.nlist < 1 || o.exact_below < static_cast<size_t>(o.nlist) ||
      o.train_size < static_cast<size_t>(o.nlist) || o.nprobe < 1 || o.kmeans_iterations < 1 ||
      !(o.compact_fraction > 0) || o.exact_below > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "embedded vector index options: need nlist >= 1, exact_below and train_size >= nlist, "
        "nprobe >= 1, kmeans_iterations >= 1, compact_fraction > 0; got nlist ",
        o.nlist, ", exact_below ", o.exact_below, ", train_size ", o.train_size, ", nprobe ",
        o.nprobe, ", kmeans_iterations ", o.kmeans_iterations, ", compact_fraction ",
        o.compact_fraction));
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat("create directory ", dir, ": ", ec.message()));
  return std::unique_ptr<FaissVectorStore>(new FaissVectorStore(std::move(dir), options));
}

absl::StatusOr<VectorIndexPtr> FaissVectorStore::OpenPublished(const IndexIdentity& want) {
  absl::MutexLock lock(&mu_);
  const std::string base = JoinPath(dir_, kVectorsBaseFile);
  absl::StatusOr<struct stat> st = StatPath(base);
  if (absl::IsNotFound(st.status()))
    return absl::NotFoundError(absl::StrCat("no published vector index at ", base));
  if (!st.ok()) return st.status();
  ASSIGN_OR_RETURN(MappedFile file, MappedFile::Open(base));
  ASSIGN_OR_RETURN(CheckedBaseFile parsed, CheckBaseFile(file.data(), base));
  if (!(parsed.identity == want)) {
    return absl::FailedPreconditionError(
        absl::StrCat("vector index ", base, " was built with ", DescribeIdentity(parsed.identity),
                     ", not ", DescribeIdentity(want), "; it must be rebuilt"));
  }
  const IndexStructure& s = parsed.structure;
  if (s.nlist < 1 || s.exact_below < s.nlist || s.train_size < s.nlist || s.kmeans_iterations < 1 ||
      parsed.identity.dimension < 1) {
    return absl::DataLossError(
        absl::StrCat("vector index ", base, " is damaged: inconsistent index parameters"));
  }
  FilePaths paths{dir_, base, JoinPath(dir_, kVectorsJournalFile)};
  auto index = std::make_unique<FaissVectorIndex>(paths, parsed.identity, parsed.structure,
                                                  options_.nprobe, options_, published_);
  RETURN_IF_ERROR(index->LoadBase(parsed.body, absl::StrCat("vector index ", base), parsed.digest,
                                  file.data().size(), *st));
  absl::StatusOr<MappedFile> journal = MappedFile::Open(paths.journal);
  if (journal.ok()) {
    RETURN_IF_ERROR(index->ReplayJournal(journal->data(),
                                         absl::StrCat("vector index journal ", paths.journal)));
  } else if (!absl::IsNotFound(journal.status())) {
    return journal.status();
  }
  published_->Set(st->st_dev, st->st_ino);
  return VectorIndexPtr(std::move(index));
}

absl::Status FaissVectorStore::RemoveLeftovers() {
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return ErrnoStatus(absl::StrCat("opendir ", dir_), errno);
  std::vector<std::string> doomed;
  while (struct dirent* ent = ::readdir(d)) {
    std::string_view name = ent->d_name;
    if (name.starts_with("vectors.staged-") || name.starts_with("vectors.tmp-"))
      doomed.push_back(JoinPath(dir_, ent->d_name));
  }
  ::closedir(d);
  for (const std::string& path : doomed) {
    spdlog::info("vector index: removing {} (left by an interrupted rebuild or compaction)", path);
    RETURN_IF_ERROR(RemoveIfExists(path));
  }
  return absl::OkStatus();
}

absl::StatusOr<VectorIndexPtr> FaissVectorStore::CreateStaged(const IndexIdentity& identity) {
  absl::MutexLock lock(&mu_);
  if (identity.dimension < 1 || identity.embedder_id.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("CreateStaged: bad identity ", DescribeIdentity(identity)));
  }
  // The directory may have been deleted behind the node's back (that is why it rebuilds).
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot create ", dir_, ": ", ec.message()));
  RETURN_IF_ERROR(RemoveLeftovers());
  FilePaths paths{dir_, JoinPath(dir_, kVectorsBaseFile), JoinPath(dir_, kVectorsJournalFile)};
  return VectorIndexPtr(std::make_unique<FaissVectorIndex>(paths, identity, StructureOf(options_),
                                                           options_.nprobe, options_, published_));
}

absl::Status FaissVectorStore::Publish(VectorIndex& staged) {
  absl::MutexLock lock(&mu_);
  auto* index = dynamic_cast<FaissVectorIndex*>(&staged);
  if (index == nullptr || index->dir() != dir_ || !index->staged()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Publish: not a staged index of the vector store at ", dir_));
  }
  return index->PublishFrom(JoinPath(dir_, UniqueName("vectors.staged-")));
}

absl::Status FaissVectorStore::Drop() {
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(RemoveIfExists(JoinPath(dir_, kVectorsBaseFile)));
  RETURN_IF_ERROR(RemoveIfExists(JoinPath(dir_, kVectorsJournalFile)));
  RETURN_IF_ERROR(RemoveLeftovers());
  return SyncDir(dir_);
}

absl::Status FaissVectorStore::CheckPublished() {
  std::optional<std::pair<dev_t, ino_t>> known = published_->Get();
  if (!known) return absl::OkStatus();
  const std::string base = JoinPath(dir_, kVectorsBaseFile);
  absl::StatusOr<struct stat> st = StatPath(base);
  if (absl::IsNotFound(st.status()))
    return absl::NotFoundError(absl::StrCat("the published vector index ", base, " was removed"));
  if (!st.ok()) return st.status();
  if (std::make_pair(st->st_dev, st->st_ino) != *known) {
    return absl::FailedPreconditionError(
        absl::StrCat("another vector index was published at ", base));
  }
  return absl::OkStatus();
}

}  // namespace snapledger
