#include "server/repository/repository.h"

#include <algorithm>
#include <chrono>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"
#include "server/common/status.h"

namespace convserve::repository {

std::string WithoutModelPrefix(absl::string_view message, const std::string& name,
                               const std::string& version) {
  const std::string model = absl::StrCat("model '", name, "'");
  if (!version.empty() &&
      absl::ConsumePrefix(&message, absl::StrCat(model, " version ", version, ": "))) {
    return std::string(message);
  }
  absl::ConsumePrefix(&message, absl::StrCat(model, ": "));
  return std::string(message);
}

Repository::Repository(std::filesystem::path root, ServableFactory factory, EventListener listener)
    : root_(std::move(root)), factory_(std::move(factory)), listener_(std::move(listener)) {}

absl::Status Repository::RelativeToRoot(const absl::Status& status) const {
  const std::string prefix = (root_ / "").string();  // with the trailing separator
  if (status.ok() || prefix.size() <= 1) return status;
  return absl::Status(status.code(), absl::StrReplaceAll(status.message(), {{prefix, ""}}));
}

void Repository::Notify(const LoadEvent& event) const {
  if (listener_) listener_(event);
}

std::vector<std::string> Repository::ListModelFolders() const {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(root_, ec)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory(ec) && ValidateModelName(name).ok()) names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string Repository::Signature(const std::filesystem::path& model_dir) const {
  std::vector<std::string> parts;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(model_dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const auto time = std::filesystem::last_write_time(it->path(), ec);
    parts.push_back(absl::StrCat(it->path().string(), ":", it->file_size(ec), ":",
                                 time.time_since_epoch().count()));
    if (parts.size() > 10000) break;
  }
  std::sort(parts.begin(), parts.end());
  std::string signature;
  for (const auto& p : parts) absl::StrAppend(&signature, p, "\n");
  return signature;
}

int Repository::LoadAll() {
  int failures = 0;
  for (const auto& name : ListModelFolders()) {
    if (!Load(name).ok()) ++failures;
  }
  return failures;
}

absl::Status Repository::Load(const std::string& name) {
  RETURN_IF_ERROR(ValidateModelName(name));
  std::lock_guard<std::mutex> load_lock(load_mutex_);
  return LoadLocked(name);
}

absl::Status Repository::LoadLocked(const std::string& name) {
  const std::filesystem::path model_dir = root_ / name;
  std::error_code ec;
  if (!std::filesystem::is_directory(model_dir, ec)) {
    // The client sees this: the repository's location on the server stays out of it.
    return absl::NotFoundError(absl::StrCat(
        "model '", name, "' is not in the model repository (no folder '", name, "' in it)"));
  }
  const std::string signature = Signature(model_dir);
  const auto record_model_failure = [&](absl::Status status) {
    status = RelativeToRoot(status);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ModelState& state = models_[name];
      state.model_reason = std::string(status.message());
      state.signature = signature;
    }
    Notify({name, "", LoadEvent::Kind::kFailed, WithoutModelPrefix(status.message(), name, ""), 0});
    return status;
  };

  const std::vector<int64_t> versions = ListVersions(model_dir);
  std::filesystem::path derive_from;
  if (!versions.empty()) derive_from = model_dir / std::to_string(versions.back());
  absl::StatusOr<inference::ModelConfig> config = ReadModelConfig(model_dir, name, derive_from);
  if (!config.ok()) return record_model_failure(config.status());
  const std::vector<int64_t> selected = SelectVersions(config->version_policy(), versions);
  if (selected.empty()) {
    if (versions.empty()) {
      return record_model_failure(absl::NotFoundError(absl::StrCat(
          "model '", name, "': no numeric version folder in ", name, "/ (such as ", name, "/1/)")));
    }
    std::vector<std::string> found;
    for (int64_t version : versions) found.push_back(std::to_string(version));
    return record_model_failure(absl::NotFoundError(absl::StrCat(
        "model '", name, "': version_policy { ", config->version_policy().ShortDebugString(),
        " } selects none of the version folders in ", name, "/ (found ", absl::StrJoin(found, ", "),
        ")")));
  }

  std::map<int64_t, ServedVersion> loaded;
  std::map<int64_t, std::string> failed;
  absl::Status first_error;
  for (int64_t version : selected) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::shared_ptr<const ModelVersion>> model =
        LoadModelVersion(model_dir, name, version, *config);
    absl::StatusOr<std::shared_ptr<Servable>> servable =
        model.ok() ? factory_(*model) : absl::StatusOr<std::shared_ptr<Servable>>(model.status());
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!servable.ok()) {
      const absl::Status error = RelativeToRoot(servable.status());
      const std::string version_string = std::to_string(version);
      failed[version] = std::string(error.message());
      if (first_error.ok()) first_error = error;
      Notify({name, version_string, LoadEvent::Kind::kFailed,
              WithoutModelPrefix(error.message(), name, version_string), seconds});
      continue;
    }
    loaded[version] = ServedVersion{*model, *std::move(servable)};
    Notify({name, std::to_string(version), LoadEvent::Kind::kLoaded, "", seconds});
  }

  std::map<int64_t, ServedVersion> retired;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ModelState& state = models_[name];
    state.signature = signature;
    state.failed_versions = failed;
    // The config is good again: a config error or "unloaded" from before no longer applies, even
    // if no version loaded (those failures are in failed_versions).
    state.model_reason.clear();
    if (!loaded.empty()) {
      retired.swap(state.served);
      state.served = std::move(loaded);
    }
  }
  // `retired` handles are released here, outside the lock; requests holding them finish first.
  if (loaded.empty() && !first_error.ok()) return first_error;
  return absl::OkStatus();
}

