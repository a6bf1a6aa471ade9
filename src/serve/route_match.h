// The API routes' path patterns (ECMAScript regular expressions, as httplib matches them), kept
// so that a path registered under another method can be answered 405 with an Allow header.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace metharme::serve {

class PathPatterns {
 public:
  PathPatterns();
  ~PathPatterns();
  void add(const std::string& pattern);
  // Indexes (in order of add) of the patterns that match all of `path`.
  std::vector<size_t> matching(const std::string& path) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace metharme::serve
