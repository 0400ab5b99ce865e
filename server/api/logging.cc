#include "server/api/logging.h"

#include <cstddef>
#include <ctime>
#include <string_view>
#include <utility>

#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace convserve::api {
namespace {

constexpr char kHex[] = "0123456789abcdef";

void Append(std::string_view text, spdlog::memory_buf_t& dest) {
  dest.append(text.data(), text.data() + text.size());
}

// How many bytes the well-formed UTF-8 sequence starting at text[i] has (2 to 4; Unicode table
// 3-7: no overlong forms, no surrogates, nothing above U+10FFFF), or 0 if none starts there.
size_t Utf8SequenceLength(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  size_t length = 0;
  unsigned char second_min = 0x80, second_max = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) second_min = 0xa0;
    if (lead == 0xed) second_max = 0x9f;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) second_min = 0x90;
    if (lead == 0xf4) second_max = 0x8f;
  } else {
    return 0;
  }
  if (text.size() - i < length) return 0;
  if (byte(i + 1) < second_min || byte(i + 1) > second_max) return 0;
  for (size_t k = 2; k < length; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  }
  return length;
}

// The short escape of byte `c` (in JSON also `\"`, `\t`, `\b`, `\f`), or "" if it has none.
std::string_view ShortEscape(unsigned char c, bool json) {
  switch (c) {
    case '\\':
      return R"(\\)";
    case '\n':
      return R"(\n)";
    case '\r':
      return R"(\r)";
    case '"':
      return json ? R"(\")" : "";
    case '\t':
      return json ? R"(\t)" : "";
    case '\b':
      return json ? R"(\b)" : "";
    case '\f':
      return json ? R"(\f)" : "";
    default:
      return "";
  }
}

// The escape of byte `c`: its short one, else its value in hex (`\u00XX` in JSON, `\xHH` in
// text).
void AppendEscape(unsigned char c, bool json, spdlog::memory_buf_t& dest) {
  if (const std::string_view escape = ShortEscape(c, json); !escape.empty()) {
    Append(escape, dest);
    return;
  }
  const char hex[] = {kHex[c >> 4], kHex[c & 0xf]};
  Append(json ? R"(\u00)" : R"(\x)", dest);
  Append(std::string_view(hex, sizeof(hex)), dest);
}

// `text` as the inside of a JSON string, or on one line of text (see logging.h).
void AppendEscaped(std::string_view text, bool json, spdlog::memory_buf_t& dest) {
  size_t plain = 0;  // start of the bytes not yet written, all of them kept as they are
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    size_t kept = 0;  // how many bytes from i are written as they are
    if (c >= 0x80) {
      kept = json ? Utf8SequenceLength(text, i) : 1;
    } else if ((c >= 0x20 && c != 0x7f && c != '\\' && !(json && c == '"')) ||
               (!json && c == '\t')) {
      kept = 1;
    }
    if (kept > 0) {
      i += kept;
      continue;
    }
    Append(text.substr(plain, i - plain), dest);
    AppendEscape(c, json, dest);
    plain = ++i;
  }
  Append(text.substr(plain), dest);
}

// The pattern flag %* : the message, escaped for JSON or text (padding is not supported).
class EscapedMessageFlag final : public spdlog::custom_flag_formatter {
 public:
  explicit EscapedMessageFlag(bool json) : json_(json) {}

  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    AppendEscaped(std::string_view(msg.payload.data(), msg.payload.size()), json_, dest);
  }

  std::unique_ptr<spdlog::custom_flag_formatter> clone() const override {
    return std::make_unique<EscapedMessageFlag>(json_);
  }

 private:
  bool json_;
};

}  // namespace

std::unique_ptr<spdlog::formatter> MakeLogFormatter(const std::string& format) {
  const bool json = format == "json";
  auto formatter = std::make_unique<spdlog::pattern_formatter>(
      json ? spdlog::pattern_time_type::utc : spdlog::pattern_time_type::local);
  // The flag first: set_pattern compiles the pattern with the custom flags known then.
  formatter->add_flag<EscapedMessageFlag>('*', json);
  formatter->set_pattern(
      json ? R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","thread":%t,"message":"%*"})"
           : "%Y-%m-%d %H:%M:%S.%e %^%l%$ %*");
  return formatter;
}

void ConfigureLogging(const std::string& level, const std::string& format) {
  spdlog::set_default_logger(spdlog::stdout_logger_mt("convserve"));
  spdlog::set_level(spdlog::level::from_str(level));
  spdlog::set_formatter(MakeLogFormatter(format));
  spdlog::flush_on(spdlog::level::info);
}

}  // namespace convserve::api
