// Errors and message building shared by every layer.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace metharme {

// Every user-facing failure is an Error whose what() is one line naming the problem
// (file, tensor, field, ...). The CLI prints it and exits non-zero.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// cat("a", 1, 'b') -> "a1b"
template <class... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(cat(std::forward<Args>(args)...));
}

#define MH_CHECK(cond, ...)                    \
  do {                                         \
    if (!(cond)) ::metharme::fail(__VA_ARGS__); \
  } while (0)

}  // namespace metharme
