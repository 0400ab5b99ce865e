#include <algorithm>

#include "server/engine/ops/ops.h"
#include "server/engine/spatial_math.h"

namespace convserve::engine::ops {

Spatial SpatialParams(const Node& node, const Dims& input, const Dims& output, const Dims& kernel) {
  const size_t n = kernel.size();
  const std::vector<int64_t> strides = node.GetInts("strides", std::vector<int64_t>(n, 1));
  const std::vector<int64_t> dilations = node.GetInts("dilations", std::vector<int64_t>(n, 1));
  const std::vector<int64_t> pads = node.GetInts("pads", std::vector<int64_t>(2 * n, 0));
  const AutoPad auto_pad =
      ParseAutoPad(node.GetString("auto_pad", "NOTSET")).value_or(AutoPad::kNotSet);
  Spatial s;
  for (size_t k = 0; k < n; ++k) {
    const int64_t in = input[2 + k], out = output[2 + k];
    const int64_t window = WindowExtent(kernel[k], dilations[k]);
    // The total padding oneDNN's floor formula needs to produce `out` (covers ceil_mode too).
    const int64_t needed = WindowPaddingForOutput(in, out, window, strides[k]);
    int64_t left = pads[k];
    if (auto_pad == AutoPad::kSameUpper || auto_pad == AutoPad::kSameLower) {
      left = SplitPadding(std::max<int64_t>(0, needed), auto_pad).begin;
    } else if (auto_pad == AutoPad::kValid) {
      left = 0;
    }
    s.kernel.push_back(kernel[k]);
    s.strides.push_back(strides[k]);
    s.dilations.push_back(dilations[k] - 1);
    s.pad_l.push_back(left);
    s.pad_r.push_back(needed - left);
  }
  return s;
}

dnnl::primitive_attr DefaultAttr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

Dims AlignRank(const Dims& dims, size_t rank) {
  Dims out(rank > dims.size() ? rank - dims.size() : 0, 1);
  out.insert(out.end(), dims.begin(), dims.end());
  return out;
}

}  // namespace convserve::engine::ops