absl::Status Repository::Unload(const std::string& name) {
  RETURN_IF_ERROR(ValidateModelName(name));
  std::lock_guard<std::mutex> load_lock(load_mutex_);
  std::map<int64_t, ServedVersion> retired;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = models_.find(name);
    if (it == models_.end() || it->second.served.empty()) {
      return absl::NotFoundError(absl::StrCat("model '", name, "' is not loaded"));
    }
    retired.swap(it->second.served);
    it->second.failed_versions.clear();
    it->second.model_reason = "unloaded";
  }
  Notify({name, "", LoadEvent::Kind::kUnloaded, "", 0});
  return absl::OkStatus();
}

void Repository::Poll() {
  std::lock_guard<std::mutex> load_lock(load_mutex_);
  const std::vector<std::string> folders = ListModelFolders();
  for (const auto& name : folders) {
    std::string old_signature;
    bool known = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = models_.find(name);
      if (it != models_.end()) {
        known = true;
        old_signature = it->second.signature;
      }
    }
    if (!known || Signature(root_ / name) != old_signature) (void)LoadLocked(name);
  }
  std::vector<std::string> removed;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    for (const auto& [name, state] : models_) {
      if (!std::binary_search(folders.begin(), folders.end(), name)) removed.push_back(name);
    }
  }
  for (const auto& name : removed) {
    std::map<int64_t, ServedVersion> retired;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      retired.swap(models_[name].served);
      models_.erase(name);
    }
    Notify({name, "", LoadEvent::Kind::kUnloaded, "folder removed", 0});
  }
}

absl::StatusOr<ServedVersion> Repository::Get(const std::string& name,
                                              const std::string& version) const {
  std::unique_lock<std::mutex> lock(mutex_);
  auto it = models_.find(name);
  if (it == models_.end()) {
    lock.unlock();
    std::error_code ec;
    if (ValidateModelName(name).ok() && std::filesystem::is_directory(root_ / name, ec)) {
      return absl::UnavailableError(
          absl::StrCat("model '", name,
                       "' is in the repository but not loaded (load it with "
                       "RepositoryModelLoad, or start the server with --load-model ",
                       name, ")"));
    }
    return absl::NotFoundError(absl::StrCat("model '", name, "' is not found"));
  }
  const ModelState& state = it->second;
  if (version.empty()) {
    if (state.served.empty()) {
      std::string why;
      if (!state.model_reason.empty()) {
        why = absl::StrCat(": ", WithoutModelPrefix(state.model_reason, name, ""));
      } else {
        // Nothing served because the selected versions failed: say why each did.
        for (const auto& [number, reason] : state.failed_versions) {
          const std::string v = std::to_string(number);
          absl::StrAppend(&why, why.empty() ? ": " : "; ", "version ", v,
                          " failed to load: ", WithoutModelPrefix(reason, name, v));
        }
      }
      return absl::UnavailableError(absl::StrCat("model '", name, "' is not ready", why));
    }
    return state.served.rbegin()->second;
  }
  int64_t number = -1;
  if (version.size() <= 18 &&
      std::all_of(version.begin(), version.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    number = std::stoll(version);
  }
  auto served = state.served.find(number);
  if (served != state.served.end()) return served->second;
  auto failed = state.failed_versions.find(number);
  if (failed != state.failed_versions.end()) {
    return absl::UnavailableError(absl::StrCat(
        "version ", version, " of model '", name,
        "' is not ready: ", WithoutModelPrefix(failed->second, name, std::to_string(number))));
  }
  return absl::NotFoundError(
      absl::StrCat("version '", version, "' of model '", name, "' is not found"));
}

std::vector<ServedVersion> Repository::Served() const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<ServedVersion> all;
  for (const auto& [name, state] : models_) {
    for (const auto& [version, served] : state.served) all.push_back(served);
  }
  return all;
}

std::vector<int64_t> Repository::ServedVersions(const std::string& name) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<int64_t> versions;
  auto it = models_.find(name);
  if (it == models_.end()) return versions;
  for (const auto& [version, served] : it->second.served) versions.push_back(version);
  return versions;
}

std::vector<ModelIndexEntry> Repository::Index(bool ready_only) const {
  const std::vector<std::string> folders = ListModelFolders();
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<ModelIndexEntry> index;
  std::vector<std::string> names = folders;
  for (const auto& [name, state] : models_) names.push_back(name);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  for (const auto& name : names) {
    auto it = models_.find(name);
    if (it == models_.end()) {
      if (!ready_only) index.push_back({name, "", "UNAVAILABLE", "not loaded"});
      continue;
    }
    const ModelState& state = it->second;
    for (const auto& [version, served] : state.served) {
      index.push_back({name, std::to_string(version), "READY", ""});
    }
    if (ready_only) continue;
    for (const auto& [version, reason] : state.failed_versions) {
      if (!state.served.count(version)) {
        index.push_back({name, std::to_string(version), "UNAVAILABLE", reason});
      }
    }
    if (!state.model_reason.empty() || (state.served.empty() && state.failed_versions.empty())) {
      index.push_back({name, "", "UNAVAILABLE",
                       state.model_reason.empty() ? "not loaded" : state.model_reason});
    }
  }
  return index;
}

}  // namespace convserve::repository
