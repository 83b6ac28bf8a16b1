// Architecture registry: each architecture file (granitehybrid.cpp, mamba2.cpp, llama.cpp,
// granite.cpp) registers a loader that reads its hyper-parameters and binds its tensors.
#pragma once

#include <string>
#include <vector>

#include "models/model.h"

namespace chimera {

struct ArchLoader {
  const char* name;
  Status (*load)(Model& model);  // fills model.hp and model.layers from model.file
};

// Every architecture chimera can run.
const std::vector<ArchLoader>& arch_registry();
const ArchLoader* find_arch(std::string_view name);
std::string supported_arch_names();  // "granitehybrid, mamba2, llama, granite"

}  // namespace chimera
