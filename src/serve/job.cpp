#include "serve/job.h"

namespace metharme::serve {

const char* finish_name(Finish f) {
  switch (f) {
    case Finish::kLength: return "length";
    case Finish::kEos: return "eos";
    case Finish::kStop: return "stop";
    case Finish::kAbort: return "abort";
    case Finish::kError: return "error";
    case Finish::kNone: break;
  }
  return "none";
}

void Job::wait(size_t have, std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait_for(lk, timeout, [&] { return done_ || text_.size() > have; });
}

std::string Job::text() const {
  std::lock_guard<std::mutex> lk(mu_);
  return text_;
}

std::string Job::text_from(size_t offset) const {
  std::lock_guard<std::mutex> lk(mu_);
  return offset < text_.size() ? text_.substr(offset) : std::string();
}

bool Job::done() const {
  std::lock_guard<std::mutex> lk(mu_);
  return done_;
}

Finish Job::finish() const {
  std::lock_guard<std::mutex> lk(mu_);
  return finish_;
}

std::string Job::error() const {
  std::lock_guard<std::mutex> lk(mu_);
  return error_;
}

JobStats Job::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

std::vector<int> Job::tokens() const {
  std::lock_guard<std::mutex> lk(mu_);
  return tokens_;
}

void Job::append(std::string_view more) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    text_ += more;
  }
  cv_.notify_all();
}

void Job::set_stats(const JobStats& s) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stats_ = s;
    started_ = true;
  }
  cv_.notify_all();
}

void Job::wait_started() const {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return started_ || done_; });
}

void Job::end(Finish f, std::string final_text, std::string error, std::vector<int> tokens) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    tokens_ = std::move(tokens);
    // The final text extends what was streamed; keep the streamed prefix if it ever would not.
    if (final_text.size() >= text_.size() && final_text.compare(0, text_.size(), text_) == 0) text_ = std::move(final_text);
    done_ = true;
    finish_ = f;
    error_ = std::move(error);
  }
  cv_.notify_all();
}

}  // namespace metharme::serve
