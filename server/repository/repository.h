// The model repository: a folder of model folders, each with numeric version folders.
//
//   <root>/<model>/config.pbtxt        optional (derived from the ONNX file when absent)
//   <root>/<model>/labels.txt          as named by an output's label_filename
//   <root>/<model>/<version>/model.onnx
//
// The Repository loads the versions a model's version_policy selects (latest by default), asks a
// ServableFactory to attach what serves them (the scheduler lives above this module), and hands
// out shared handles. Loading builds the new versions beside the old ones and swaps them in under
// a lock, so a request never sees a half-loaded model and a reload never pulls a model from under
// a request; a load that fails leaves the old versions serving and records the reason for Index().
// Messages name files relative to the root ("fashion-k3/3/model.onnx"): they go to clients.
//
// Thread safety: every method may be called from any thread. Loads are serialised among
// themselves; Get/Index never wait for a load.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/repository/model.h"

namespace convserve::repository {

// `text` without a leading "model '<name>' version <version>: " or "model '<name>': ", for texts
// shown where the model and version are said already (load events, which end up in the log as
// "failed to load model '<name>' version <version>: ...", Get's errors, the start-up summary).
std::string WithoutModelPrefix(absl::string_view text, const std::string& name,
                               const std::string& version);

// What serves a loaded model version (defined by the serving module). Destroyed when the last
// handle to it goes away.
class Servable {
 public:
  virtual ~Servable() = default;
};

// A handle to a served model version. Copies keep the version and its servable alive.
struct ServedVersion {
  std::shared_ptr<const ModelVersion> model;
  std::shared_ptr<Servable> servable;
};

struct ModelIndexEntry {
  std::string name;
  std::string version;  // empty when the failure concerns the model, not a version
  std::string state;    // "READY" | "UNAVAILABLE" | "LOADING"
  std::string reason;
};

// A load event, for logs and metrics.
struct LoadEvent {
  std::string model;
  std::string version;  // empty for model-level failures (config) and unloads
  enum class Kind { kLoaded, kFailed, kUnloaded } kind;
  // Without the "model '<model>' version <version>: " that the fields above already say (Index
  // has the complete message).
  std::string reason;
  double seconds = 0;
};

class Repository {
 public:
  using ServableFactory = std::function<absl::StatusOr<std::shared_ptr<Servable>>(
      const std::shared_ptr<const ModelVersion>&)>;
  using EventListener = std::function<void(const LoadEvent&)>;

  Repository(std::filesystem::path root, ServableFactory factory, EventListener listener = {});

  const std::filesystem::path& root() const { return root_; }

  // Model folders of the repository (names that pass ValidateModelName), sorted.
  std::vector<std::string> ListModelFolders() const;

  // Loads every model folder; failures are recorded (Index) and logged. Returns the number of
  // models that failed.
  int LoadAll();

  // (Re)loads a model from its folder. NOT_FOUND when there is no such folder; the load's error
  // otherwise (old versions keep serving).
  absl::Status Load(const std::string& name);

  // Stops serving a model; in-flight requests finish on their handles. NOT_FOUND if not loaded.
  absl::Status Unload(const std::string& name);

  // Loads new model folders, reloads models whose files changed, unloads removed folders.
  void Poll();

  // The served version `version` ("" = the highest served) of a model.
  // NOT_FOUND: unknown model or version; UNAVAILABLE: the model is known but has no served
  // version (failed to load, unloaded), with the reason (the config's error, or each selected
  // version's: "model 'm' is not ready: version 3 failed to load: ...").
  absl::StatusOr<ServedVersion> Get(const std::string& name, const std::string& version) const;

  // Every served version of every model, by name then version.
  std::vector<ServedVersion> Served() const;

  // Served version numbers of one model (empty if none).
  std::vector<int64_t> ServedVersions(const std::string& name) const;

  // One entry per served or failed version and per model folder without a served version.
  std::vector<ModelIndexEntry> Index(bool ready_only) const;

 private:
  struct ModelState {
    std::map<int64_t, ServedVersion> served;
    std::map<int64_t, std::string> failed_versions;  // version -> reason of the last attempt
    std::string model_reason;                        // config-level failure or "unloaded"
    std::string signature;                           // of the files last loaded
  };

  absl::Status LoadLocked(const std::string& name);  // load_mutex_ held
  // `status` with the repository's location taken out of its message, so that paths read
  // relative to the root ("fashion-k3/3/model.onnx"): load errors go to clients (RepositoryIndex,
  // RepositoryModelLoad, ModelInfer), which have no business knowing where the files are.
  absl::Status RelativeToRoot(const absl::Status& status) const;
  std::string Signature(const std::filesystem::path& model_dir) const;
  void Notify(const LoadEvent& event) const;

  const std::filesystem::path root_;
  const ServableFactory factory_;
  const EventListener listener_;
  std::mutex load_mutex_;     // serialises loads and unloads
  mutable std::mutex mutex_;  // guards models_
  std::map<std::string, ModelState> models_;
};

}  // namespace convserve::repository
