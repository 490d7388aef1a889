// Whitespace-separated tokens over the text part of a point-cloud file, with the byte offset of
// every token for error messages. Numbers are parsed with std::from_chars (locale-independent,
// exact round trip), accepting a leading '+' and "nan"/"inf" the way C's strtod does.
#pragma once

#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "torchless/core/error.h"

namespace torchless::formats::detail {

inline bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

// The whitespace-separated words of one header line (PLY and PCD headers).
inline std::vector<std::string_view> split_words(std::string_view line) {
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_space(line[i])) ++i;
    size_t b = i;
    while (i < line.size() && !is_space(line[i])) ++i;
    if (i > b) words.push_back(line.substr(b, i - b));
  }
  return words;
}

// Parses a whole token as a double; false if it is not a number.
inline bool parse_double(std::string_view token, double& value) {
  if (!token.empty() && token.front() == '+') token.remove_prefix(1);
  if (token.empty()) return false;
  const char* end = token.data() + token.size();
  auto [ptr, ec] = std::from_chars(token.data(), end, value);
  if (ec == std::errc::result_out_of_range) {
    // Denormals and overflow: from_chars refuses them, strtod would round; so do we.
    value = std::strtod(std::string(token).c_str(), nullptr);
    return true;
  }
  return ec == std::errc() && ptr == end;
}

class TextScanner {
 public:
  TextScanner(std::span<const std::byte> bytes, size_t start)
      : text_(reinterpret_cast<const char*>(bytes.data()), bytes.size()), pos_(start) {}

  // The next token, or false at the end of the text. token_offset() is its byte offset.
  bool next(std::string_view& token) {
    while (pos_ < text_.size() && is_space(text_[pos_])) ++pos_;
    if (pos_ >= text_.size()) return false;
    size_t begin = pos_;
    while (pos_ < text_.size() && !is_space(text_[pos_])) ++pos_;
    token_offset_ = begin;
    token = text_.substr(begin, pos_ - begin);
    return true;
  }
  size_t token_offset() const { return token_offset_; }
  size_t position() const { return pos_; }
  size_t remaining() const { return text_.size() - pos_; }

 private:
  std::string_view text_;
  size_t pos_;
  size_t token_offset_ = 0;
};

}  // namespace torchless::formats::detail
