// The server's log: one line per event on stdout, as text or as JSON (--log-format). The message
// is escaped so that whatever it quotes (client-chosen model names and request ids, parse errors)
// cannot break the line or forge fields:
//   text: `\` is written `\\`, newline `\n`, carriage return `\r`, and the other control bytes
//         (below 0x20 except tab, and 0x7f) `\xHH`; bytes from 0x80 up are kept as they are;
//   json: the message is a JSON string: `"` `\` and the control bytes (below 0x20, and 0x7f) are
//         escaped (`\"`, `\\`, `\n`, `\r`, `\t`, `\b`, `\f`, else `\u00XX`); well-formed UTF-8
//         is kept as it is, and each byte that is not part of well-formed UTF-8 is written
//         `\u00XX` (the byte's value as a code point: a raw "ÿ" is the character, `\u00ff` the
//         byte 0xff), so every line is valid UTF-8 JSON.
#pragma once

#include <memory>
#include <string>

#include "spdlog/formatter.h"

namespace convserve::api {

// The formatter of --log-format "text" (local time) or "json" (UTC, one object a line with the
// fields time, level, thread and message); any other format is text.
std::unique_ptr<spdlog::formatter> MakeLogFormatter(const std::string& format);

// Makes the "convserve" stdout logger the default one, at `level` (trace | debug | info | warn |
// error | critical | off), with MakeLogFormatter(format); flushes at info and above. Call once.
void ConfigureLogging(const std::string& level, const std::string& format);

}  // namespace convserve::api
