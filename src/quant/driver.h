// `metharme quantize`: the whole job. Streams the model layer by layer from its mmapped files,
// checkpoints after every layer into OUT.partial/, resumes from there, and finally writes a complete
// model folder (model.safetensors, config.json with quantization_config, quantize_config.json,
// tokenizer files, quant_log.json) by renaming it into place.
#pragma once

#include <string>

#include "quant/calibration.h"
#include "quant/pack.h"
#include "quant/quantizer.h"

namespace metharme::quant {

struct QuantizeOptions {
  std::string model_dir, out_dir;
  enum class Method { kGptq, kRtn } method = Method::kGptq;
  QuantConfig qc;                 // bits, group_size, sym, act_order, static_groups, percdamp, block_size
  bool true_sequential = false;
  CalibOptions calib;
  PackFormat format = PackFormat::kG2;
  std::string act_dtype = "auto";  // storage of calibration activations between layers: auto|f32|f16
  int threads = 0;                 // 0 = all CPUs; on --resume always the interrupted run's count
  bool resume = false, force = false;
  bool progress = true;
};

// Runs the job; throws Error (one line) on bad input, before anything is written where possible.
void run_quantize(const QuantizeOptions& opt);

}  // namespace metharme::quant
