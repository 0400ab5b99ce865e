// Element types and host tensors: the engine's vocabulary for constants (initializers,
// folded subgraphs) and for the plain row-major buffers that cross the engine's API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace convserve::engine {

enum class DataType {
  kUndefined,
  kFloat32,
  kFloat16,
  kBFloat16,
  kFloat64,
  kInt8,
  kUint8,
  kInt16,
  kUint16,
  kInt32,
  kUint32,
  kInt64,
  kUint64,
  kBool
};

size_t ElementSize(DataType type);
// "FP32", "INT64", ... (the KServe names). const char* because Debian's Abseil is built with its
// own string_view, which absl::StrCat does not accept as std::string_view.
const char* DataTypeName(DataType type);

using Dims = std::vector<int64_t>;
int64_t NumElements(const Dims& dims);       // product; 1 for a scalar (empty dims)
std::string DimsToString(const Dims& dims);  // "[1,3,28,28]"

// An owning, dense, row-major host tensor. Used for initializers and compile-time constants.
struct Tensor {
  DataType dtype = DataType::kUndefined;
  Dims dims;
  std::vector<std::byte> bytes;  // NumElements(dims) * ElementSize(dtype) bytes

  Tensor() = default;
  Tensor(DataType t, Dims d) : dtype(t), dims(std::move(d)) {
    bytes.resize(static_cast<size_t>(NumElements(dims)) * ElementSize(dtype));
  }
  int64_t num_elements() const { return NumElements(dims); }
  template <typename T>
  T* data() {
    return reinterpret_cast<T*>(bytes.data());
  }
  template <typename T>
  const T* data() const {
    return reinterpret_cast<const T*>(bytes.data());
  }

  // Values converted to int64 / float whatever the stored integer or float type
  // (for shape arithmetic and attribute-like inputs).
  std::vector<int64_t> AsInt64() const;
  std::vector<float> AsFloat() const;
};

// A non-owning view of a plain row-major buffer, used for model inputs and outputs.
struct TensorView {
  DataType dtype = DataType::kFloat32;
  Dims dims;
  void* data = nullptr;
  size_t byte_size() const { return static_cast<size_t>(NumElements(dims)) * ElementSize(dtype); }
};

}  // namespace convserve::engine
