// The log's formatters (server/api/logging.h): whatever a message holds, a JSON line is one JSON
// object with exactly the fields time, level, thread and message, and "message" decodes back to
// the message; a text line is one line. The JSON oracle is a small strict parser written here.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <string_view>

#include "server/api/logging.h"
#include "spdlog/details/log_msg.h"

namespace convserve::api {
namespace {

// Every event is formatted as if it happened at 2024-01-02T03:04:05.678901Z.
const spdlog::log_clock::time_point kEventTime =
    spdlog::log_clock::time_point(std::chrono::duration_cast<spdlog::log_clock::duration>(
        std::chrono::seconds(1704164645) + std::chrono::microseconds(678901)));

// What the formatter writes for one event at `level` with message `message`. The formatter is
// used through clone(), as spdlog::set_formatter does, so the escaping must survive cloning.
std::string Format(const std::string& format, std::string_view message,
                   spdlog::level::level_enum level = spdlog::level::warn) {
  const auto formatter = MakeLogFormatter(format)->clone();
  spdlog::details::log_msg msg(spdlog::source_loc{}, "convserve", level,
                               spdlog::string_view_t(message.data(), message.size()));
  msg.time = kEventTime;
  spdlog::memory_buf_t buf;
  formatter->format(msg, buf);
  return std::string(buf.data(), buf.size());
}

// Appends code point `cp` as UTF-8.
void AppendUtf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// A strict parser of one flat JSON object whose values are strings or non-negative integers
// (RFC 8259: no raw control characters in strings, only the defined escapes, valid UTF-8).
class FlatJsonParser {
 public:
  explicit FlatJsonParser(std::string_view text) : text_(text) {}

  // The object's members (value: the decoded string, or the integer's digits), or nullopt if the
  // text is not exactly one such object (surrounding whitespace allowed) or repeats a name.
  std::optional<std::map<std::string, std::string>> ParseObject() {
    std::map<std::string, std::string> members;
    SkipSpace();
    if (!Eat('{')) return std::nullopt;
    SkipSpace();
    if (!Eat('}')) {
      do {
        SkipSpace();
        auto name = ParseString();
        SkipSpace();
        if (!name || !Eat(':')) return std::nullopt;
        SkipSpace();
        auto value = Peek() == '"' ? ParseString() : ParseDigits();
        if (!value || !members.emplace(*name, *value).second) return std::nullopt;
        SkipSpace();
      } while (Eat(','));
      if (!Eat('}')) return std::nullopt;
    }
    SkipSpace();
    if (pos_ != text_.size()) return std::nullopt;
    return members;
  }

 private:
  char Peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }
  bool Eat(char c) {
    if (pos_ >= text_.size() || text_[pos_] != c) return false;
    ++pos_;
    return true;
  }
  void SkipSpace() {
    while (pos_ < text_.size() &&
           std::string_view(" \t\r\n").find(text_[pos_]) != std::string_view::npos)
      ++pos_;
  }
  std::optional<std::string> ParseDigits() {
    const size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    if (pos_ == start) return std::nullopt;
    return std::string(text_.substr(start, pos_ - start));
  }
  std::optional<uint32_t> ParseHex4() {
    if (text_.size() - pos_ < 4) return std::nullopt;
    uint32_t value = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = text_[pos_++];
      value <<= 4;
      if (c >= '0' && c <= '9')
        value |= c - '0';
      else if (c >= 'a' && c <= 'f')
        value |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        value |= c - 'A' + 10;
      else
        return std::nullopt;
    }
    return value;
  }
  // One code point of raw UTF-8 (lead byte >= 0x80) appended to `out`, or false.
  bool CopyUtf8(std::string& out) {
    const auto lead = static_cast<unsigned char>(text_[pos_]);
    const int length = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 0;
    if (length == 0 || text_.size() - pos_ < static_cast<size_t>(length)) return false;
    uint32_t cp = lead & (0x7f >> length);
    for (int k = 1; k < length; ++k) {
      const auto c = static_cast<unsigned char>(text_[pos_ + k]);
      if ((c & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3f);
    }
    const uint32_t min = length == 2 ? 0x80 : length == 3 ? 0x800 : 0x10000;
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    out.append(text_.substr(pos_, length));
    pos_ += length;
    return true;
  }
  std::optional<std::string> ParseString() {
    if (!Eat('"')) return std::nullopt;
    std::string out;
    while (pos_ < text_.size()) {
      const auto c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) return std::nullopt;
      if (c >= 0x80) {
        if (!CopyUtf8(out)) return std::nullopt;
        continue;
      }
      ++pos_;
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      if (pos_ >= text_.size()) return std::nullopt;
      const char escape = text_[pos_++];
      switch (escape) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          auto cp = ParseHex4();
          if (!cp) return std::nullopt;
          if (*cp >= 0xd800 && *cp <= 0xdbff) {  // a surrogate pair
            if (!Eat('\\') || !Eat('u')) return std::nullopt;
            auto low = ParseHex4();
            if (!low || *low < 0xdc00 || *low > 0xdfff) return std::nullopt;
            *cp = 0x10000 + ((*cp - 0xd800) << 10) + (*low - 0xdc00);
          } else if (*cp >= 0xdc00 && *cp <= 0xdfff) {
            return std::nullopt;
          }
          AppendUtf8(*cp, out);
          break;
        }
        default:
          return std::nullopt;
      }
    }
    return std::nullopt;  // unterminated
  }

  std::string_view text_;
  size_t pos_ = 0;
};

