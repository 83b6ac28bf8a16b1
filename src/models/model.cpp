#include "models/model.h"

#include "models/registry.h"

namespace chimera {

uint32_t Model::n_attention_layers() const {
  uint32_t n = 0;
  for (const LayerWeights& l : layers)
    n += l.kind == MixerKind::kAttention || l.kind == MixerKind::kAttentionMamba2;
  return n;
}

uint32_t Model::n_recurrent_layers() const {
  uint32_t n = 0;
  for (const LayerWeights& l : layers) n += keeps_recurrent_state(l.kind);
  return n;
}

std::string Model::describe() const {
  return StrCat(
      hp.arch, ": ", hp.n_layer, " layers (", n_attention_layers(), " attention, ",
      n_recurrent_layers(), " recurrent",
      n_attention_layers() + n_recurrent_layers() < hp.n_layer
          ? StrCat(", ", hp.n_layer - n_attention_layers() - n_recurrent_layers(), " FFN-only")
          : "",
      "), width ", hp.n_embd, ", vocabulary ", hp.n_vocab,
      hp.n_expert ? StrCat(", ", hp.n_expert, " experts (", hp.n_expert_used, " used)") : "");
}

Result<std::unique_ptr<Model>> load_model(const std::string& path, GgufLoad how) {
  CHIMERA_ASSIGN_OR_RETURN(auto file, GgufFile::open(path, how));
  return load_model(std::move(file));
}

Result<std::unique_ptr<Model>> load_model(std::unique_ptr<GgufFile> file) {
  auto model = std::make_unique<Model>();
  std::string arch(file->architecture());
  if (arch.empty()) return Error(ErrorCode::kFormat, file->path(), ": no general.architecture key");
  const ArchLoader* loader = find_arch(arch);
  if (!loader)
    return Error(ErrorCode::kUnsupported, file->path(), ": architecture '", arch,
                 "' is not supported (supported: ", supported_arch_names(), ")");
  model->file = std::move(file);
  model->hp.arch = arch;
  CHIMERA_RETURN_IF_ERROR(loader->load(*model));
  return model;
}

}  // namespace chimera
