// The Repository on real model folders (the linear test model of tests/server/test_models.h)
// with a servable factory that serves nothing: loads, polls, the index, Get's errors and the
// load events, and that no message a client sees contains where the repository is.
#include "server/repository/repository.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "tests/server/test_models.h"

namespace convserve::repository {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// For the linear test model: input "input" FP32 [N,1,28,28], output "logits" FP32 [N,10].
constexpr char kConfig[] = R"(max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 1, 28, 28 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] } ]
)";

void WriteText(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

class RepositoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = testing::MakeTempDir("convserve-repository-test");
    outside_ = testing::MakeTempDir("convserve-repository-test-outside");
  }
  void TearDown() override {
    std::filesystem::remove_all(root_);
    std::filesystem::remove_all(outside_);
  }

  Repository MakeRepository() {
    return Repository(
        root_,
        [](const std::shared_ptr<const ModelVersion>&)
            -> absl::StatusOr<std::shared_ptr<Servable>> { return std::make_shared<Servable>(); },
        [this](const LoadEvent& event) { events_.push_back(event); });
  }

  // Index rows of one model as "version STATE reason" ("" for the model-level row's version).
  static std::vector<std::string> Rows(const Repository& repository, const std::string& name) {
    std::vector<std::string> rows;
    for (const ModelIndexEntry& entry : repository.Index(false)) {
      if (entry.name != name) continue;
      rows.push_back(entry.version + " " + entry.state + " " + entry.reason);
    }
    return rows;
  }

  // Every message the repository gives out for `name`: index reasons, Get's errors.
  std::vector<std::string> ClientMessages(const Repository& repository, const std::string& name) {
    std::vector<std::string> messages;
    for (const ModelIndexEntry& entry : repository.Index(false)) messages.push_back(entry.reason);
    for (const char* version : {"", "1", "2", "3"}) {
      auto served = repository.Get(name, version);
      if (!served.ok()) messages.emplace_back(served.status().message());
    }
    return messages;
  }

  void ExpectNoRootIn(const std::vector<std::string>& messages) {
    for (const std::string& message : messages) {
      EXPECT_THAT(message, Not(HasSubstr(root_.string()))) << message;
    }
  }

  std::filesystem::path root_;
  std::filesystem::path outside_;
  std::vector<LoadEvent> events_;
};

// Finding: in poll mode, a config error stayed in the index after the config was fixed when the
// selected version still failed to load.
TEST_F(RepositoryTest, PollDropsTheConfigErrorOnceTheConfigParsesAgain) {
  const std::filesystem::path model = root_ / "m";
  WriteText(model / "config.pbtxt", kConfig);
  testing::WriteLinearOnnx(model / "2" / "model.onnx", 0.0f);
  Repository repository = MakeRepository();
  repository.Poll();
  EXPECT_EQ(repository.ServedVersions("m"), std::vector<int64_t>{2});

  // A broken version 3: version 2 keeps serving.
  WriteText(model / "3" / "model.onnx", "not onnx");
  repository.Poll();
  EXPECT_EQ(repository.ServedVersions("m"), std::vector<int64_t>{2});
  const std::string v3_reason =
      "model 'm' version 3: model file 'm/3/model.onnx': not an ONNX model";
  EXPECT_EQ(Rows(repository, "m"),
            (std::vector<std::string>{"2 READY ", "3 UNAVAILABLE " + v3_reason}));

  // A broken config: a model-level row with the parse error.
  WriteText(model / "config.pbtxt", std::string(kConfig) + "max_batch_size: \"x\"\n");
  repository.Poll();
  EXPECT_EQ(repository.ServedVersions("m"), std::vector<int64_t>{2});
  const std::vector<std::string> broken = Rows(repository, "m");
  ASSERT_EQ(broken.size(), 3u);
  EXPECT_THAT(broken[2], StartsWith(" UNAVAILABLE model 'm': config.pbtxt:4:"));

  // The config restored (version 3 still broken): the config error goes, version 3's stays.
  WriteText(model / "config.pbtxt", kConfig);
  repository.Poll();
  EXPECT_EQ(repository.ServedVersions("m"), std::vector<int64_t>{2});
  EXPECT_EQ(Rows(repository, "m"),
            (std::vector<std::string>{"2 READY ", "3 UNAVAILABLE " + v3_reason}));
  ASSERT_TRUE(repository.Get("m", "").ok());
  EXPECT_EQ(repository.Get("m", "").value().model->version, 2);
}

