#include "tests/engine/reference_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <sstream>

namespace convserve::engine::reference {
namespace {

// The tests only draw valid configurations; a violated precondition is a bug in the test.
void Require(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "reference_ops: precondition failed: %s\n", what);
    std::abort();
  }
}

int64_t Product(const std::vector<int64_t>& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

template <typename T, size_t N>
std::string Join(const std::array<T, N>& values) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < N; ++i) out << (i ? "," : "") << values[i];
  out << "]";
  return out.str();
}

}  // namespace

RefTensor::RefTensor(std::vector<int64_t> d)
    : dims(std::move(d)), data(static_cast<size_t>(Product(dims)), 0.f) {}

RefTensor::RefTensor(std::vector<int64_t> d, std::vector<float> values)
    : dims(std::move(d)), data(std::move(values)) {
  Require(static_cast<int64_t>(data.size()) == Product(dims), "RefTensor: values match dims");
}

std::string ConvParams::ToString() const {
  std::ostringstream out;
  out << "group=" << group << " strides=" << Join(strides) << " dilations=" << Join(dilations)
      << " pads=" << Join(pads);
  return out.str();
}

std::string PoolParams::ToString() const {
  std::ostringstream out;
  out << (kind == PoolKind::kMax ? "MaxPool" : "AveragePool") << " kernel=" << Join(kernel)
      << " strides=" << Join(strides) << " dilations=" << Join(dilations) << " pads=" << Join(pads)
      << " ceil_mode=" << ceil_mode << " count_include_pad=" << count_include_pad;
  return out.str();
}

RefTensor Conv2d(const RefTensor& x, const RefTensor& w, const std::vector<float>& bias,
                 const ConvParams& p) {
  Require(x.dims.size() == 4 && w.dims.size() == 4, "Conv2d: 4-D x and w");
  const int64_t n_batch = x.dims[0], channels = x.dims[1], height = x.dims[2], width = x.dims[3];
  const int64_t out_channels = w.dims[0], group_channels = w.dims[1];
  const int64_t kernel_h = w.dims[2], kernel_w = w.dims[3];
  Require(p.group >= 1 && channels == group_channels * p.group, "Conv2d: C == C/group * group");
  Require(out_channels % p.group == 0, "Conv2d: M divisible by group");
  Require(bias.empty() || static_cast<int64_t>(bias.size()) == out_channels, "Conv2d: bias [M]");
  const int64_t out_per_group = out_channels / p.group;
  const int64_t span_h = height + p.pads[0] + p.pads[2] - ((kernel_h - 1) * p.dilations[0] + 1);
  const int64_t span_w = width + p.pads[1] + p.pads[3] - ((kernel_w - 1) * p.dilations[1] + 1);
  Require(span_h >= 0 && span_w >= 0, "Conv2d: kernel fits the padded input");
  const int64_t out_h = span_h / p.strides[0] + 1, out_w = span_w / p.strides[1] + 1;

  RefTensor y({n_batch, out_channels, out_h, out_w});
  for (int64_t n = 0; n < n_batch; ++n) {
    for (int64_t m = 0; m < out_channels; ++m) {
      const int64_t g = m / out_per_group;
      for (int64_t oh = 0; oh < out_h; ++oh) {
        for (int64_t ow = 0; ow < out_w; ++ow) {
          double acc = bias.empty() ? 0.0 : bias[m];
          for (int64_t c = 0; c < group_channels; ++c) {
            const int64_t ic = g * group_channels + c;
            for (int64_t kh = 0; kh < kernel_h; ++kh) {
              const int64_t ih = oh * p.strides[0] - p.pads[0] + kh * p.dilations[0];
              if (ih < 0 || ih >= height) continue;
              for (int64_t kw = 0; kw < kernel_w; ++kw) {
                const int64_t iw = ow * p.strides[1] - p.pads[1] + kw * p.dilations[1];
                if (iw < 0 || iw >= width) continue;
                const double xv = x.data[((n * channels + ic) * height + ih) * width + iw];
                const double wv =
                    w.data[((m * group_channels + c) * kernel_h + kh) * kernel_w + kw];
                acc += xv * wv;
              }
            }
          }
          y.data[((n * out_channels + m) * out_h + oh) * out_w + ow] = static_cast<float>(acc);
        }
      }
    }
  }
  return y;
}

