// metharme chat: an interactive Metharme conversation in the terminal (or one turn per line of
// piped input), streaming each reply as it is written.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <optional>
#include <cstring>

#include "chat/session.h"
#include "cli/command.h"
#include "cli/runtime_flags.h"
#include "cli/sampler_flags.h"
#include "model/llama.h"
#include "util/error.h"
#include "util/fs.h"

namespace metharme::cli {
namespace {

std::atomic<bool> g_interrupted{false};

void on_sigint(int) { g_interrupted.store(true); }

// Ctrl-C sets a flag (and interrupts a blocking read) instead of ending the process.
void install_sigint() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: read() returns EINTR
  sigaction(SIGINT, &sa, nullptr);
}

enum class Read { kLine, kEof, kInterrupted };

// Lines from stdin through read(2), so that Ctrl-C can interrupt the wait.
class LineReader {
 public:
  Read next(std::string& line) {
    for (;;) {
      size_t nl = buf_.find('\n');
      if (nl != std::string::npos) {
        line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return Read::kLine;
      }
      if (eof_) {
        if (buf_.empty()) return Read::kEof;
        line.swap(buf_);
        buf_.clear();
        return Read::kLine;
      }
      char tmp[4096];
      ssize_t n = ::read(0, tmp, sizeof tmp);
      if (n > 0) {
        buf_.append(tmp, size_t(n));
      } else if (n == 0) {
        eof_ = true;
      } else if (errno == EINTR) {
        if (g_interrupted.exchange(false)) {
          buf_.clear();
          return Read::kInterrupted;
        }
      } else {
        eof_ = true;
      }
    }
  }

