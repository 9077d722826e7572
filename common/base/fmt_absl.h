// fmt (and so spdlog) formatting for Abseil types. Debian's Abseil has its own
// absl::string_view (not std::string_view), which fmt cannot format on its own; include this
// header wherever a Status or its message() goes into a log line or fmt::format.
#pragma once

#include <fmt/format.h>

#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(absl::string_view s, FormatContext& ctx) const {
    return fmt::formatter<std::string_view>::format(std::string_view(s.data(), s.size()), ctx);
  }
};

template <>
struct fmt::formatter<absl::Status> : fmt::formatter<std::string_view> {
  template <typename FormatContext>
  auto format(const absl::Status& st, FormatContext& ctx) const {
    std::string s = st.ToString();
    return fmt::formatter<std::string_view>::format(std::string_view(s), ctx);
  }
};
