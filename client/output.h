// Renderers shared by the commands: an aligned text table that also renders as CSV and JSON,
// JSON/CSV escaping, number formatting, and protobuf messages as JSON.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace google::protobuf {
class Message;
}

namespace convserve::client {

// One cell: its text, and whether it is a number (right-aligned in tables, unquoted in JSON).
struct Cell {
  std::string text;
  bool numeric = false;
};

Cell Text(std::string text);
Cell Int(int64_t value);
Cell Uint(uint64_t value);
// Fixed-point with `decimals` digits; NaN/inf render as "-" (JSON null).
Cell Num(double value, int decimals);

// Column keys are snake_case ("median_ms"): JSON and CSV use them as is, the text table shows
// them upper-cased ("MEDIAN_MS").
class Table {
 public:
  explicit Table(std::vector<std::string> keys) : keys_(std::move(keys)) {}
  // `row` has one cell per key.
  void AddRow(std::vector<Cell> row) { rows_.push_back(std::move(row)); }
  size_t size() const { return rows_.size(); }

  // Columns separated by two spaces, numbers right-aligned, no trailing spaces.
  std::string RenderText() const;
  std::string RenderCsv() const;
  // An array of objects, one per row.
  std::string RenderJson() const;
  // "table" | "csv" | "json".
  std::string Render(std::string_view format) const;

 private:
  std::vector<std::string> keys_;
  std::vector<std::vector<Cell>> rows_;
};

std::string JsonString(std::string_view text);  // quoted and escaped
std::string CsvField(std::string_view text);    // quoted when needed
std::string XmlEscape(std::string_view text);
std::string FormatDouble(double value, int decimals);
// "[-1,1,28,28]"
std::string FormatShape(const std::vector<int64_t>& shape);
// Width of `text` in terminal columns (UTF-8 aware, one column per code point).
size_t DisplayWidth(std::string_view text);

// The message as JSON with the .proto field names, two-space indented.
std::string ProtoToJson(const google::protobuf::Message& message);

}  // namespace convserve::client
