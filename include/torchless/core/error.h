// The one error type. Every failure caused by input (a file, a tensor, an argument) throws
// torchless::Error, whose message names where (file, record, offset), what was expected and
// what was found, so that a user can fix their export from the message alone.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <utility>

namespace torchless {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// A limit (Limits) was exceeded: the input asks for more than it is allowed to.
class LimitError : public Error {
 public:
  using Error::Error;
};

// The input is well-formed but uses something torchless refuses or does not implement.
class UnsupportedError : public Error {
 public:
  using Error::Error;
};

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

// Prefixes the message of any Error thrown by `body` with `context` ("model.pt: data.pkl: ..."),
// preserving its type.
template <typename Body>
decltype(auto) with_context(const std::string& context, Body&& body) {
  try {
    return std::forward<Body>(body)();
  } catch (const LimitError& e) {
    throw LimitError(context + ": " + e.what());
  } catch (const UnsupportedError& e) {
    throw UnsupportedError(context + ": " + e.what());
  } catch (const Error& e) {
    throw Error(context + ": " + e.what());
  }
}

}  // namespace torchless
