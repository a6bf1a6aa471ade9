#include "util/buffer.h"

#include <sys/mman.h>

#include "util/error.h"

namespace metharme {

PageBuffer::PageBuffer(size_t bytes) : n_(bytes) {
  if (bytes == 0) return;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail("out of memory: cannot reserve ", bytes >> 20, " MiB");
  p_ = static_cast<uint8_t*>(p);
}

void PageBuffer::advise_huge_pages() {
#ifdef MADV_HUGEPAGE
  if (p_) ::madvise(p_, n_, MADV_HUGEPAGE);
#endif
}

PageBuffer::~PageBuffer() {
  if (p_) ::munmap(p_, n_);
}

PageBuffer& PageBuffer::operator=(PageBuffer&& o) noexcept {
  if (this != &o) {
    if (p_) ::munmap(p_, n_);
    p_ = o.p_;
    n_ = o.n_;
    o.p_ = nullptr;
    o.n_ = 0;
  }
  return *this;
}

}  // namespace metharme
