// libFuzzer target for the GGUF reader: parse arbitrary bytes with GgufFile::from_buffer and, when
// they parse, touch everything a consumer could: every kv (typed accessors, every array element,
// every string byte) and every tensor's data bytes. ASan/UBSan report any read outside the input.
#include <cstddef>
#include <cstdint>
#include <string>

#include "gguf/gguf_file.h"

namespace {

volatile uint64_t g_sink;  // keeps the reads from being optimized away

void touch(std::string_view s) {
  uint64_t h = s.size();
  for (char c : s) h = h * 31 + static_cast<unsigned char>(c);
  g_sink = g_sink + h;
}

void walk(const chimera::GgufFile& f) {
  using namespace chimera;
  uint64_t acc = f.alignment() + f.data_offset() + f.version();
  for (const GgufKV& kv : f.kvs()) {
    touch(kv.key);
    const GgufValue& v = kv.value;
    if (v.type == GgufValueType::ARRAY) {
      for (uint64_t i = 0; i < v.count; ++i) {
        GgufValue e = gguf_array_element(v, i);
        touch(e.str);
        acc += e.u + static_cast<uint64_t>(e.i) + static_cast<uint64_t>(e.f == e.f);
      }
      (void)f.get_array<int64_t>(kv.key);
      (void)f.get_array<float>(kv.key);
      (void)f.get_string_array(kv.key);
      (void)f.get_per_layer(kv.key, static_cast<uint32_t>(v.count));
    } else {
      touch(v.str);
      (void)f.get<uint32_t>(kv.key);
      (void)f.get<int8_t>(kv.key);
      (void)f.get<bool>(kv.key);
      (void)f.get<double>(kv.key);
      (void)f.get<std::string>(kv.key);
      (void)f.get_per_layer(kv.key, 3);
    }
  }
  touch(f.architecture());
  for (const GgufTensorInfo& t : f.tensors()) {
    touch(t.name);
    touch(t.shape_string());
    acc += t.n_elements() + t.row_bytes();
    for (uint64_t i = 0; i < t.nbytes; ++i) acc += t.data[i];
  }
  g_sink = g_sink + acc;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = chimera::GgufFile::from_buffer(data, size, "fuzz");
  if (f.ok()) walk(**f);
  return 0;
}