// The fields of a JSON line: checks that it is one line ending in one newline, and one object of
// exactly time, level, thread and message with the expected shapes; returns the members.
std::map<std::string, std::string> ParseJsonLine(const std::string& line) {
  EXPECT_FALSE(line.empty());
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
  std::string_view object(line);
  object.remove_suffix(1);
  auto members = FlatJsonParser(object).ParseObject();
  EXPECT_TRUE(members.has_value()) << "not one JSON object: " << line;
  if (!members) return {};
  EXPECT_EQ(members->size(), 4u) << line;
  for (const char* name : {"time", "level", "thread", "message"}) {
    EXPECT_EQ(members->count(name), 1u) << name << " missing: " << line;
  }
  EXPECT_EQ((*members)["time"], "2024-01-02T03:04:05.678901Z") << line;  // UTC
  EXPECT_TRUE(std::regex_match((*members)["thread"], std::regex(R"([1-9]\d*)"))) << line;
  return *members;
}

// The JSON line for `message` must decode back to it.
void ExpectJsonRoundTrip(const std::string& message) {
  const std::string line = Format("json", message);
  auto members = ParseJsonLine(line);
  EXPECT_EQ(members["message"], message) << line;
  EXPECT_EQ(members["level"], "warning") << line;
}

TEST(JsonLogFormat, PlainMessageIsCopied) {
  const std::string line =
      Format("json", "model 'fashion-k3' version 1: READY", spdlog::level::info);
  EXPECT_NE(line.find(R"("level":"info","thread":)"), std::string::npos) << line;
  EXPECT_NE(line.find(R"(,"message":"model 'fashion-k3' version 1: READY"})"), std::string::npos)
      << line;
  EXPECT_EQ(ParseJsonLine(line)["message"], "model 'fashion-k3' version 1: READY");
}

// JSON lines carry UTC time ("Z"), text lines the local time, whatever the time zone.
TEST(LogFormat, JsonTimeIsUtcTextTimeIsLocal) {
  const char* saved = std::getenv("TZ");
  const std::optional<std::string> saved_tz =
      saved ? std::optional<std::string>(saved) : std::nullopt;
  setenv("TZ", "JST-9", 1);  // UTC+9, no daylight saving time
  tzset();
  const std::string json = Format("json", "m");
  const std::string text = Format("text", "m");
  if (saved_tz) {
    setenv("TZ", saved_tz->c_str(), 1);
  } else {
    unsetenv("TZ");
  }
  tzset();
  EXPECT_EQ(ParseJsonLine(json)["time"], "2024-01-02T03:04:05.678901Z") << json;
  EXPECT_EQ(text, "2024-01-02 12:04:05.678 warning m\n");
}

TEST(JsonLogFormat, QuotesAndBackslashesAreEscaped) {
  ExpectJsonRoundTrip(R"(config.pbtxt:3:9: Expected ",", found "output".)");
  ExpectJsonRoundTrip(R"(C:\models\x" and \" and \\" and a trailing backslash \)");
  const std::string line = Format("json", R"(a"b\c)");
  EXPECT_NE(line.find(R"("message":"a\"b\\c"})"), std::string::npos) << line;
}

TEST(JsonLogFormat, ControlCharactersAreEscaped) {
  ExpectJsonRoundTrip("line 1\nline 2\r\n\ttabbed\b\f");
  std::string every_control;
  for (int c = 1; c < 0x20; ++c) every_control += static_cast<char>(c);
  every_control += '\x7f';
  ExpectJsonRoundTrip(every_control);
  EXPECT_NE(Format("json", every_control)
                .find(R"("message":"\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r)"
                      R"(\u000e\u000f\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019)"
                      R"(\u001a\u001b\u001c\u001d\u001e\u001f\u007f"})"),
            std::string::npos)
      << Format("json", every_control);
  ExpectJsonRoundTrip(std::string("nul\0byte", 8));
  const std::string line = Format("json", std::string("a\nb\x1b[31mc\0d", 11));
  EXPECT_NE(line.find(R"("message":"a\nb\u001b[31mc\u0000d"})"), std::string::npos) << line;
}

