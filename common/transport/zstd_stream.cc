#include "common/transport/zstd_stream.h"

#include <zstd.h>

#include <vector>

#include "absl/strings/str_cat.h"

namespace snapledger {
namespace {

// Output is gathered into chunks this large before going to the destination: fewer, larger
// channel writes (each ssh_channel_write call has a fixed cost).
constexpr size_t kOutChunk = 1 << 20;

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

absl::Status ZstdParamError(size_t rc, std::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("zstd ", std::string(what), ": ", ZSTD_getErrorName(rc)));
}

class ZstdCompressSinkImpl : public ZstdCompressSink {
 public:
  ZstdCompressSinkImpl(ByteSink& dest, std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx)
      : dest_(dest), cctx_(std::move(cctx)), out_(kOutChunk) {}

  absl::Status Write(std::string_view data) override {
    if (!status_.ok()) return status_;
    if (finished_)
      return absl::FailedPreconditionError("zstd compressor: write after the frame was ended");
    ZSTD_inBuffer in{data.data(), data.size(), 0};
    while (in.pos < in.size) {
      if (absl::Status st = Step(in, ZSTD_e_continue).status(); !st.ok()) return st;
    }
    bytes_in_ += data.size();
    return absl::OkStatus();
  }

  absl::Status Finish() override {
    if (!status_.ok()) return status_;
    if (finished_) return absl::OkStatus();
    ZSTD_inBuffer in{nullptr, 0, 0};
    for (;;) {
      absl::StatusOr<size_t> remaining = Step(in, ZSTD_e_end);
      if (!remaining.ok()) return remaining.status();
      if (*remaining == 0) break;
    }
    if (absl::Status st = Flush(); !st.ok()) return st;
    finished_ = true;
    return absl::OkStatus();
  }

  absl::Status Close() override {
    if (absl::Status st = Finish(); !st.ok()) return st;
    return dest_.Close();
  }

  uint64_t bytes_in() const override { return bytes_in_; }
  uint64_t bytes_out() const override { return bytes_out_; }

 private:
  // One ZSTD_compressStream2 call; hands a full output chunk to the destination. Returns
  // zstd's hint (0 once a ZSTD_e_end frame is fully flushed into out_).
  absl::StatusOr<size_t> Step(ZSTD_inBuffer& in, ZSTD_EndDirective mode) {
    ZSTD_outBuffer out{out_.data(), out_.size(), out_used_};
    size_t rc = ZSTD_compressStream2(cctx_.get(), &out, &in, mode);
    out_used_ = out.pos;
    if (ZSTD_isError(rc))
      return Fail(absl::InternalError(absl::StrCat("zstd compression: ", ZSTD_getErrorName(rc))));
    if (out_used_ == out_.size()) {
      if (absl::Status st = Flush(); !st.ok()) return st;
    }
    return rc;
  }

  absl::Status Flush() {
    if (out_used_ == 0) return absl::OkStatus();
    if (absl::Status st = dest_.Write(std::string_view(out_.data(), out_used_)); !st.ok())
      return Fail(st);
    bytes_out_ += out_used_;
    out_used_ = 0;
    return absl::OkStatus();
  }

  absl::Status Fail(absl::Status st) {
    status_ = st;
    return st;
  }

  ByteSink& dest_;
  std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx_;
  std::vector<char> out_;
  size_t out_used_ = 0;
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
  bool finished_ = false;
  absl::Status status_;
};

class ZstdDecompressSourceImpl : public ZstdDecompressSource {
 public:
  ZstdDecompressSourceImpl(ByteSource& source, std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx)
      : source_(source), dctx_(std::move(dctx)), in_buf_(ZSTD_DStreamInSize()) {}

