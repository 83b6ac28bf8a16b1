#include "models/registry.h"

namespace chimera {

Status load_granitehybrid(Model& m);
Status load_mamba2(Model& m);
Status load_llama(Model& m);
Status load_granite(Model& m);
Status load_qwen35(Model& m);
Status load_qwen35moe(Model& m);
Status load_qwen3next(Model& m);
Status load_nemotron_h(Model& m);
Status load_nemotron_h_moe(Model& m);
Status load_lfm2(Model& m);
Status load_lfm2moe(Model& m);
Status load_falcon_h1(Model& m);
Status load_gemma3(Model& m);

const std::vector<ArchLoader>& arch_registry() {
  static const std::vector<ArchLoader> archs = {
      {"granitehybrid", load_granitehybrid},
      {"mamba2", load_mamba2},
      {"llama", load_llama},
      {"granite", load_granite},
      {"qwen35", load_qwen35},
      {"qwen35moe", load_qwen35moe},
      {"qwen3next", load_qwen3next},
      {"nemotron_h", load_nemotron_h},
      {"nemotron_h_moe", load_nemotron_h_moe},
      {"lfm2", load_lfm2},
      {"lfm2moe", load_lfm2moe},
      {"falcon-h1", load_falcon_h1},
      {"gemma3", load_gemma3},
  };
  return archs;
}

const ArchLoader* find_arch(std::string_view name) {
  for (const ArchLoader& a : arch_registry())
    if (name == a.name) return &a;
  return nullptr;
}

std::string supported_arch_names() {
  std::string s;
  for (const ArchLoader& a : arch_registry()) {
    if (!s.empty()) s += ", ";
    s += a.name;
  }
  return s;
}

}  // namespace chimera
