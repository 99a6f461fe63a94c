// The inputs JSON of dynabert_run (examples/run_model.cpp): ragged lists of token ids, or an object
// with input_ids, token_type_ids and attention_mask. The parsing lives in the example program, so
// its source is compiled here (its main renamed) and its own read_inputs() is fuzzed: io::Json,
// then the row, length and total-size checks before the padded batch is allocated.
#include <cstdint>

#define main dynabert_run_main
#include "../../examples/run_model.cpp"
#undef main

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const std::string file = fuzz::scratch() + "/inputs.json";
  fuzz::write_file(file, fuzz::view(data, size));
  for (const int max_len : {8, 512}) {
    try {
      const Batch b = read_inputs(file, /*pad_id=*/0, max_len);
      FUZZ_CHECK(b.B >= 1 && b.S >= 1 && b.S <= max_len);
      const std::size_t n = static_cast<std::size_t>(b.B) * static_cast<std::size_t>(b.S);
      FUZZ_CHECK(b.ids.size() == n && b.types.size() == n && b.mask.size() == n);
      fuzz::accepted("read_inputs");
    } catch (const dynabert::Error& e) {
      fuzz::rejected("read_inputs", e);
    }
  }
  return 0;
}
