#include "ops/q4_linear.h"

#include "util/error.h"

namespace metharme::ops {

size_t q4_weight_bytes(const Q4Weight& w) { return size_t(w.n_out) * size_t(w.n_in) / 2; }
std::string q4_describe(const Q4Weight& w) { return cat("q4 g", w.group_size); }
void q4_linear(const Linear&, const float*, int, float*, ThreadPool&) { fail("int4 linear layers are not implemented yet"); }

}  // namespace metharme::ops
