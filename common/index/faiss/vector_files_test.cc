#include "common/index/faiss/vector_files.h"

#include <faiss/IndexFlat.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/base/posix_file.h"

namespace snapledger {
namespace {

using ::testing::HasSubstr;

constexpr size_t kDim = 4;
const IndexIdentity kIdentity{"test-embedder/v1", kDim};

std::string Concat(const JournalRecordPieces& r) {
  std::string s;
  for (std::string_view p : r.pieces()) s.append(p);
  return s;
}

template <typename T>
void Append(std::string* s, T v) {
  s->append(reinterpret_cast<const char*>(&v), sizeof v);
}

TEST(VectorBaseFile, WhatIsWrittenReadsBackAsItWas) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            absl::StrCat("vector_files_test-", ::getpid(), ".index"))
                               .string();
  faiss::IndexFlatIP flat(kDim);
  const std::vector<float> vectors = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
  flat.add(3, vectors.data());
  const std::vector<SeqList> seqs = {{1, 3}, {2}, {4}};
  const IndexStructure structure{500, 16, 1000, 1234, 25};
  absl::StatusOr<WrittenBase> written =
      WriteBaseFile(path, BaseHeader{kIdentity, structure, 4, kKindExact}, seqs, flat);
  ASSERT_TRUE(written.ok()) << written.status();
  absl::StatusOr<std::string> bytes = ReadFileToString(path);
  std::filesystem::remove(path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ(written->bytes, bytes->size());

  absl::StatusOr<CheckedBaseFile> checked = CheckBaseFile(*bytes, path);
  ASSERT_TRUE(checked.ok()) << checked.status();
  EXPECT_EQ(checked->identity, kIdentity);
  EXPECT_EQ(checked->structure.nlist, 16u);
  EXPECT_EQ(checked->structure.kmeans_seed, 1234u);
  EXPECT_EQ(checked->digest, written->digest);
  absl::StatusOr<BaseContents> contents = ParseBaseBody(checked->body, "vector index x");
  ASSERT_TRUE(contents.ok()) << contents.status();
  EXPECT_EQ(contents->last_seq, 4u);
  EXPECT_EQ(contents->kind, kKindExact);
  EXPECT_EQ(contents->seqs, seqs);
  EXPECT_EQ(contents->entry_of_seq, (std::vector<uint32_t>{0, 1, 0, 2}));
  absl::StatusOr<std::unique_ptr<faiss::Index>> index =
      ReadFaissIndex(contents->faiss_index, "vector index x");
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ((*index)->ntotal, 3);

  std::string flipped = *bytes;
  flipped[flipped.size() / 2] ^= 1;
  EXPECT_THAT(CheckBaseFile(flipped, path).status().message(), HasSubstr("checksum mismatch"));
}

TEST(VectorBaseFile, ASeqListedTwiceIsDataLoss) {
  std::string body;
  Append<uint64_t>(&body, 2);  // last seq
  Append<uint64_t>(&body, 2);  // entries
  Append<uint32_t>(&body, kKindExact);
  for (int entry = 0; entry < 2; ++entry) {
    Append<uint32_t>(&body, 1);
    Append<uint64_t>(&body, 1);  // seq 1 both times
  }
  Append<uint64_t>(&body, 0);  // an empty FAISS index
  absl::StatusOr<BaseContents> contents = ParseBaseBody(body, "vector index x");
  EXPECT_TRUE(absl::IsDataLoss(contents.status())) << contents.status();
  EXPECT_THAT(contents.status().message(), HasSubstr("entry 1 lists seq 1 out of order or twice"));
}

TEST(VectorBaseFile, ABodyCutShortIsDataLossAtEveryLength) {
  std::string body;
  Append<uint64_t>(&body, 1);
  Append<uint64_t>(&body, 1);
  Append<uint32_t>(&body, kKindExact);
  Append<uint32_t>(&body, 1);
  Append<uint64_t>(&body, 1);
  Append<uint64_t>(&body, 3);
  body += "abc";
  ASSERT_TRUE(ParseBaseBody(body, "x").ok());
  for (size_t n = 0; n < body.size(); ++n) {
    EXPECT_TRUE(absl::IsDataLoss(ParseBaseBody(body.substr(0, n), "x").status())) << n;
  }
}

TEST(VectorJournal, AHeaderNamesItsBaseAndADamagedOneIsDataLoss) {
  Digest base{};
  base[0] = 7;
  base[31] = 9;
  const std::string header = EncodeJournalHeader(base);
  ASSERT_EQ(header.size(), kJournalHeaderSize);
  absl::StatusOr<Digest> extends = CheckJournalHeader(header, "journal j");
  ASSERT_TRUE(extends.ok()) << extends.status();
  EXPECT_EQ(*extends, base);
  for (size_t at = 0; at < header.size(); ++at) {
    std::string bad = header;
    bad[at] ^= 0x20;
    EXPECT_TRUE(absl::IsDataLoss(CheckJournalHeader(bad, "journal j").status())) << at;
  }
  EXPECT_TRUE(absl::IsDataLoss(CheckJournalHeader(header.substr(0, 55), "journal j").status()));
}

TEST(VectorJournal, ARecordReadsBackAsItWasWritten) {
  const std::vector<uint32_t> entry_of = {3, 4, 3, 5};
  const std::vector<float> fresh = {1, 2, 3, 4, 5, 6, 7, 8};  // entries 4 and 5
  const std::string data =
      EncodeJournalHeader(Digest{}) + Concat(EncodeJournalRecord(11, entry_of, fresh, kDim));
  EXPECT_EQ(data.size() - kJournalHeaderSize, JournalRecordBytes(entry_of.size(), fresh.size()));
  absl::StatusOr<JournalRecordRead> read =
      ReadJournalRecord(data, kJournalHeaderSize, kDim, 10, "journal j");
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_TRUE(read->record.has_value()) << read->torn;
  EXPECT_EQ(read->bytes, data.size() - kJournalHeaderSize);
  EXPECT_EQ(read->record->first_seq, 11u);
  EXPECT_EQ(read->record->entry_of, entry_of);
  EXPECT_EQ(read->record->fresh, fresh);
}

TEST(VectorJournal, ARecordCutShortOrNeverWrittenIsTornNotDamage) {
  const std::vector<uint32_t> entry_of = {0, 1};
  const std::vector<float> fresh(2 * kDim, 0.5f);
  const std::string header = EncodeJournalHeader(Digest{});
  const std::string record = Concat(EncodeJournalRecord(1, entry_of, fresh, kDim));
  for (size_t n = 1; n < record.size(); ++n) {
    absl::StatusOr<JournalRecordRead> read =
        ReadJournalRecord(header + record.substr(0, n), kJournalHeaderSize, kDim, 0, "journal j");
    ASSERT_TRUE(read.ok()) << n << ": " << read.status();
    EXPECT_FALSE(read->record.has_value()) << n;
    EXPECT_EQ(read->torn, "is cut short") << n;
  }
  absl::StatusOr<JournalRecordRead> zeros = ReadJournalRecord(
      header + std::string(record.size(), '\0'), kJournalHeaderSize, kDim, 0, "journal j");
  ASSERT_TRUE(zeros.ok()) << zeros.status();
  EXPECT_EQ(zeros->torn, "was never written (zero bytes)");
}

TEST(VectorJournal, AFlippedByteOrAGapInSeqsIsDataLoss) {
  const std::vector<uint32_t> entry_of = {0};
  const std::vector<float> fresh(kDim, 0.25f);
  const std::string header = EncodeJournalHeader(Digest{});
  const std::string record = Concat(EncodeJournalRecord(1, entry_of, fresh, kDim));
  for (size_t at = 0; at < record.size(); ++at) {
    std::string bad = record;
    bad[at] ^= 0x01;
    absl::StatusOr<JournalRecordRead> read =
        ReadJournalRecord(header + bad, kJournalHeaderSize, kDim, 0, "journal j");
    EXPECT_TRUE(absl::IsDataLoss(read.status())) << at << ": " << read.status();
  }
  absl::StatusOr<JournalRecordRead> gap =
      ReadJournalRecord(header + record, kJournalHeaderSize, kDim, 5, "journal j");
  EXPECT_THAT(gap.status().message(), HasSubstr("does not continue seq 5"));
}

}  // namespace
}  // namespace snapledger
