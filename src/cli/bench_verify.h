// metharme bench --verify-k: the cost of one forward pass over k tokens (a speculative
// verification of k - 1 drafts after the pending token) against one decode step, at a cache depth.
#pragma once

#include <string>
#include <vector>

#include "cli/runtime_flags.h"

namespace metharme::cli {

struct VerifyBenchArgs {
  std::string model;
  std::vector<int> ks;  // batch sizes; 1 is the plain decode step (always measured)
  int depth = 512;      // positions already in the cache
  int steps = 16;       // passes timed per run
  int reps = 3;         // runs; the median is reported
  int threads = 0;
  bool json = false;
  uint64_t seed = 1;
};

// Parses "1,2,4,8" (each 1..64); throws Error otherwise.
std::vector<int> parse_verify_ks(const std::string& s);

int run_verify_bench(const VerifyBenchArgs& a, const RuntimeFlags& rf);

}  // namespace metharme::cli