int64_t PoolOutputSize(int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                       int64_t pad_begin, int64_t pad_end, bool ceil_mode) {
  const int64_t span = in + pad_begin + pad_end - ((kernel - 1) * dilation + 1);
  if (span < 0) return 0;
  int64_t out = (ceil_mode ? (span + stride - 1) / stride : span / stride) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad_begin) --out;
  return out;
}

bool EveryPoolWindowHitsInput(int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                              int64_t pad_begin, int64_t pad_end, bool ceil_mode) {
  const int64_t out = PoolOutputSize(in, kernel, stride, dilation, pad_begin, pad_end, ceil_mode);
  for (int64_t o = 0; o < out; ++o) {
    bool hit = false;
    for (int64_t k = 0; k < kernel && !hit; ++k) {
      const int64_t i = o * stride - pad_begin + k * dilation;
      hit = i >= 0 && i < in;
    }
    if (!hit) return false;
  }
  return true;
}

RefTensor Pool2d(const RefTensor& x, const PoolParams& p) {
  Require(x.dims.size() == 4, "Pool2d: 4-D x");
  const int64_t n_batch = x.dims[0], channels = x.dims[1], height = x.dims[2], width = x.dims[3];
  const int64_t out_h = PoolOutputSize(height, p.kernel[0], p.strides[0], p.dilations[0], p.pads[0],
                                       p.pads[2], p.ceil_mode);
  const int64_t out_w = PoolOutputSize(width, p.kernel[1], p.strides[1], p.dilations[1], p.pads[1],
                                       p.pads[3], p.ceil_mode);
  Require(out_h >= 1 && out_w >= 1, "Pool2d: non-empty output");
  const bool is_max = p.kind == PoolKind::kMax;
  Require(is_max || (p.dilations[0] == 1 && p.dilations[1] == 1), "Pool2d: no average dilation");

  RefTensor y({n_batch, channels, out_h, out_w});
  for (int64_t n = 0; n < n_batch; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      const float* plane = &x.data[(n * channels + c) * height * width];
      for (int64_t oh = 0; oh < out_h; ++oh) {
        for (int64_t ow = 0; ow < out_w; ++ow) {
          double max_value = -std::numeric_limits<double>::infinity();
          double sum = 0.0;
          int64_t inside = 0, inside_padded = 0;
          for (int64_t kh = 0; kh < p.kernel[0]; ++kh) {
            const int64_t ih = oh * p.strides[0] - p.pads[0] + kh * p.dilations[0];
            const bool h_padded = ih >= -p.pads[0] && ih < height + p.pads[2];
            for (int64_t kw = 0; kw < p.kernel[1]; ++kw) {
              const int64_t iw = ow * p.strides[1] - p.pads[1] + kw * p.dilations[1];
              const bool w_padded = iw >= -p.pads[1] && iw < width + p.pads[3];
              if (h_padded && w_padded) ++inside_padded;
              if (ih < 0 || ih >= height || iw < 0 || iw >= width) continue;
              const double v = plane[ih * width + iw];
              max_value = std::max(max_value, v);
              sum += v;
              ++inside;
            }
          }
          Require(inside > 0, "Pool2d: every window covers an input element");
          const double value =
              is_max ? max_value
                     : sum / static_cast<double>(p.count_include_pad ? inside_padded : inside);
          y.data[((n * channels + c) * out_h + oh) * out_w + ow] = static_cast<float>(value);
        }
      }
    }
  }
  return y;
}

RefTensor GlobalPool2d(const RefTensor& x, PoolKind kind) {
  Require(x.dims.size() == 4, "GlobalPool2d: 4-D x");
  const int64_t planes = x.dims[0] * x.dims[1], area = x.dims[2] * x.dims[3];
  RefTensor y({x.dims[0], x.dims[1], 1, 1});
  for (int64_t i = 0; i < planes; ++i) {
    double max_value = -std::numeric_limits<double>::infinity(), sum = 0.0;
    for (int64_t j = 0; j < area; ++j) {
      const double v = x.data[i * area + j];
      max_value = std::max(max_value, v);
      sum += v;
    }
    y.data[i] = static_cast<float>(kind == PoolKind::kMax ? max_value : sum / area);
  }
  return y;
}