  absl::StatusOr<size_t> Read(char* buf, size_t size) override {
    if (!status_.ok()) return status_;
    if (size == 0) return 0;
    for (;;) {
      // Refill only when zstd has consumed everything and has no output pending: after a call
      // that filled the caller's buffer it may hold more, and asking the source first could
      // block (or end the stream) needlessly.
      if (in_.pos == in_.size && !output_pending_ && !source_eof_) {
        absl::StatusOr<size_t> n = source_.Read(in_buf_.data(), in_buf_.size());
        if (!n.ok()) return Fail(n.status());
        consumed_before_buf_ += in_.size;
        in_ = ZSTD_inBuffer{in_buf_.data(), *n, 0};
        if (*n == 0) source_eof_ = true;
        bytes_in_ += *n;
      }
      if (in_.pos == in_.size && !output_pending_ && source_eof_) {
        if (frame_open_ || !saw_frame_)
          return Fail(absl::DataLossError(
              absl::StrCat("zstd stream truncated at compressed byte offset ", bytes_in_,
                           saw_frame_ ? ": the input ended inside a frame" : ": no frame at all")));
        return 0;
      }
      ZSTD_outBuffer out{buf, size, 0};
      size_t before = in_.pos;
      size_t rc = ZSTD_decompressStream(dctx_.get(), &out, &in_);
      if (ZSTD_isError(rc))
        return Fail(absl::DataLossError(absl::StrCat(
            "corrupt zstd stream at compressed byte offset ", consumed_before_buf_ + in_.pos,
            " (read from ", consumed_before_buf_ + before, "): ", ZSTD_getErrorName(rc))));
      if (in_.pos > before || out.pos > 0) {
        saw_frame_ = true;
        frame_open_ = rc != 0;
      }
      output_pending_ = out.pos == out.size;
      if (out.pos > 0) {
        bytes_out_ += out.pos;
        return out.pos;
      }
    }
  }

  absl::Status error() const override { return status_; }
  uint64_t bytes_in() const override { return bytes_in_; }
  uint64_t bytes_out() const override { return bytes_out_; }

 private:
  absl::Status Fail(absl::Status st) {
    status_ = st;
    return st;
  }

  ByteSource& source_;
  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx_;
  std::vector<char> in_buf_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  uint64_t consumed_before_buf_ = 0;  // compressed bytes before in_buf_'s current contents
  uint64_t bytes_in_ = 0;
  uint64_t bytes_out_ = 0;
  bool source_eof_ = false;
  bool output_pending_ = false;
  bool saw_frame_ = false;   // some input was decoded
  bool frame_open_ = false;  // inside a frame (zstd wants more input to end it)
  absl::Status status_;
};

}  // namespace

std::string_view StreamCompressionName(StreamCompression compression) {
  switch (compression) {
    case StreamCompression::kNone:
      return "none";
    case StreamCompression::kZstd:
      return "zstd";
  }
  return "unknown";
}

absl::Status ValidateZstdLevel(int level) {
  if (level >= kMinZstdLevel && level <= kMaxZstdLevel) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("zstd level ", level, " is outside ", kMinZstdLevel, "..", kMaxZstdLevel));
}

absl::Status ValidateZstdWorkers(int workers) {
  if (workers >= 0 && workers <= kMaxZstdWorkers) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("zstd workers ", workers, " is outside 0..", kMaxZstdWorkers));
}

absl::StatusOr<StreamCompression> ParseStreamCompression(std::string_view name) {
  if (name == "none") return StreamCompression::kNone;
  if (name == "zstd") return StreamCompression::kZstd;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown compression \"", std::string(name), "\": use none or zstd"));
}

absl::StatusOr<ZstdCompressSinkPtr> ZstdCompressSink::Create(ByteSink& dest,
                                                             const ZstdOptions& options) {
  std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  if (!cctx) return absl::ResourceExhaustedError("ZSTD_createCCtx failed");
  size_t rc = ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, options.level);
  if (ZSTD_isError(rc)) return ZstdParamError(rc, absl::StrCat("level ", options.level));
  // A checksum per frame: corruption that still parses is caught at the frame's end.
  rc = ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1);
  if (ZSTD_isError(rc)) return ZstdParamError(rc, "checksum flag");
  if (options.workers > 0) {
    rc = ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_nbWorkers, options.workers);
    if (ZSTD_isError(rc)) return ZstdParamError(rc, absl::StrCat(options.workers, " workers"));
  }
  return ZstdCompressSinkPtr(new ZstdCompressSinkImpl(dest, std::move(cctx)));
}

absl::StatusOr<ZstdDecompressSourcePtr> ZstdDecompressSource::Create(ByteSource& source) {
  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  if (!dctx) return absl::ResourceExhaustedError("ZSTD_createDCtx failed");
  return ZstdDecompressSourcePtr(new ZstdDecompressSourceImpl(source, std::move(dctx)));
}

}  // namespace snapledger