TEST_F(RepositoryTest, LoadAfterUnloadDropsUnloadedWhenTheConfigIsGood) {
  const std::filesystem::path model = root_ / "m";
  WriteText(model / "config.pbtxt", kConfig);
  testing::WriteLinearOnnx(model / "1" / "model.onnx", 0.0f);
  Repository repository = MakeRepository();
  ASSERT_TRUE(repository.Load("m").ok());
  ASSERT_TRUE(repository.Unload("m").ok());
  EXPECT_EQ(Rows(repository, "m"), std::vector<std::string>{" UNAVAILABLE unloaded"});
  WriteText(model / "1" / "model.onnx", "not onnx");
  EXPECT_FALSE(repository.Load("m").ok());
  EXPECT_EQ(
      Rows(repository, "m"),
      std::vector<std::string>{
          "1 UNAVAILABLE model 'm' version 1: model file 'm/1/model.onnx': not an ONNX model"});
}

// Finding: default_model_filename could name a file anywhere.
TEST_F(RepositoryTest, DefaultModelFilenameMustBeAFileOfTheVersionFolder) {
  testing::WriteLinearOnnx(outside_ / "secret.onnx", 0.0f);
  testing::WriteLinearOnnx(root_ / "other" / "1" / "model.onnx", 0.0f);
  testing::WriteLinearOnnx(root_ / "m" / "1" / "sub" / "model.onnx", 0.0f);
  Repository repository = MakeRepository();
  struct Case {
    std::string in_config;  // as written in config.pbtxt (text format escapes)
    std::string shown;      // as the error shows it
  };
  const std::string secret = (outside_ / "secret.onnx").string();
  for (const Case& c : std::vector<Case>{{secret, secret},
                                         {"../../other/1/model.onnx", "../../other/1/model.onnx"},
                                         {"sub/model.onnx", "sub/model.onnx"},
                                         {R"(..\\other\\1)", R"(..\\other\\1)"}}) {
    SCOPED_TRACE(c.in_config);
    WriteText(root_ / "m" / "config.pbtxt",
              std::string(kConfig) + "default_model_filename: \"" + c.in_config + "\"\n");
    const absl::Status status = repository.Load("m");
    const std::string expected = "model 'm': default_model_filename '" + c.shown +
                                 "' must be a file name in the version folder, not a path";
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(status.message(), expected);
    EXPECT_EQ(repository.Get("m", "").status().code(), absl::StatusCode::kUnavailable);
    EXPECT_TRUE(repository.ServedVersions("m").empty());
    EXPECT_EQ(Rows(repository, "m"), std::vector<std::string>{" UNAVAILABLE " + expected});
  }
  // A plain file name of the version folder loads.
  testing::WriteLinearOnnx(root_ / "m" / "1" / "net.onnx", 0.0f);
  WriteText(root_ / "m" / "config.pbtxt",
            std::string(kConfig) + "default_model_filename: \"net.onnx\"\n");
  ASSERT_TRUE(repository.Load("m").ok());
  auto served = repository.Get("m", "");
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(served->model->config.default_model_filename(), "net.onnx");
  EXPECT_EQ(Rows(repository, "m"), std::vector<std::string>{"1 READY "});
}

// A config that names its model file and leaves the inputs and outputs out: they come from that
// file (there is no model.onnx to take them from).
TEST_F(RepositoryTest, DerivedTensorsComeFromTheNamedModelFile) {
  testing::WriteLinearOnnx(root_ / "m" / "1" / "net.onnx", 0.0f);
  WriteText(root_ / "m" / "config.pbtxt",
            "max_batch_size: 8\ndefault_model_filename: \"net.onnx\"\n");
  Repository repository = MakeRepository();
  ASSERT_TRUE(repository.Load("m").ok()) << repository.Load("m");
  auto served = repository.Get("m", "");
  ASSERT_TRUE(served.ok()) << served.status();
  const inference::ModelConfig& config = served->model->config;
  ASSERT_EQ(config.input_size(), 1);
  EXPECT_EQ(config.input(0).name(), "input");
  EXPECT_EQ(config.input(0).dims_size(), 3);
  ASSERT_EQ(config.output_size(), 1);
  EXPECT_EQ(config.output(0).name(), "logits");
}

