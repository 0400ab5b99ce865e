#include "client/output.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"

namespace convserve::client {

Cell Text(std::string text) { return Cell{std::move(text), false}; }
Cell Int(int64_t value) { return Cell{std::to_string(value), true}; }
Cell Uint(uint64_t value) { return Cell{std::to_string(value), true}; }
Cell Num(double value, int decimals) {
  if (!std::isfinite(value)) return Cell{"-", true};
  return Cell{FormatDouble(value, decimals), true};
}

std::string FormatDouble(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%.*f", decimals, value);
  return buffer;
}

std::string FormatShape(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) out += ",";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

size_t DisplayWidth(std::string_view text) {
  size_t width = 0;
  for (unsigned char c : text) {
    if ((c & 0xC0) != 0x80) ++width;
  }
  return width;
}

std::string Table::RenderText() const {
  std::vector<size_t> widths(keys_.size());
  std::vector<bool> numeric(keys_.size(), true);
  for (size_t c = 0; c < keys_.size(); ++c) widths[c] = keys_[c].size();
  for (const auto& row : rows_) {
    for (size_t c = 0; c < row.size() && c < keys_.size(); ++c) {
      widths[c] = std::max(widths[c], DisplayWidth(row[c].text));
      if (!row[c].numeric) numeric[c] = false;
    }
  }
  if (rows_.empty()) std::fill(numeric.begin(), numeric.end(), false);
  auto line = [&](const std::vector<std::string>& cells, const std::vector<bool>& right) {
    std::string out;
    for (size_t c = 0; c < cells.size(); ++c) {
      const size_t pad = widths[c] - std::min(widths[c], DisplayWidth(cells[c]));
      if (c > 0) out += "  ";
      if (right[c]) out.append(pad, ' ');
      out += cells[c];
      if (!right[c] && c + 1 < cells.size()) out.append(pad, ' ');
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::vector<std::string> header;
  for (const auto& key : keys_) {
    std::string upper = key;
    std::transform(upper.begin(), upper.end(), upper.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::toupper(ch)); });
    header.push_back(upper);
  }
  std::string out = line(header, numeric);
  for (const auto& row : rows_) {
    std::vector<std::string> cells;
    std::vector<bool> right;
    for (size_t c = 0; c < keys_.size(); ++c) {
      cells.push_back(c < row.size() ? row[c].text : "");
      right.push_back(c < row.size() && row[c].numeric && numeric[c]);
    }
    out += line(cells, right);
  }
  return out;
}

std::string Table::RenderCsv() const {
  std::string out;
  for (size_t c = 0; c < keys_.size(); ++c) {
    if (c > 0) out += ",";
    out += CsvField(keys_[c]);
  }
  out += "\n";
  for (const auto& row : rows_) {
    for (size_t c = 0; c < keys_.size(); ++c) {
      const std::string text = c < row.size() ? row[c].text : "";
      if (c > 0) out += ",";
      out += CsvField(text == "-" && c < row.size() && row[c].numeric ? "" : text);
    }
    out += "\n";
  }
  return out;
}

std::string Table::RenderJson() const {
  std::string out = "[";
  for (size_t r = 0; r < rows_.size(); ++r) {
    out += r ? ",\n  {" : "\n  {";
    for (size_t c = 0; c < keys_.size(); ++c) {
      const Cell cell = c < rows_[r].size() ? rows_[r][c] : Cell{};
      if (c > 0) out += ", ";
      out += JsonString(keys_[c]);
      out += ": ";
      if (cell.numeric) {
        out += cell.text == "-" ? "null" : cell.text;
      } else {
        out += JsonString(cell.text);
      }
    }
    out += "}";
  }
  out += rows_.empty() ? "]\n" : "\n]\n";
  return out;
}

std::string Table::Render(std::string_view format) const {
  if (format == "csv") return RenderCsv();
  if (format == "json") return RenderJson();
  return RenderText();
}

std::string JsonString(std::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buffer[8];
          std::snprintf(buffer, sizeof(buffer), "\\u%04x", c);
          out += buffer;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string CsvField(std::string_view text) {
  if (text.find_first_of(",\"\n\r") == std::string_view::npos) return std::string(text);
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string XmlEscape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string ProtoToJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  const auto status = google::protobuf::util::MessageToJsonString(message, &out, options);
  if (!status.ok()) return "{}\n";
  return out;
}

}  // namespace convserve::client
