#include <algorithm>

#include "server/engine/ops/ops.h"

namespace convserve::engine::ops {

Spatial SpatialParams(const Node& node, const Dims& input, const Dims& output, const Dims& kernel) {
  const size_t n = kernel.size();
  const std::vector<int64_t> strides = node.GetInts("strides", std::vector<int64_t>(n, 1));
  const std::vector<int64_t> dilations = node.GetInts("dilations", std::vector<int64_t>(n, 1));
  const std::vector<int64_t> pads = node.GetInts("pads", std::vector<int64_t>(2 * n, 0));
  const std::string auto_pad = node.GetString("auto_pad", "NOTSET");
  Spatial s;
  for (size_t k = 0; k < n; ++k) {
    const int64_t in = input[2 + k], out = output[2 + k];
    const int64_t extent = (kernel[k] - 1) * dilations[k] + 1;
    const int64_t needed = std::max<int64_t>(0, (out - 1) * strides[k] + extent - in);
    int64_t left = 0;
    if (auto_pad == "SAME_UPPER") {
      left = needed / 2;
    } else if (auto_pad == "SAME_LOWER") {
      left = needed - needed / 2;
    } else if (auto_pad == "VALID") {
      left = 0;
    } else {
      left = pads[k];
    }
    s.kernel.push_back(kernel[k]);
    s.strides.push_back(strides[k]);
    s.dilations.push_back(dilations[k] - 1);
    s.pad_l.push_back(left);
    // Right padding that makes oneDNN's floor formula produce `out` (covers ceil_mode too).
    s.pad_r.push_back((out - 1) * strides[k] + extent - in - left);
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