// Finding: the log said "failed to load model 'm' version 3: model 'm' version 3: ...". The event
// carries the model and version; its reason is what follows them. The index keeps it all.
TEST_F(RepositoryTest, LoadEventsDoNotRepeatTheModelAndVersion) {
  WriteText(root_ / "m" / "config.pbtxt", kConfig);
  WriteText(root_ / "m" / "3" / "model.onnx", "not onnx");
  WriteText(root_ / "c" / "config.pbtxt", "max_batch_size: [oops\n");
  Repository repository = MakeRepository();
  EXPECT_EQ(repository.LoadAll(), 2);
  std::map<std::string, LoadEvent> by_model;
  for (const LoadEvent& event : events_) by_model.emplace(event.model, event);
  ASSERT_EQ(by_model.size(), 2u);
  EXPECT_EQ(by_model.at("m").kind, LoadEvent::Kind::kFailed);
  EXPECT_EQ(by_model.at("m").version, "3");
  EXPECT_EQ(by_model.at("m").reason, "model file 'm/3/model.onnx': not an ONNX model");
  EXPECT_EQ(by_model.at("c").kind, LoadEvent::Kind::kFailed);
  EXPECT_EQ(by_model.at("c").version, "");
  EXPECT_THAT(by_model.at("c").reason, StartsWith("config.pbtxt:1:"));
  EXPECT_EQ(
      Rows(repository, "m"),
      std::vector<std::string>{
          "3 UNAVAILABLE model 'm' version 3: model file 'm/3/model.onnx': not an ONNX model"});
  const std::vector<std::string> c_rows = Rows(repository, "c");
  ASSERT_EQ(c_rows.size(), 1u);
  EXPECT_THAT(c_rows[0], StartsWith(" UNAVAILABLE model 'c': config.pbtxt:1:"));
}

// Finding: errors named the repository's folder on the server.
TEST_F(RepositoryTest, MessagesShowPathsRelativeToTheRepository) {
  WriteText(root_ / "nover" / "config.pbtxt", kConfig);
  WriteText(root_ / "policy" / "config.pbtxt",
            std::string(kConfig) + "version_policy { specific { versions: [ 5 ] } }\n");
  testing::WriteLinearOnnx(root_ / "policy" / "1" / "model.onnx", 0.0f);
  testing::WriteLinearOnnx(root_ / "policy" / "2" / "model.onnx", 0.0f);
  WriteText(root_ / "nofile" / "config.pbtxt", kConfig);
  std::filesystem::create_directories(root_ / "nofile" / "1");
  WriteText(root_ / "labels" / "config.pbtxt",
            R"(max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 dims: [ 1, 28, 28 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" } ]
)");
  testing::WriteLinearOnnx(root_ / "labels" / "1" / "model.onnx", 0.0f);
  Repository repository = MakeRepository();
  EXPECT_EQ(repository.LoadAll(), 4);

  const absl::Status missing = repository.Load("nope");
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.message(),
            "model 'nope' is not in the model repository (no folder 'nope' in it)");
  EXPECT_EQ(repository.Load("nover").message(),
            "model 'nover': no numeric version folder in nover/ (such as nover/1/)");
  EXPECT_EQ(repository.Load("policy").message(),
            "model 'policy': version_policy { specific { versions: 5 } } selects none of the "
            "version folders in policy/ (found 1, 2)");
  EXPECT_EQ(repository.Load("nofile").message(),
            "model 'nofile' version 1: model file 'nofile/1/model.onnx': no such file");
  EXPECT_THAT(std::string(repository.Load("labels").message()),
              StartsWith("model 'labels': cannot open 'labels/labels.txt'"));
  for (const char* name : {"nope", "nover", "policy", "nofile", "labels"}) {
    SCOPED_TRACE(name);
    ExpectNoRootIn(ClientMessages(repository, name));
  }
  for (const LoadEvent& event : events_) ExpectNoRootIn({event.reason});
}

// Finding: with nothing served because the versions failed, Get said only "is not ready".
TEST_F(RepositoryTest, NotReadySaysWhyTheVersionsFailed) {
  WriteText(root_ / "one" / "config.pbtxt", kConfig);
  WriteText(root_ / "one" / "3" / "model.onnx", "not onnx");
  WriteText(root_ / "all" / "config.pbtxt", std::string(kConfig) + "version_policy { all { } }\n");
  WriteText(root_ / "all" / "1" / "model.onnx", "not onnx");
  std::filesystem::create_directories(root_ / "all" / "2");
  Repository repository = MakeRepository();
  EXPECT_EQ(repository.LoadAll(), 2);

  auto one = repository.Get("one", "");
  EXPECT_EQ(one.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(one.status().message(),
            "model 'one' is not ready: version 3 failed to load: model file 'one/3/model.onnx': "
            "not an ONNX model");
  EXPECT_EQ(repository.Get("one", "3").status().message(),
            "version 3 of model 'one' is not ready: model file 'one/3/model.onnx': not an ONNX "
            "model");
  EXPECT_EQ(repository.Get("all", "").status().message(),
            "model 'all' is not ready: version 1 failed to load: model file 'all/1/model.onnx': "
            "not an ONNX model; version 2 failed to load: model file 'all/2/model.onnx': no such "
            "file");
  // A model-level reason is given as it is.
  WriteText(root_ / "one" / "config.pbtxt", "max_batch_size: [oops\n");
  EXPECT_FALSE(repository.Load("one").ok());
  EXPECT_THAT(std::string(repository.Get("one", "").status().message()),
              StartsWith("model 'one' is not ready: config.pbtxt:1:"));
}

}  // namespace
}  // namespace convserve::repository
