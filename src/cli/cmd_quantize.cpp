// metharme quantize: GPTQ or RTN 4-bit quantization of a 16-bit LLaMA folder (see README.md).
#include "cli/command.h"
#include "quant/driver.h"

namespace metharme::cli {
namespace {

struct Args {
  quant::QuantizeOptions o;
  std::string method = "gptq", format = "g2", calib_format = "auto";
  int groupsize = -1;
  bool quiet = false;
};

Registrar reg("quantize", "Quantize a 16-bit LLaMA folder to GPTQ 4-bit (GPTQ or RTN), layer by layer, resumable",
              [](CLI::App& app) {
  auto a = std::make_shared<Args>();
  quant::QuantizeOptions& o = a->o;
  app.add_option("-m,--model", o.model_dir, "Input model folder (16-bit safetensors)")->required();
  app.add_option("-o,--out", o.out_dir, "Output folder (must not exist unless --force)")->required();
  app.add_option("--wbits", o.qc.bits, "Bits per weight (4; 2 and 8 are packed but our kernels run 4 only)")
      ->check(CLI::IsMember({2, 4, 8}));
  app.add_option("--groupsize", a->groupsize, "Inputs per quantization group; -1 = one group per row");
  app.add_flag("--act-order", o.qc.act_order, "Quantize columns in descending Hessian-diagonal order (desc_act)");
  app.add_flag("--static-groups", o.qc.static_groups, "Fix group grids on the original column ranges (trivial g_idx)");
  app.add_flag("--true-sequential", o.true_sequential,
               "Quantize [k,v,q] -> [o] -> [up,gate] -> [down], each from the already-quantized inputs");
  app.add_flag("--sym", o.qc.sym, "Symmetric grid (zero point 2^(bits-1)); default asymmetric");
  app.add_option("--percdamp", o.qc.percdamp, "Hessian damping as a fraction of its mean diagonal");
  app.add_option("--method", a->method, "gptq or rtn (round to nearest, no calibration)")
      ->check(CLI::IsMember({"gptq", "rtn"}));
  app.add_option("--calib", o.calib.path, "Calibration data (text, jsonl, jsonl.gz with a \"text\" field, or ids .npy)");
  app.add_option("--calib-format", a->calib_format, "auto (by file name), text, jsonl, jsonl.gz or ids.npy")
      ->check(CLI::IsMember({"auto", "text", "jsonl", "jsonl.gz", "ids.npy"}));
  auto* ns = app.add_option("--nsamples", o.calib.nsamples, "Calibration windows (default 128)")->check(CLI::Range(1, 1 << 20));
  auto* sl = app.add_option("--seqlen", o.calib.seqlen, "Tokens per window (default 2048)")->check(CLI::Range(1, 1 << 20));
  app.add_option("--seed", o.calib.seed, "Seed of the window sampler (Python random, as GPTQ-for-LLaMa)");
  app.add_option("--format", a->format, "g2 (GPTQ-for-LLaMa/AutoGPTQ, default), g1 (old KoboldAI fork), gptq_v2")
      ->check(CLI::IsMember({"g2", "g1", "gptq_v2"}));
  app.add_option("--act-dtype", o.act_dtype, "Calibration activations between layers: auto, f32 or f16")
      ->check(CLI::IsMember({"auto", "f32", "f16"}));
  add_threads_option(app, o.threads);
  app.add_flag("--resume", o.resume, "Continue an interrupted run from OUT.partial (same options)");
  app.add_flag("--force", o.force, "Replace an existing OUT (only once the new one is complete)");
  app.add_flag("-q,--quiet", a->quiet, "No progress output");
  return [a, ns, sl] {
    quant::QuantizeOptions& o = a->o;
    o.method = a->method == "rtn" ? quant::QuantizeOptions::Method::kRtn : quant::QuantizeOptions::Method::kGptq;
    o.qc.group_size = a->groupsize;
    o.format = quant::parse_pack_format(a->format);
    o.calib.format = quant::parse_calib_format(a->calib_format);
    o.calib.nsamples_given = ns->count() > 0;
    o.calib.seqlen_given = sl->count() > 0;
    o.progress = !a->quiet;
    quant::run_quantize(o);
    return 0;
  };
});

}  // namespace
}  // namespace metharme::cli
