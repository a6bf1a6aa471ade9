#include "serve/route_match.h"

// GCC 12 with -fsanitize=address reports -Wmaybe-uninitialized inside libstdc++'s <regex> (the
// std::function of its NFA states, a false positive). <regex> is used in this file alone, so the
// warning is silenced here only, and for GCC only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <regex>

namespace metharme::serve {

struct PathPatterns::Impl {
  std::vector<std::regex> patterns;
};

PathPatterns::PathPatterns() : impl_(std::make_unique<Impl>()) {}
PathPatterns::~PathPatterns() = default;

void PathPatterns::add(const std::string& pattern) { impl_->patterns.emplace_back(pattern); }

std::vector<size_t> PathPatterns::matching(const std::string& path) const {
  std::vector<size_t> out;
  for (size_t i = 0; i < impl_->patterns.size(); ++i)
    if (std::regex_match(path, impl_->patterns[i])) out.push_back(i);
  return out;
}

}  // namespace metharme::serve
