#include "server/engine/tensor.h"

#include <bit>
#include <string>

namespace convserve::engine {
namespace {

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {  // inf / NaN
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else if (exponent != 0) {  // normal
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {  // +-0
    bits = sign;
  } else {  // subnormal: renormalise
    int e = -1;
    do {
      ++e;
      mantissa <<= 1;
    } while ((mantissa & 0x400u) == 0);
    bits = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((mantissa & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(bits);
}

float BFloat16ToFloat(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

// Calls fn(value) for every element, with value of the stored C++ type (fp16/bf16 as float).
template <typename Fn>
void ForEachElement(const Tensor& t, Fn&& fn) {
  const int64_t n = t.num_elements();
  if (t.bytes.size() < static_cast<size_t>(n) * ElementSize(t.dtype)) return;
  auto each = [&](auto tag) {
    using T = decltype(tag);
    const T* p = t.data<T>();
    for (int64_t i = 0; i < n; ++i) fn(p[i]);
  };
  switch (t.dtype) {
    case DataType::kFloat32:
      each(float{});
      break;
    case DataType::kFloat64:
      each(double{});
      break;
    case DataType::kInt8:
      each(int8_t{});
      break;
    case DataType::kUint8:
      each(uint8_t{});
      break;
    case DataType::kInt16:
      each(int16_t{});
      break;
    case DataType::kUint16:
      each(uint16_t{});
      break;
    case DataType::kInt32:
      each(int32_t{});
      break;
    case DataType::kUint32:
      each(uint32_t{});
      break;
    case DataType::kInt64:
      each(int64_t{});
      break;
    case DataType::kUint64:
      each(uint64_t{});
      break;
    case DataType::kBool:
      each(uint8_t{});
      break;
    case DataType::kFloat16: {
      const uint16_t* p = t.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) fn(HalfToFloat(p[i]));
      break;
    }
    case DataType::kBFloat16: {
      const uint16_t* p = t.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) fn(BFloat16ToFloat(p[i]));
      break;
    }
    case DataType::kUndefined:
      break;
  }
}

}  // namespace

size_t ElementSize(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return 4;
    case DataType::kFloat16:
      return 2;
    case DataType::kBFloat16:
      return 2;
    case DataType::kFloat64:
      return 8;
    case DataType::kInt8:
      return 1;
    case DataType::kUint8:
      return 1;
    case DataType::kInt16:
      return 2;
    case DataType::kUint16:
      return 2;
    case DataType::kInt32:
      return 4;
    case DataType::kUint32:
      return 4;
    case DataType::kInt64:
      return 8;
    case DataType::kUint64:
      return 8;
    case DataType::kBool:
      return 1;
    case DataType::kUndefined:
      return 0;
  }
  return 0;
}

const char* DataTypeName(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return "FP32";
    case DataType::kFloat16:
      return "FP16";
    case DataType::kBFloat16:
      return "BF16";
    case DataType::kFloat64:
      return "FP64";
    case DataType::kInt8:
      return "INT8";
    case DataType::kUint8:
      return "UINT8";
    case DataType::kInt16:
      return "INT16";
    case DataType::kUint16:
      return "UINT16";
    case DataType::kInt32:
      return "INT32";
    case DataType::kUint32:
      return "UINT32";
    case DataType::kInt64:
      return "INT64";
    case DataType::kUint64:
      return "UINT64";
    case DataType::kBool:
      return "BOOL";
    case DataType::kUndefined:
      return "UNDEFINED";
  }
  return "UNDEFINED";
}

int64_t NumElements(const Dims& dims) {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::string DimsToString(const Dims& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) s += ',';
    s += std::to_string(dims[i]);
  }
  s += ']';
  return s;
}

std::vector<int64_t> Tensor::AsInt64() const {
  std::vector<int64_t> values;
  values.reserve(static_cast<size_t>(num_elements()));
  ForEachElement(*this, [&](auto v) { values.push_back(static_cast<int64_t>(v)); });
  return values;
}

std::vector<float> Tensor::AsFloat() const {
  std::vector<float> values;
  values.reserve(static_cast<size_t>(num_elements()));
  ForEachElement(*this, [&](auto v) { values.push_back(static_cast<float>(v)); });
  return values;
}

}  // namespace convserve::engine
