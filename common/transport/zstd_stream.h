// zstd compression of byte streams: a sink that compresses into another sink (the primary,
// between `btrfs send` and the ssh channel) and a source that decompresses another source (the
// replica, between stdin and `btrfs receive`). The compressed stream is one or more standard
// zstd frames (`zstd -d` reads it).
//
// Neither wrapper owns what it wraps: the inner sink or source is borrowed and must outlive
// the wrapper. Neither is thread-safe (one writer or reader at a time), like every ByteSink and
// ByteSource. Compression may run on worker threads of its own (ZstdOptions::workers); those
// are joined when the sink is destroyed.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/base/byte_stream.h"

namespace snapledger {

// How a send stream travels between primary and replica. Spelled "none" and "zstd" on the
// receive command's --compress flag and in configuration.
enum class StreamCompression { kNone, kZstd };
std::string_view StreamCompressionName(StreamCompression compression);
// InvalidArgument naming the accepted values for anything but "none" or "zstd".
absl::StatusOr<StreamCompression> ParseStreamCompression(std::string_view name);

struct ZstdOptions {
  // zstd level: 1 (fastest) to 19 (22 with ultra); negative levels are faster still.
  int level = 1;
  // ZSTD_c_nbWorkers: 0 compresses on the writing thread; N > 0 compresses on N threads of
  // zstd's own while the writer carries on (Write then returns before its input is compressed).
  int workers = 0;
};
// The levels and worker counts a replica may be configured with: levels kMinZstdLevel..
// kMaxZstdLevel (the ultra levels 20-22 are left out: their windows cost the replica up to
// 128 MB more memory to decompress), workers 0..kMaxZstdWorkers.
inline constexpr int kMinZstdLevel = -7;
inline constexpr int kMaxZstdLevel = 19;
inline constexpr int kMaxZstdWorkers = 16;
// InvalidArgument naming the value and the bounds it is outside of.
absl::Status ValidateZstdLevel(int level);
absl::Status ValidateZstdWorkers(int workers);

// Compresses what is written to it into `dest`. The stream is complete only after Finish() (or
// Close()); a sink destroyed without it leaves `dest` holding a truncated frame, which
// ZstdDecompressSource reports as DataLoss: an interrupted transfer can never decompress to a
// shorter, valid-looking stream.
class ZstdCompressSink : public ByteSink {
 public:
  // `dest` is borrowed and must outlive the sink. zstd clamps the level and worker count to
  // what it supports; InvalidArgument when it rejects a parameter outright (workers > 0 with a
  // libzstd built without threads).
  static absl::StatusOr<std::unique_ptr<ZstdCompressSink>> Create(ByteSink& dest,
                                                                  const ZstdOptions& options = {});

  // Compresses `data`; compressed output goes to `dest` in chunks of up to 1 MiB as it becomes
  // available. Errors: `dest`'s error as it was returned, Internal for a zstd failure. After
  // an error every later call fails with it.
  absl::Status Write(std::string_view data) override = 0;
  // Ends the frame and writes all remaining output to `dest`; does not close `dest`.
  // Idempotent. Write after Finish is FailedPrecondition.
  virtual absl::Status Finish() = 0;
  // Finish(), then `dest`.Close().
  absl::Status Close() override = 0;

  // Uncompressed bytes accepted by Write so far.
  virtual uint64_t bytes_in() const = 0;
  // Compressed bytes handed to `dest` so far.
  virtual uint64_t bytes_out() const = 0;
};
using ZstdCompressSinkPtr = std::unique_ptr<ZstdCompressSink>;

// Decompresses `source`. Read returns 0 only at the end of `source` after a complete frame.
// DataLoss, naming the compressed byte offset, for a corrupt stream (not zstd, a bad checksum
// or block) and for a truncated one (the source ended inside a frame, or before any frame);
// `source`'s own errors are returned as they came. After an error every later Read fails with
// it, and error() returns it (so a caller can tell a bad stream from what it did with it).
class ZstdDecompressSource : public ByteSource {
 public:
  // `source` is borrowed and must outlive this.
  static absl::StatusOr<std::unique_ptr<ZstdDecompressSource>> Create(ByteSource& source);

  absl::StatusOr<size_t> Read(char* buf, size_t size) override = 0;

  // The first error Read returned, or OK.
  virtual absl::Status error() const = 0;
  // Compressed bytes read from `source` so far.
  virtual uint64_t bytes_in() const = 0;
  // Decompressed bytes returned by Read so far.
  virtual uint64_t bytes_out() const = 0;
};
using ZstdDecompressSourcePtr = std::unique_ptr<ZstdDecompressSource>;

}  // namespace snapledger