 private:
  std::string buf_;
  bool eof_ = false;
};

struct Args {
  std::string model, system, system_file, memory, memory_file, load;
  int ctx = 2048, n = 200;
  bool no_shift = false, stats = false;
};

const char* kHelp =
    "Commands:\n"
    "  /help          this list\n"
    "  /reset         forget the conversation (the system prompt and memory stay)\n"
    "  /save FILE     write the conversation to FILE (JSON)\n"
    "  /load FILE     replace the conversation with FILE's\n"
    "  /retry         write the last reply again\n"
    "  /undo          remove your last message and its reply\n"
    "  /quit          leave (or Ctrl-D)\n"
    "Input: end a line with \\ to continue on the next one, or wrap several lines in \"\"\" lines.\n"
    "Start a message with // to send a text that begins with /. Ctrl-C stops the reply being written.\n";

std::string file_text(const std::string& path) {
  std::string s = read_text_file(path);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

class ChatRepl {
 public:
  ChatRepl(ChatSession& chat, const GenerateOptions& go, bool tty, bool stats)
      : chat_(chat), go_(go), tty_(tty), stats_(stats) {}

  // Returns the exit code: 0, or 1 when a piped session had an error.
  int run() {
    std::string text;
    for (;;) {
      Read r = read_message(text);
      if (r == Read::kEof) break;
      if (r == Read::kInterrupted) {
        if (!tty_) return 130;
        std::fputs("\n(Ctrl-D or /quit to leave)\n", stderr);
        continue;
      }
      if (text.find_first_not_of(" \t") == std::string::npos) continue;
      try {
        if (text[0] == '/' && text.compare(0, 2, "//") != 0) {
          if (!command(text)) break;
        } else {
          reply(text[0] == '/' ? text.substr(1) : text, false);
        }
      } catch (const std::exception& e) {  // the chat goes on
        std::fprintf(stderr, "error: %s\n", e.what());
        failed_ = true;
      }
    }
    if (tty_) std::fputc('\n', stdout);
    return failed_ && !tty_ ? 1 : 0;
  }

 private:
  void prompt(const char* p) {
    if (!tty_) return;
    std::fputs(p, stdout);
    std::fflush(stdout);
  }

  // One user message: a line; on a terminal also "\"-continued lines or a """ block.
  Read read_message(std::string& text) {
    text.clear();
    std::string line;
    prompt("\n> ");
    Read r = in_.next(line);
    if (r != Read::kLine || !tty_) {
      text = line;
      return r;
    }
    if (line == "\"\"\"") {
      bool first = true;
      for (;;) {
        prompt("... ");
        r = in_.next(line);
        if (r != Read::kLine) return r == Read::kEof && !text.empty() ? Read::kLine : r;
        if (line == "\"\"\"") return Read::kLine;
        text += (first ? "" : "\n") + line;
        first = false;
      }
    }
    while (!line.empty() && line.back() == '\\') {
      line.pop_back();
      text += line + "\n";
      prompt("... ");
      r = in_.next(line);
      if (r == Read::kInterrupted) return r;
      if (r == Read::kEof) line.clear();
    }
    text += line;
    return Read::kLine;
  }

  // Returns false to leave.
  bool command(const std::string& line) {
    size_t sp = line.find(' ');
    std::string cmd = line.substr(0, sp);
    std::string arg = sp == std::string::npos ? "" : line.substr(sp + 1);
    arg.erase(0, arg.find_first_not_of(' '));
    arg.erase(arg.find_last_not_of(' ') + 1);
    Conversation& c = chat_.conversation();
    if (cmd == "/quit" || cmd == "/exit") return false;
    if (cmd == "/help") {
      std::fputs(kHelp, stderr);
    } else if (cmd == "/reset") {
      c.messages.clear();
      note("(conversation cleared)");
    } else if (cmd == "/save") {
      if (arg.empty()) fail("usage: /save FILE");
      save_conversation(arg, c);
      note(cat("(saved ", c.messages.size(), " messages to ", arg, ")"));
    } else if (cmd == "/load") {
      if (arg.empty()) fail("usage: /load FILE");
      c = load_conversation(arg);
      note(cat("(loaded ", c.messages.size(), " messages from ", arg, ")"));
    } else if (cmd == "/retry") {
      reply("", true);
    } else if (cmd == "/undo") {
      if (!chat_.undo()) fail("there is no message to undo");
      note("(removed your last message and its reply)");
    } else {
      fail("unknown command ", cmd, " (try /help)");
    }
    return true;
  }

  void note(const std::string& s) {
    if (tty_) std::fprintf(stderr, "%s\n", s.c_str());
  }

  void reply(const std::string& text, bool retry) {
    g_interrupted.store(false);
    // Each reply draws from its own seed (base + count), so a script replays exactly and
    // /retry gives a different reply.
    GenerateOptions go = go_;
    go.sampler.seed = go_.sampler.seed + n_replies_++;
    bool started = false;  // leading whitespace of a reply is not printed
    auto sink = [&](const std::string& piece) {
      std::string_view v(piece);
      if (!started) {
        size_t k = v.find_first_not_of(" \n");
        if (k == std::string_view::npos) return true;
        v.remove_prefix(k);
        started = true;
      }
      std::fwrite(v.data(), 1, v.size(), stdout);
      std::fflush(stdout);
      return true;
    };
    ChatReply r = retry ? chat_.retry(go, sink) : chat_.say(text, go, sink);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    if (r.finish == FinishReason::kAborted) std::fputs("(stopped)\n", stderr);
    if (stats_) {
      int n = int(r.tokens.size());
      std::fprintf(stderr, "[prompt %d tokens: %d reused, %d evaluated in %.2f s; reply %d tokens in %.2f s (%.2f tok/s), %s; window from message %zu]\n",
                   r.prompt_tokens, r.prompt_reused, r.prompt_tokens - r.prompt_reused, r.prompt_seconds, n,
                   r.gen_seconds, n > 1 ? (n - 1) / std::max(r.gen_seconds, 1e-9) : 0.0, finish_reason_name(r.finish),
                   r.first_message);
      if (r.spec.steps > 0)
        std::fprintf(stderr, "[speculative: %lld steps, %lld of %lld drafts accepted, %.2f tokens per step]\n",
                     static_cast<long long>(r.spec.steps), static_cast<long long>(r.spec.accepted),
                     static_cast<long long>(r.spec.drafted), r.spec.tokens_per_step());
    }
  }

  ChatSession& chat_;
  GenerateOptions go_;
  bool tty_, stats_, failed_ = false;
  uint64_t n_replies_ = 0;
  LineReader in_;
};

Registrar reg("chat", "Chat with a Metharme model: streams replies; one user turn per line when stdin is not a terminal",
              [](CLI::App& app) {
  auto a = std::make_shared<Args>();
  app.add_option("-m,--model", a->model, "Model folder")->required();
  auto* sys = app.add_option("--system", a->system, "System prompt (persona, instructions)");
  app.add_option("--system-file", a->system_file, "Read the system prompt from a file")->excludes(sys);
  auto* mem = app.add_option("--memory", a->memory, "Memory: text kept after the system prompt");
  app.add_option("--memory-file", a->memory_file, "Read the memory from a file")->excludes(mem);
  app.add_option("--load", a->load, "Start from a conversation saved with /save");
  app.add_option("-c,--ctx,--contextsize", a->ctx, "Context size in tokens (beyond the model's: automatic RoPE scaling)")
      ->capture_default_str()
      ->check(CLI::Range(16, 1 << 20));
  app.add_option("-n,--max-reply", a->n, "Tokens per reply at most (kept free in the context)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  app.add_flag("--no-context-shift", a->no_shift,
               "When old turns scroll out, re-evaluate the kept ones instead of shifting the cache (exact, slower)");
  app.add_flag("--stats", a->stats, "Print token counts and speed after each reply (stderr)");
  auto rf = add_runtime_flags(app, "f32");
  add_speculative_flags(app, *rf);
  auto sf = add_sampler_flags(app, kobold_lite_defaults());
  return [a, sf, rf] {
    if (!a->system_file.empty()) a->system = file_text(a->system_file);
    if (!a->memory_file.empty()) a->memory = file_text(a->memory_file);
    auto w = load_weights(a->model);
    Tokenizer tok = Tokenizer::from_folder(a->model);
    RuntimeOptions ro;
    apply_runtime_flags(*rf, *w, ro);
    ro.n_ctx = a->ctx;
    LlamaRuntime rt(*w, ro);
    if (a->n >= rt.n_ctx()) fail("--max-reply (", a->n, ") must be smaller than the context (", rt.n_ctx(), ")");
    GenerateOptions go;
    go.max_tokens = a->n;
    go.sampler = sf->resolve(rt.n_vocab(), tok, rt.n_ctx());
    go.stop = metharme_stop_strings();
    go.stop.insert(go.stop.end(), sf->stops.begin(), sf->stops.end());
    go.trim_stop = true;
    go.context_shift = !a->no_shift;
    go.abort = &g_interrupted;
    auto spec = setup_speculation(*rf, tok, rt, ro);
    std::optional<Drafter> drafter;  // its draft-model cache follows the chat across turns
    if (spec->cfg.enabled()) {
      drafter.emplace(spec->cfg, 0);
      go.drafter = &*drafter;
      go.draft_max = spec->cfg.draft_max;
    }
    ChatSession chat(rt, tok);
    if (!a->load.empty()) chat.conversation() = load_conversation(a->load);
    if (!a->system.empty() || a->load.empty()) chat.conversation().system = a->system;
    if (!a->memory.empty() || a->load.empty()) chat.conversation().memory = a->memory;
    install_sigint();  // from here on Ctrl-C stops a reply instead of the program
    const bool tty = ::isatty(0);
    if (tty)
      std::fprintf(stderr,
                   "metharme chat: %s (%s), context %d tokens, replies up to %d tokens, seed %llu.\n"
                   "Type /help for commands. Ctrl-C stops a reply, Ctrl-D leaves.\n",
                   a->model.c_str(), w->format.c_str(), rt.n_ctx(), a->n,
                   static_cast<unsigned long long>(go.sampler.seed));
    ChatRepl repl(chat, go, tty, a->stats);
    return repl.run();
  };
});

}  // namespace
}  // namespace metharme::cli