RefTensor Gemm(const RefTensor& a, const RefTensor& b, const RefTensor* c, float alpha, float beta,
               bool trans_a, bool trans_b) {
  Require(a.dims.size() == 2 && b.dims.size() == 2, "Gemm: 2-D A and B");
  const int64_t m_size = trans_a ? a.dims[1] : a.dims[0];
  const int64_t k_size = trans_a ? a.dims[0] : a.dims[1];
  const int64_t n_size = trans_b ? b.dims[0] : b.dims[1];
  Require((trans_b ? b.dims[1] : b.dims[0]) == k_size, "Gemm: inner dimensions agree");
  // C aligned to 2-D from the right; a size-1 axis broadcasts.
  int64_t c_rows = 1, c_cols = 1;
  if (c != nullptr) {
    Require(c->dims.size() <= 2, "Gemm: C of rank <= 2");
    if (c->dims.size() == 2) c_rows = c->dims[0];
    if (!c->dims.empty()) c_cols = c->dims.back();
    Require(c_rows == 1 || c_rows == m_size, "Gemm: C rows broadcast");
    Require(c_cols == 1 || c_cols == n_size, "Gemm: C columns broadcast");
  }
  RefTensor y({m_size, n_size});
  for (int64_t i = 0; i < m_size; ++i) {
    for (int64_t j = 0; j < n_size; ++j) {
      double acc = 0.0;
      for (int64_t k = 0; k < k_size; ++k) {
        const double av = trans_a ? a.data[k * m_size + i] : a.data[i * k_size + k];
        const double bv = trans_b ? b.data[j * k_size + k] : b.data[k * n_size + j];
        acc += av * bv;
      }
      double value = static_cast<double>(alpha) * acc;
      if (c != nullptr) {
        const int64_t ci = c_rows == 1 ? 0 : i, cj = c_cols == 1 ? 0 : j;
        value += static_cast<double>(beta) * c->data[ci * c_cols + cj];
      }
      y.data[i * n_size + j] = static_cast<float>(value);
    }
  }
  return y;
}

RefTensor BatchNorm(const RefTensor& x, const std::vector<float>& scale,
                    const std::vector<float>& shift, const std::vector<float>& mean,
                    const std::vector<float>& var, float epsilon) {
  Require(x.dims.size() >= 2, "BatchNorm: rank >= 2");
  const int64_t channels = x.dims[1];
  const int64_t inner = Product(x.dims) / std::max<int64_t>(1, x.dims[0] * channels);
  Require(static_cast<int64_t>(scale.size()) == channels && shift.size() == scale.size() &&
              mean.size() == scale.size() && var.size() == scale.size(),
          "BatchNorm: [C] parameters");
  RefTensor y(x.dims);
  for (int64_t i = 0; i < x.size(); ++i) {
    const int64_t c = (i / inner) % channels;
    const double normalised = (static_cast<double>(x.data[i]) - mean[c]) /
                              std::sqrt(static_cast<double>(var[c]) + epsilon);
    y.data[i] = static_cast<float>(scale[c] * normalised + shift[c]);
  }
  return y;
}

RefTensor Relu(const RefTensor& x) {
  RefTensor y = x;
  for (float& v : y.data) v = v > 0.f ? v : 0.f;
  return y;
}

RefTensor Clip(const RefTensor& x, float min_value, float max_value) {
  RefTensor y = x;
  for (float& v : y.data) v = std::min(std::max(v, min_value), max_value);
  return y;
}

RefTensor Add(const RefTensor& a, const RefTensor& b) {
  Require(a.dims == b.dims, "Add: same dims");
  RefTensor y = a;
  for (int64_t i = 0; i < y.size(); ++i) y.data[i] += b.data[i];
  return y;
}

}  // namespace convserve::engine::reference
