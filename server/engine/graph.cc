#include "server/engine/graph.h"

namespace convserve::engine {
namespace {

// The attribute's value when it holds a T, else `default_value`. The importer checks the types
// of the attributes it knows, so a mismatch here means an attribute the op does not define.
template <typename T>
T GetOr(const std::map<std::string, AttributeValue>& attributes, const std::string& key,
        const T& default_value) {
  auto it = attributes.find(key);
  if (it == attributes.end()) return default_value;
  if (const T* value = std::get_if<T>(&it->second)) return *value;
  return default_value;
}

}  // namespace

int64_t Node::GetInt(const std::string& key, int64_t default_value) const {
  return GetOr<int64_t>(attributes, key, default_value);
}

float Node::GetFloat(const std::string& key, float default_value) const {
  return GetOr<float>(attributes, key, default_value);
}

std::string Node::GetString(const std::string& key, const std::string& default_value) const {
  return GetOr<std::string>(attributes, key, default_value);
}

std::vector<int64_t> Node::GetInts(const std::string& key,
                                   const std::vector<int64_t>& default_value) const {
  return GetOr<std::vector<int64_t>>(attributes, key, default_value);
}

std::vector<float> Node::GetFloats(const std::string& key,
                                   const std::vector<float>& default_value) const {
  return GetOr<std::vector<float>>(attributes, key, default_value);
}

}  // namespace convserve::engine
