// ONNX sliding-window arithmetic (Conv, MaxPool, AveragePool), one spatial axis at a time:
// auto_pad (NOTSET, SAME_UPPER, SAME_LOWER, VALID), explicit pads, strides, dilations and
// ceil_mode -> output extent and padding. The one place this is computed: the host ops' shape
// inference, the oneDNN lowering (ops/spatial.cc), the cost model and the profiler all call it.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace convserve::engine {

enum class AutoPad { kNotSet, kSameUpper, kSameLower, kValid };

// "NOTSET", "SAME_UPPER", "SAME_LOWER" or "VALID"; std::nullopt for anything else.
std::optional<AutoPad> ParseAutoPad(std::string_view value);

// The input positions one window covers: (kernel - 1) * dilation + 1, with ONNX's dilation
// convention (1 = none).
int64_t WindowExtent(int64_t kernel, int64_t dilation);

// Output extent for explicit pads (stride >= 1):
//   floor((in + pad_begin + pad_end - window) / stride) + 1, or ceil in ceil_mode,
// where in ceil_mode a last window that would start in the end padding (at or past
// in + pad_begin) is dropped (ONNX, PyTorch). std::nullopt when the window is wider than the
// padded input.
std::optional<int64_t> WindowOutputSize(int64_t in, int64_t window, int64_t stride,
                                        int64_t pad_begin, int64_t pad_end, bool ceil_mode = false);

// The total padding with which the floor form of WindowOutputSize maps `in` to `out`:
// (out - 1) * stride + window - in. Negative when trailing input positions go unused.
int64_t WindowPaddingForOutput(int64_t in, int64_t out, int64_t window, int64_t stride);

struct WindowPads {
  int64_t begin = 0, end = 0;
  friend bool operator==(const WindowPads&, const WindowPads&) = default;
};

// Splits `total` padding as auto_pad does: SAME_LOWER puts the odd extra at the beginning
// (begin = total - total / 2); every other mode, SAME_UPPER included, at the end
// (begin = total / 2).
WindowPads SplitPadding(int64_t total, AutoPad mode);

struct WindowAxis {
  int64_t output = 0;
  WindowPads pads;  // the effective pads (auto_pad applied)
  friend bool operator==(const WindowAxis&, const WindowAxis&) = default;
};

// One axis (in >= 0, stride >= 1) under auto_pad:
//   SAME_UPPER / SAME_LOWER: output ceil(in / stride) (ceil_mode makes no difference), pads the
//     split of max(0, WindowPaddingForOutput(in, output, window, stride)); `pads` is ignored;
//   VALID: pads zero, then WindowOutputSize;
//   NOTSET: `pads` as given, then WindowOutputSize.
// std::nullopt when the window is wider than the padded input (never for SAME_*).
std::optional<WindowAxis> ResolveWindowAxis(int64_t in, AutoPad auto_pad, int64_t window,
                                            int64_t stride, WindowPads pads, bool ceil_mode);

}  // namespace convserve::engine
