"""chimera's HF -> GGUF converter (numpy + the `gguf` package only; no torch).

Modules:
  checkpoint  -- reads config.json and (sharded) safetensors files lazily, F32/F16/BF16/F64
  vocab       -- writes a byte-level BPE tokenizer.json as a `gpt2` GGUF vocabulary
  archs       -- per-architecture key and tensor plans (llama, granite, granitehybrid, mamba2,
                 qwen3next, qwen35, qwen35moe)
  output      -- turns a plan into a GGUF file (types per llama.cpp conventions, atomic write)
"""


class ConversionError(Exception):
    """A checkpoint that cannot be converted; the message names the file/key/tensor at fault."""
