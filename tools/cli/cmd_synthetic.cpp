// `chimera synthetic`: write a seeded random-weight model of a supported architecture, e.g. the
// shape of a small Granite 4.0-H for benchmarks (nothing can be downloaded on build machines).
#include <CLI/CLI.hpp>
#include <cstdio>

#include "command.h"
#include "models/synthetic.h"

namespace chimera::cli {
namespace {

int run_synthetic(int argc, char** argv) {
  CLI::App app{"Write a random-weight model (seeded) as GGUF.", "chimera synthetic"};
  SyntheticSpec s;
  std::string out, preset = "tiny", type = "F16";
  app.add_option("-o,--output", out, "output GGUF file")->required();
  app.add_option("--preset", preset,
                 "tiny (64 wide, 4 layers), granite4h-small (768 wide, 32 layers of which 4 "
                 "attention, FFN 2048, Mamba2 48 heads x state 128, vocabulary 50257, ~300M "
                 "parameters) or qwen35-0.8b (Qwen3.5-0.8B's shape: 1024 wide, 24 layers of "
                 "which 6 gated attention with 8 q / 2 kv heads of 256, 18 gated DeltaNet with "
                 "16 k / 16 v heads of 128, FFN 3584, vocabulary 248320, tied; sets --arch "
                 "qwen35), lfm2-350m (LFM2-350M's shape: 1024 wide, 16 layers of which 6 "
                 "attention with 16 q / 8 kv heads of 64, 10 short conv with L_cache 3, FFN "
                 "4608, vocabulary 65536, tied; sets --arch lfm2), "
                 "nemotron-h-4b (Nemotron-H-4B's shape at reduced depth: 3072 wide, 9 "
                 "layers M-M-M*-M- of Mamba2 112 heads x 64 / state 128 / 8 groups, NoPE "
                 "attention 32 q / 8 kv heads of 128 and squared-ReLU FFN 12288, vocabulary "
                 "131072, untied; sets --arch nemotron_h), falcon-h1-0.5b (Falcon-H1-0.5B's "
                 "shape: 1024 wide, 36 layers of attention 8 q / 2 kv heads of 64 in parallel "
                 "with Mamba2 d_ssm 1536 = 24 heads x 64 / state 128, SwiGLU FFN 2048, "
                 "vocabulary 32784, untied; sets --arch falcon-h1) or gemma3-270m (Gemma-3-270M's "
                 "shape: 640 wide, 18 layers, 5 sliding-window (512) : 1 global, 4 q / 1 kv heads "
                 "of 256, GeGLU FFN 2048, vocabulary 262144, tied; sets --arch gemma3)");

  app.add_option("--arch", s.arch,
                 "granitehybrid (default), mamba2, llama, granite, qwen35, qwen35moe, "
                 "qwen3next, lfm2, lfm2moe, nemotron_h, falcon-h1 or gemma3 (tiny MoE archs get 4 "
                 "experts, 2 used)");
  app.add_option("--type", type,
                 StrCat("type of the weight matrices (default F16): ", supported_type_names()));
  app.add_option("--seed", s.seed, "random seed");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  auto t = type_from_name(type);
  if (!t || !type_traits(*t).supported) {
    std::fprintf(stderr, "chimera synthetic: unknown type '%s' (use one of %s)\n", type.c_str(),
                 supported_type_names());
    return 1;
  }
  s.weight_type = *t;
  if ((s.arch == "qwen35moe" || s.arch == "qwen3next" || s.arch == "lfm2moe") && s.n_expert == 0) {
    s.n_expert = 4;
    s.n_expert_used = 2;
  }
  if (preset == "granite4h-small") {
    s.n_layer = 32;
    s.attention_layers = {5, 13, 21, 29};
    s.n_embd = 768;
    s.n_vocab = 50257;
    s.n_head = 12;
    s.n_head_kv = 4;
    s.n_ff = 2048;
    s.ssm_heads = 48;
    s.ssm_state = 128;
    s.ssm_groups = 1;
  } else if (preset == "qwen35-0.8b") {
    s.arch = "qwen35";
    s.n_layer = 24;
    s.n_embd = 1024;
    s.n_vocab = 248320;
    s.n_head = 8;
    s.n_head_kv = 2;
    s.head_dim = 256;
    s.n_ff = 3584;
    s.ssm_state = 128;
    s.ssm_groups = 16;
    s.ssm_heads = 16;
  } else if (preset == "lfm2-350m") {
    s.arch = "lfm2";
    s.n_layer = 16;
    s.attention_layers = {2, 5, 8, 10, 12, 14};
    s.n_embd = 1024;
    s.n_vocab = 65536;
    s.n_head = 16;
    s.n_head_kv = 8;
    s.n_ff = 4608;
    s.conv_kernel = 3;
  } else if (preset == "nemotron-h-4b") {
    s.arch = "nemotron_h";
    s.layer_pattern = "M-M-M*-M-";
    s.n_embd = 3072;
    s.n_vocab = 131072;
    s.n_head = 32;
    s.n_head_kv = 8;
    s.head_dim = 128;
    s.n_ff = 12288;
    s.ssm_inner = 7168;
    s.ssm_heads = 112;
    s.ssm_state = 128;
    s.ssm_groups = 8;
    s.tied_embeddings = false;
  } else if (preset == "falcon-h1-0.5b") {
    s.arch = "falcon-h1";
    s.n_layer = 36;
    s.n_embd = 1024;
    s.n_vocab = 32784;
    s.n_head = 8;
    s.n_head_kv = 2;
    s.head_dim = 64;
    s.n_ff = 2048;
    s.ssm_inner = 1536;
    s.ssm_heads = 24;
    s.ssm_state = 128;
    s.ssm_groups = 1;
    s.tied_embeddings = false;
  } else if (preset == "gemma3-270m") {
    s.arch = "gemma3";
    s.n_layer = 18;
    s.n_embd = 640;
    s.n_vocab = 262144;
    s.n_head = 4;
    s.n_head_kv = 1;
    s.head_dim = 256;
    s.n_ff = 2048;
    s.sliding_window = 512;
  } else if (preset != "tiny") {
    std::fprintf(stderr, "chimera synthetic: unknown preset '%s'\n", preset.c_str());
    return 1;
  }
  Status st = write_synthetic_model(s, out);
  if (!st.ok()) {
    std::fprintf(stderr, "chimera synthetic: %s\n", st.ToString().c_str());
    return 1;
  }
  std::printf("wrote %s (%s, %s weights)\n", out.c_str(), s.arch.c_str(), type_name(s.weight_type));
  return 0;
}

const Registrar kSynthetic({"synthetic", "write a seeded random-weight model (for benchmarks)",
                            run_synthetic});

}  // namespace
}  // namespace chimera::cli
