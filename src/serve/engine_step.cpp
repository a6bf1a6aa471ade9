// Engine::forward_step: the step's one forward, and what happens when it throws.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "serve/engine.h"

namespace metharme::serve {

// One forward over batch_. A step that throws (a GPU device error, an allocation) is run again
// one slot at a time, so a failure that belongs to one request fails that request alone: a slot
// whose own step throws again ends with that error (500) and the others keep their logits rows.
// A device that is really gone fails every slot this way, each with the device's message.
void Engine::forward_step() {
  std::string first;
  try {
    rt_->forward(batch_, logits_.data());
    return;
  } catch (const std::exception& e) {
    first = e.what();
  }
  std::fprintf(stderr, "serve: step failed (%s); running it again one request at a time\n", first.c_str());
  const size_t vocab = size_t(rt_->n_vocab());
  std::vector<BatchToken> one;  // the error path only: allocation here is fine
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[i];
    if (!s.job) continue;
    one.clear();
    int row = 0, first_row = -1;
    for (const BatchToken& t : batch_) {
      if (t.seq == int32_t(i)) {
        one.push_back(t);
        if (t.logits && first_row < 0) first_row = row;
      }
      row += t.logits ? 1 : 0;
    }
    if (one.empty()) continue;
    try {
      rt_->forward(one, logits_.data() + size_t(std::max(first_row, 0)) * vocab);
    } catch (const std::exception& e) {
      finish(s, Finish::kError, e.what());
    }
  }
}

}  // namespace metharme::serve