TEST(JsonLogFormat, ClientChosenNameCannotForgeFields) {
  const std::string model = R"(x","level":"critical","message":"FORGED)";
  const std::string message = "ModelInfer for model '" + model + "' (request id '" + model +
                              "\"}\n{\"level\":\"critical\"'): model not found";
  const std::string line = Format("json", message);
  auto members = ParseJsonLine(line);
  EXPECT_EQ(members["level"], "warning") << line;
  EXPECT_EQ(members["message"], message) << line;
}

TEST(JsonLogFormat, Utf8IsKeptAndInvalidBytesAreEscaped) {
  ExpectJsonRoundTrip("résumé ∑ 模型 🙂 U+2028:\u2028 end");
  EXPECT_NE(Format("json", "é🙂").find("\"message\":\"é🙂\"}"), std::string::npos);
  // Not well-formed UTF-8: a lone continuation byte, a truncated sequence, an overlong '/',
  // an encoded surrogate, a lead byte past U+10FFFF, 0xff. Each byte becomes \u00XX.
  const std::string line =
      Format("json", "a\x80 b\xe6\x97 c\xc0\xaf d\xed\xa0\x80 e\xf5\x80\x80\x80 f\xff");
  EXPECT_NE(line.find(R"("message":"a\u0080 b\u00e6\u0097 c\u00c0\u00af d\u00ed\u00a0\u0080 )"
                      R"(e\u00f5\u0080\u0080\u0080 f\u00ff"})"),
            std::string::npos)
      << line;
  EXPECT_EQ(ParseJsonLine(line)["message"],
            "a\u0080 b\u00e6\u0097 c\u00c0\u00af d\u00ed\u00a0\u0080 e\u00f5\u0080\u0080\u0080 "
            "f\u00ff");
  // The edges of Unicode table 3-7: U+0800, U+D7FF, U+E000, U+10000 and U+10FFFF are kept;
  // overlong 3- and 4-byte forms and U+110000 are not.
  ExpectJsonRoundTrip("\xe0\xa0\x80 \xed\x9f\xbf \xee\x80\x80 \xf0\x90\x80\x80 \xf4\x8f\xbf\xbf");
  const std::string edges = Format("json", "\xe0\x9f\xbf \xf0\x8f\xbf\xbf \xf4\x90\x80\x80");
  EXPECT_NE(edges.find(R"("message":"\u00e0\u009f\u00bf \u00f0\u008f\u00bf\u00bf )"
                       R"(\u00f4\u0090\u0080\u0080"})"),
            std::string::npos)
      << edges;
  // A valid sequence right after an invalid byte is kept.
  EXPECT_NE(Format("json", "\xe6\xe6\xa8\xa1").find("\"message\":\"\\u00e6模\"}"),
            std::string::npos);
}

TEST(TextLogFormat, PlainMessageIsCopied) {
  const std::string line = Format("text", "model 'fashion-k3' version 1: READY \"quoted\"\ttab");
  EXPECT_TRUE(std::regex_match(
      line, std::regex("\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\.\\d{3} warning "
                       "model 'fashion-k3' version 1: READY \"quoted\"\ttab\n")))
      << line;
}

TEST(TextLogFormat, ControlCharactersAreEscapedOnOneLine) {
  const std::string model = "x' not found\n2030-01-01 00:00:00.000 critical FORGED\r";
  const std::string line =
      Format("text", "model '" + model + "\x1b[2J\x7f" + std::string("\0", 1) + "' C:\\m");
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
  EXPECT_EQ(line.find('\r'), std::string::npos) << line;
  const std::string expected =
      R"( warning model 'x' not found\n2030-01-01 00:00:00.000 critical FORGED\r\x1b[2J\x7f\x00' C:\\m)"
      "\n";
  ASSERT_GE(line.size(), expected.size());
  EXPECT_EQ(line.substr(line.size() - expected.size()), expected) << line;
  EXPECT_EQ(line.size(), expected.size() + 23)
      << line;  // the (local) time: 2024-01-02 03:04:05.678
}

TEST(TextLogFormat, EveryControlByteIsEscapedButTab) {
  std::string message;
  for (int c = 0; c < 0x20; ++c) message += static_cast<char>(c);
  message += '\x7f';
  const std::string line = Format("text", message);
  const std::string expected =
      R"(\x00\x01\x02\x03\x04\x05\x06\x07\x08)"
      "\t"
      R"(\n\x0b\x0c\r\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x7f)"
      "\n";
  ASSERT_GE(line.size(), expected.size());
  EXPECT_EQ(line.substr(line.size() - expected.size()), expected) << line;
}

}  // namespace
}  // namespace convserve::api
