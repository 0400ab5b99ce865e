#include "server/engine/spatial_math.h"

#include <algorithm>

namespace convserve::engine {

std::optional<AutoPad> ParseAutoPad(std::string_view value) {
  if (value == "NOTSET") return AutoPad::kNotSet;
  if (value == "SAME_UPPER") return AutoPad::kSameUpper;
  if (value == "SAME_LOWER") return AutoPad::kSameLower;
  if (value == "VALID") return AutoPad::kValid;
  return std::nullopt;
}

int64_t WindowExtent(int64_t kernel, int64_t dilation) { return (kernel - 1) * dilation + 1; }

std::optional<int64_t> WindowOutputSize(int64_t in, int64_t window, int64_t stride,
                                        int64_t pad_begin, int64_t pad_end, bool ceil_mode) {
  const int64_t span = in + pad_begin + pad_end - window;
  if (span < 0) return std::nullopt;
  int64_t out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  // A window that would start in the end padding is dropped.
  if (ceil_mode && (out - 1) * stride >= in + pad_begin) --out;
  return out;
}

int64_t WindowPaddingForOutput(int64_t in, int64_t out, int64_t window, int64_t stride) {
  return (out - 1) * stride + window - in;
}

WindowPads SplitPadding(int64_t total, AutoPad mode) {
  const int64_t small = total / 2;
  const int64_t begin = mode == AutoPad::kSameLower ? total - small : small;
  return {begin, total - begin};
}

std::optional<WindowAxis> ResolveWindowAxis(int64_t in, AutoPad auto_pad, int64_t window,
                                            int64_t stride, WindowPads pads, bool ceil_mode) {
  switch (auto_pad) {
    case AutoPad::kSameUpper:
    case AutoPad::kSameLower: {
      const int64_t out = (in + stride - 1) / stride;
      const int64_t total = std::max<int64_t>(0, WindowPaddingForOutput(in, out, window, stride));
      return WindowAxis{out, SplitPadding(total, auto_pad)};
    }
    case AutoPad::kValid:
      pads = {};
      break;
    case AutoPad::kNotSet:
      break;
  }
  const std::optional<int64_t> out =
      WindowOutputSize(in, window, stride, pads.begin, pads.end, ceil_mode);
  if (!out) return std::nullopt;
  return WindowAxis{*out, pads};
}

}  // namespace convserve::engine
