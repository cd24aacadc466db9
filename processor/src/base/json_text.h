// The one JSON string escaper of the library. Describe/stats texts are built
// by appending to a std::string; every string value or key goes through
// AppendJsonString, so names with quotes, backslashes or control characters
// (table names may hold any byte but NUL) come out as valid JSON that decodes
// to the same bytes. Thread-safe, pure.
#ifndef RECSTRATA_BASE_JSON_TEXT_H_
#define RECSTRATA_BASE_JSON_TEXT_H_

#include <string>
#include <string_view>

namespace rs {

// Appends `s` to `out` as a JSON string literal (quoted, escaped).
void AppendJsonString(std::string& out, std::string_view s);

// `s` as a JSON string literal.
inline std::string JsonString(std::string_view s) {
  std::string out;
  AppendJsonString(out, s);
  return out;
}

}  // namespace rs

#endif  // RECSTRATA_BASE_JSON_TEXT_H_
