// In-process server tests: a real convserve server on 127.0.0.1 (free port), real gRPC stubs.
#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <future>
#include <map>
#include <thread>

#include "proto/convserve.grpc.pb.h"
#include "proto/inference.grpc.pb.h"
#include "server/api/server.h"
#include "server/serving/server_core.h"
#include "tests/server/test_models.h"

namespace convserve::testing {
namespace {

using inference::GRPCInferenceService;
using ::testing::HasSubstr;
using ::testing::Not;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = MakeTempDir("convserve-server-test");
    BuildTestRepository(root_);
  }
  void TearDown() override {
    server_.reset();
    std::filesystem::remove_all(root_);
  }

  // The test repository on 127.0.0.1, a free port, no metrics endpoint, 2 compute threads.
  api::ServerOptions LocalOptions(api::ServerOptions options = {}) const {
    options.model_repository = root_.string();
    options.grpc_address = "127.0.0.1";
    options.grpc_port = 0;
    options.metrics_port = 0;
    options.threads = 2;
    return options;
  }

  void StartServer(api::ServerOptions options = {}) {
    options = LocalOptions(std::move(options));
    if (options.model_control_mode == "none") {
      options.model_control_mode = "explicit";
      if (options.load_models.empty()) options.load_models = {"*"};
    }
    options.exit_timeout_secs = 20;
    auto server = api::Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);
    args.SetMaxSendMessageSize(-1);
    channel_ = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()),
                                         grpc::InsecureChannelCredentials(), args);
    stub_ = GRPCInferenceService::NewStub(channel_);
  }

  static inference::ModelInferRequest Fp32Request(const std::string& model,
                                                  const std::vector<int>& labels, bool raw) {
    return PatternRequest(model, labels, raw);
  }

  grpc::Status Infer(const inference::ModelInferRequest& request,
                     inference::ModelInferResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return stub_->ModelInfer(&context, request, response);
  }

  static std::vector<float> Logits(const inference::ModelInferResponse& response) {
    if (response.raw_output_contents_size() > 0) {
      const std::string& raw = response.raw_output_contents(0);
      std::vector<float> values(raw.size() / 4);
      std::memcpy(values.data(), raw.data(), raw.size());
      return values;
    }
    const auto& c = response.outputs(0).contents().fp32_contents();
    return std::vector<float>(c.begin(), c.end());
  }

  void ExpectError(const inference::ModelInferRequest& request, grpc::StatusCode code,
                   const std::string& message_part) {
    inference::ModelInferResponse response;
    grpc::Status status = Infer(request, &response);
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(message_part));
    ExpectGoodRequestSucceeds();
  }

  void ExpectGoodRequestSucceeds() {
    inference::ModelInferResponse response;
    grpc::Status status = Infer(Fp32Request("tiny", {3}, true), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    const std::vector<float> logits = Logits(response);
    const std::vector<float> pixels = PatternFloats(3);
    const auto expected = LinearLogits(pixels.data(), 0.0f);
    ASSERT_EQ(logits.size(), 10u);
    for (int k = 0; k < 10; ++k) EXPECT_NEAR(logits[k], expected[k], 1e-4);
  }

  // One unary RPC of the stub with a fresh context; the response is dropped.
  template <typename Request, typename Response>
  grpc::Status Call(grpc::Status (GRPCInferenceService::Stub::*method)(grpc::ClientContext*,
                                                                       const Request&, Response*),
                    const Request& request) {
    grpc::ClientContext context;
    Response response;
    return (stub_.get()->*method)(&context, request, &response);
  }

  inference::ModelStatistics Stats(const std::string& model) {
    return FetchModelStatistics(*stub_, model);
  }

  std::filesystem::path root_;
  std::unique_ptr<api::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<GRPCInferenceService::Stub> stub_;
};

TEST_F(ServerTest, LiveReadyAndMetadata) {
  StartServer();
  {
    grpc::ClientContext c;
    inference::ServerLiveResponse r;
    ASSERT_TRUE(stub_->ServerLive(&c, {}, &r).ok());
    EXPECT_TRUE(r.live());
  }
  {
    grpc::ClientContext c;
    inference::ServerReadyResponse r;
    ASSERT_TRUE(stub_->ServerReady(&c, {}, &r).ok());
    EXPECT_TRUE(r.ready());
  }
  {
    grpc::ClientContext c;
    inference::ServerMetadataResponse r;
    ASSERT_TRUE(stub_->ServerMetadata(&c, {}, &r).ok());
    EXPECT_EQ(r.name(), "convserve");
    std::vector<std::string> extensions(r.extensions().begin(), r.extensions().end());
    EXPECT_EQ(extensions,
              (std::vector<std::string>{"classification", "model_repository", "model_configuration",
                                        "statistics", "binary_tensor_data"}));
  }
  for (auto [name, ready] :
       {std::pair{"tiny", true}, std::pair{"derived", true}, std::pair{"broken", false},
        std::pair{"badfile", false}, std::pair{"nope", false}}) {
    grpc::ClientContext c;
    inference::ModelReadyRequest q;
    q.set_name(name);
    inference::ModelReadyResponse r;
    ASSERT_TRUE(stub_->ModelReady(&c, q, &r).ok());
    EXPECT_EQ(r.ready(), ready) << name;
  }
  {
    grpc::ClientContext c;
    inference::ModelMetadataRequest q;
    q.set_name("tiny");
    inference::ModelMetadataResponse r;
    ASSERT_TRUE(stub_->ModelMetadata(&c, q, &r).ok());
    EXPECT_EQ(r.name(), "tiny");
    ASSERT_EQ(r.versions_size(), 1);
    EXPECT_EQ(r.versions(0), "1");
    ASSERT_EQ(r.inputs_size(), 1);
    EXPECT_EQ(r.inputs(0).name(), "input");
    EXPECT_EQ(r.inputs(0).datatype(), "FP32");
    EXPECT_EQ(std::vector<int64_t>(r.inputs(0).shape().begin(), r.inputs(0).shape().end()),
              (std::vector<int64_t>{-1, 1, 28, 28}));
    EXPECT_EQ(r.outputs(0).name(), "logits");
  }
  {
    grpc::ClientContext c;
    inference::ModelConfigRequest q;
    q.set_name("derived");
    inference::ModelConfigResponse r;
    ASSERT_TRUE(stub_->ModelConfig(&c, q, &r).ok());
    EXPECT_EQ(r.config().name(), "derived");
    EXPECT_EQ(r.config().max_batch_size(), 64);
    ASSERT_EQ(r.config().input_size(), 1);
    EXPECT_EQ(r.config().input(0).data_type(), inference::TYPE_FP32);
    EXPECT_EQ(
        std::vector<int64_t>(r.config().input(0).dims().begin(), r.config().input(0).dims().end()),
        (std::vector<int64_t>{1, 28, 28}));
  }
  {
    grpc::ClientContext c;
    inference::ModelMetadataRequest q;
    q.set_name("nope");
    inference::ModelMetadataResponse r;
    grpc::Status s = stub_->ModelMetadata(&c, q, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(s.error_message(), HasSubstr("model 'nope' is not found"));
  }
}

TEST_F(ServerTest, InferTypedAndRawMatchTheOracle) {
  StartServer();
  for (bool raw : {false, true}) {
    inference::ModelInferResponse response;
    ASSERT_TRUE(Infer(Fp32Request("tiny", {2, 7}, raw), &response).ok());
    EXPECT_EQ(response.model_name(), "tiny");
    EXPECT_EQ(response.model_version(), "1");
    EXPECT_EQ(response.id(), "req");
    EXPECT_EQ(response.raw_output_contents_size(), raw ? 1 : 0);
    ASSERT_EQ(response.outputs_size(), 1);
    EXPECT_EQ(response.outputs(0).datatype(), "FP32");
    EXPECT_EQ(std::vector<int64_t>(response.outputs(0).shape().begin(),
                                   response.outputs(0).shape().end()),
              (std::vector<int64_t>{2, 10}));
    const std::vector<float> logits = Logits(response);
    ASSERT_EQ(logits.size(), 20u);
    int row = 0;
    for (int label : {2, 7}) {
      const std::vector<float> pixels = PatternFloats(label);
      const auto expected = LinearLogits(pixels.data(), 0.0f);
      for (int k = 0; k < 10; ++k) EXPECT_NEAR(logits[row * 10 + k], expected[k], 1e-4);
      ++row;
    }
  }
}

TEST_F(ServerTest, ModelStatisticsReportsTheMemoryTheModelHolds) {
  StartServer();
  inference::ModelInferResponse response;
  ASSERT_TRUE(Infer(Fp32Request("tiny", {2, 7}, true), &response).ok());
  const inference::ModelStatistics stats = Stats("tiny");
  ASSERT_EQ(stats.memory_usage_size(), 1);
  EXPECT_EQ(stats.memory_usage(0).type(), "CPU");
  EXPECT_EQ(stats.memory_usage(0).id(), 0);
  // Hand-computed: the 10x784 weights and 10 biases in fp32 are held twice, plain by the graph
  // and reordered for the plans; a blocked layout may pad the 10 rows up to 64 (6.4x), and the
  // batch-2 workspace (activations, scratchpad) is a few KB.
  constexpr uint64_t kPlainBytes = (kClasses * kPixels + kClasses) * sizeof(float);  // 31,400
  const uint64_t after_batch_2 = stats.memory_usage(0).byte_size();
  EXPECT_GE(after_batch_2, 2 * kPlainBytes);
  EXPECT_LE(after_batch_2, 10 * kPlainBytes);
  // A batch of 8 compiles one more plan. It shares the reordered weights (a copy of its own would
  // add at least kPlainBytes) and the worker's workspace memory, which may only grow.
  ASSERT_TRUE(Infer(Fp32Request("tiny", {0, 1, 2, 3, 4, 5, 6, 7}, true), &response).ok());
  const uint64_t after_batch_8 = Stats("tiny").memory_usage(0).byte_size();
  EXPECT_GE(after_batch_8, after_batch_2);
  EXPECT_LT(after_batch_8 - after_batch_2, kPlainBytes);
}

TEST_F(ServerTest, Uint8InputIsScaledByPreprocessing) {
  StartServer();
  const inference::ModelInferRequest request = Uint8Request("tiny", PatternImage(5));
  inference::ModelInferResponse response;
  ASSERT_TRUE(Infer(request, &response).ok());
  const std::vector<float> pixels = PatternFloats(5);
  const auto expected = LinearLogits(pixels.data(), 0.0f);
  const std::vector<float> logits = Logits(response);
  ASSERT_EQ(logits.size(), 10u);
  for (int k = 0; k < 10; ++k) EXPECT_NEAR(logits[k], expected[k], 1e-4);
}

inference::ModelInferRequest ImageRequest(const std::vector<std::string>& images, int64_t k,
                                          bool raw) {
  inference::ModelInferRequest request;
  request.set_model_name("tiny");
  auto* input = request.add_inputs();
  input->set_name("input");
  input->set_datatype("BYTES");
  input->add_shape(static_cast<int64_t>(images.size()));
  std::string raw_bytes;
  for (const auto& image : images) {
    if (raw) {
      const uint32_t length = static_cast<uint32_t>(image.size());
      raw_bytes.append(reinterpret_cast<const char*>(&length), 4);
      raw_bytes.append(image);
    } else {
      input->mutable_contents()->add_bytes_contents(image);
    }
  }
  if (raw) request.add_raw_input_contents(raw_bytes);
  auto* output = request.add_outputs();
  output->set_name("logits");
  (*output->mutable_parameters())["classification"].set_int64_param(k);
  return request;
}

std::vector<std::string> Classes(const inference::ModelInferResponse& response) {
  if (response.raw_output_contents_size() > 0) {
    std::vector<std::string> out;
    const std::string& raw = response.raw_output_contents(0);
    size_t offset = 0;
    while (offset + 4 <= raw.size()) {
      uint32_t length;
      std::memcpy(&length, raw.data() + offset, 4);
      out.push_back(raw.substr(offset + 4, length));
      offset += 4 + length;
    }
    return out;
  }
  const auto& c = response.outputs(0).contents().bytes_contents();
  return std::vector<std::string>(c.begin(), c.end());
}

TEST_F(ServerTest, ClassifiesPngAndJpegImages) {
  StartServer();
  std::vector<std::string> images;
  std::vector<int> labels = {0, 4, 9, 6};
  images.push_back(EncodePng(PatternImage(0), 28, 28));
  images.push_back(EncodeJpeg(PatternImage(4), 28, 28));
  images.push_back(EncodePng(PatternImage(9, 56), 56, 56));   // resized to 28x28
  images.push_back(EncodeJpeg(PatternImage(6, 84), 84, 84));  // resized to 28x28
  for (bool raw : {false, true}) {
    inference::ModelInferResponse response;
    grpc::Status status = Infer(ImageRequest(images, 3, raw), &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(response.outputs_size(), 1);
    EXPECT_EQ(response.outputs(0).datatype(), "BYTES");
    EXPECT_EQ(std::vector<int64_t>(response.outputs(0).shape().begin(),
                                   response.outputs(0).shape().end()),
              (std::vector<int64_t>{4, 3}));
    const std::vector<std::string> classes = Classes(response);
    ASSERT_EQ(classes.size(), 12u);
    for (size_t i = 0; i < labels.size(); ++i) {
      const std::string suffix = absl::StrCat(":", labels[i], ":class", labels[i]);
      const std::string& best = classes[i * 3];
      EXPECT_EQ(best.substr(best.size() - suffix.size()), suffix) << best;
    }
  }
  // The PNG's score is exactly the oracle's (lossless, same size).
  inference::ModelInferResponse response;
  ASSERT_TRUE(Infer(ImageRequest({images[0]}, 1, false), &response).ok());
  const std::vector<float> pixels = PatternFloats(0);
  const auto expected = LinearLogits(pixels.data(), 0.0f);
  const std::string best = Classes(response)[0];
  EXPECT_NEAR(std::stof(best.substr(0, best.find(':'))), expected[0], 1e-4);
}

// Bundled models and images, when they are there.
TEST_F(ServerTest, ClassifiesBundledImagesWithFashionK3) {
  const std::filesystem::path source = CONVSERVE_SOURCE_DIR;
  const std::filesystem::path model = source / "models" / "repository" / "fashion-k3";
  const std::filesystem::path images = source / "tests" / "data" / "images";
  ASSERT_TRUE(std::filesystem::exists(model / "1" / "model.onnx")) << model;
  ASSERT_TRUE(std::filesystem::exists(images)) << images;
  std::filesystem::copy(model, root_ / "fashion-k3", std::filesystem::copy_options::recursive);
  StartServer();
  int total = 0, correct = 0;
  for (const auto& entry : std::filesystem::directory_iterator(images)) {
    const std::string name = entry.path().filename().string();
    const size_t at = name.find("label-");
    const std::string ext = entry.path().extension().string();
    if (at == std::string::npos || (ext != ".png" && ext != ".jpg" && ext != ".jpeg")) continue;
    const int label = std::stoi(name.substr(at + 6));
    std::ifstream in(entry.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    inference::ModelInferRequest request = ImageRequest({bytes}, 1, false);
    request.set_model_name("fashion-k3");
    inference::ModelInferResponse response;
    grpc::Status status = Infer(request, &response);
    ASSERT_TRUE(status.ok()) << name << ": " << status.error_message();
    const std::string best = Classes(response).at(0);
    const std::string index = best.substr(best.find(':') + 1);
    ++total;
    if (std::stoi(index) == label) ++correct;
  }
  ASSERT_GT(total, 0);
  EXPECT_GE(correct * 10, total * 8) << correct << " of " << total << " correct";
}

TEST_F(ServerTest, BadRequestsFailWithCodeAndMessageAndTheServerKeepsServing) {
  api::ServerOptions options;
  options.max_image_pixels = 10000;
  StartServer(options);
  {
    auto r = Fp32Request("nope", {1}, true);
    ExpectError(r, grpc::StatusCode::NOT_FOUND, "model 'nope' is not found");
  }
  {
    auto r = Fp32Request("tiny", {1}, true);
    r.set_model_version("7");
    ExpectError(r, grpc::StatusCode::NOT_FOUND, "version '7' of model 'tiny' is not found");
  }
  {
    auto r = Fp32Request("tiny", {1}, true);
    r.mutable_inputs(0)->set_datatype("INT32");
    ExpectError(r, grpc::StatusCode::INVALID_ARGUMENT,
                "unexpected datatype for input 'input' of model 'tiny': expected FP32 (or UINT8, "
                "or BYTES encoded images), got INT32");
  }
  {
    auto r = Fp32Request("tiny", {1}, true);
    r.mutable_inputs(0)->set_shape(1, 3);
    ExpectError(r, grpc::StatusCode::INVALID_ARGUMENT,
                "unexpected shape for input 'input' of model 'tiny': expected [-1,1,28,28], got "
                "[1,3,28,28]");
  }
  {
    auto r = Fp32Request("tiny", std::vector<int>(9, 1), true);
    ExpectError(r, grpc::StatusCode::INVALID_ARGUMENT,
                "batch size 9 of input 'input' exceeds max_batch_size 8 of model 'tiny'");
    // The batch is the error, whatever the contents: here one image's worth.
    auto one_image = Fp32Request("tiny", {1}, true);
    r.set_raw_input_contents(0, one_image.raw_input_contents(0));
    ExpectError(r, grpc::StatusCode::INVALID_ARGUMENT,
                "batch size 9 of input 'input' exceeds max_batch_size 8 of model 'tiny'");
  }
  {
    auto r = Fp32Request("tiny", {1}, true);
    r.mutable_inputs(0)->set_name("image");
    ExpectError(r, grpc::StatusCode::INVALID_ARGUMENT,
                "unexpected input 'image' for model 'tiny': the model's inputs are 'input'");
  }
  {
    inference::ModelInferRequest r;
    r.set_model_name("tiny");
    ExpectError(r, grpc::StatusCode::INVALID_ARGUMENT, "missing input 'input' for model 'tiny'");
  }
  {
    auto r = Fp32Request("tiny", {1}, true);
    r.mutable_raw_input_contents(0)->resize(100);
    ExpectError(r, grpc::StatusCode::INVALID_ARGUMENT,
                "input 'input' of model 'tiny': raw contents of shape [1,1,28,28] and datatype "
                "FP32 must have 3136 bytes, got 100");
  }
  {
    auto r = Fp32Request("tiny", {1}, false);
    r.mutable_inputs(0)->mutable_contents()->mutable_fp32_contents()->Resize(10, 0);
    ExpectError(r, grpc::StatusCode::INVALID_ARGUMENT, "needs 784 FP32 values in contents, got 10");
  }
  {
    auto r = Fp32Request("tiny", {1}, true);
    r.add_outputs()->set_name("probs");
    ExpectError(r, grpc::StatusCode::INVALID_ARGUMENT,
                "unexpected output 'probs' requested from model 'tiny'");
  }
  ExpectError(ImageRequest({"definitely not an image"}, 1, false),
              grpc::StatusCode::INVALID_ARGUMENT,
              "input 'input' of model 'tiny': element 0: not a JPEG or PNG image");
  {
    std::string png = EncodePng(PatternImage(1), 28, 28);
    png.resize(png.size() - 30);
    ExpectError(ImageRequest({png}, 1, false), grpc::StatusCode::INVALID_ARGUMENT,
                "corrupt or truncated PNG image");
    std::string jpeg = EncodeJpeg(PatternImage(1), 28, 28);
    jpeg.resize(jpeg.size() / 2);
    ExpectError(ImageRequest({jpeg}, 1, false), grpc::StatusCode::INVALID_ARGUMENT,
                "corrupt or truncated JPEG image");
  }
  ExpectError(ImageRequest({EncodePng(PatternImage(1, 200), 200, 200)}, 1, false),
              grpc::StatusCode::INVALID_ARGUMENT,
              "image of 200x200 = 40000 pixels exceeds the limit of 10000 pixels");
  {
    auto r = Fp32Request("broken", {1}, true);
    ExpectError(r, grpc::StatusCode::UNAVAILABLE, "model 'broken' is not ready");
  }
  // Every failure of an existing model is counted.
  const inference::ModelStatistics stats = Stats("tiny");
  EXPECT_EQ(stats.inference_stats().fail().count(),
            13u);  // the NOT_FOUND and other-model ones are not tiny's
  EXPECT_EQ(stats.inference_stats().success().count(), 16u);
}

// A request over --max-request-bytes: up to twice the limit the server reads it and refuses it
// with a message naming the model, the sizes and the largest input, counted in the model's
// statistics; beyond twice, gRPC refuses it unread with its own message. Oracle: the sizes
// computed here (the message's serialized size, the raw contents' length).
TEST_F(ServerTest, OversizeRequestIsRejectedNamingTheModelAndInput) {
  api::ServerOptions options;
  options.max_request_bytes = 64 * 1024;
  StartServer(options);
  auto r = Fp32Request("tiny", std::vector<int>(8, 1), true);  // 25 KB
  r.mutable_raw_input_contents(0)->append(std::string(100 * 1024, '\0'));
  const std::string raw_size = std::to_string(r.raw_input_contents(0).size());
  ExpectError(r, grpc::StatusCode::RESOURCE_EXHAUSTED,
              absl::StrCat("request to model 'tiny' is ", r.ByteSizeLong(),
                           " bytes, over the server's limit of 65536 bytes (--max-request-bytes); "
                           "its largest input, 'input', holds ",
                           raw_size, " bytes"));
  EXPECT_EQ(Stats("tiny").inference_stats().fail().count(), 1u);

  r.mutable_raw_input_contents(0)->append(std::string(100 * 1024, '\0'));  // 225 KB > 2 x 64 KiB
  inference::ModelInferResponse response;
  const grpc::Status status = Infer(r, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("Received message larger than max"));
  ExpectGoodRequestSucceeds();
}

TEST_F(ServerTest, ConcurrentRequestsAreBatchedAndEachGetsItsOwnAnswer) {
  StartServer();
  constexpr int kRequests = 8;
  std::vector<std::future<std::pair<grpc::Status, std::vector<float>>>> futures;
  for (int i = 0; i < kRequests; ++i) {
    futures.push_back(std::async(std::launch::async, [this, i] {
      inference::ModelInferResponse response;
      grpc::Status status = Infer(Fp32Request("tiny", {i % 10}, i % 2 == 0), &response);
      return std::make_pair(status, status.ok() ? Logits(response) : std::vector<float>{});
    }));
  }
  for (int i = 0; i < kRequests; ++i) {
    auto [status, logits] = futures[i].get();
    ASSERT_TRUE(status.ok()) << status.error_message();
    const std::vector<float> pixels = PatternFloats(i % 10);
    const auto expected = LinearLogits(pixels.data(), 0.0f);
    ASSERT_EQ(logits.size(), 10u);
    for (int k = 0; k < 10; ++k) EXPECT_NEAR(logits[k], expected[k], 1e-4) << "request " << i;
  }
  const inference::ModelStatistics stats = Stats("tiny");
  EXPECT_EQ(stats.inference_count(), static_cast<uint64_t>(kRequests));
  EXPECT_LT(stats.execution_count(), stats.inference_count());
  uint64_t batched = 0;
  for (const auto& b : stats.batch_stats()) batched += b.batch_size() * b.compute_infer().count();
  EXPECT_EQ(batched, static_cast<uint64_t>(kRequests));
  EXPECT_EQ(stats.inference_stats().success().count(), static_cast<uint64_t>(kRequests));
  EXPECT_EQ(stats.inference_stats().queue().count(), static_cast<uint64_t>(kRequests));
  EXPECT_GT(stats.last_inference(), 0u);

  // Percentiles from our own service.
  auto convserve_stub = convserve::v1::ConvServe::NewStub(channel_);
  grpc::ClientContext c;
  convserve::v1::ModelStatisticsRequest q;
  q.set_name("tiny");
  convserve::v1::ModelStatisticsResponse r;
  ASSERT_TRUE(convserve_stub->GetModelStatistics(&c, q, &r).ok());
  ASSERT_EQ(r.model_stats_size(), 1);
  const auto& minute = r.model_stats(0).last_minute();
  EXPECT_EQ(minute.request_count(), static_cast<uint64_t>(kRequests));
  EXPECT_GT(minute.total().p50_us(), 0);
  EXPECT_LE(minute.total().p50_us(), minute.total().p99_us());
  EXPECT_LE(minute.total().p99_us(), minute.total().max_us());
  EXPECT_EQ(r.model_stats(0).since_start().request_count(), static_cast<uint64_t>(kRequests));
}

TEST_F(ServerTest, RepositoryIndexShowsFailuresWithReasons) {
  StartServer();
  grpc::ClientContext c;
  inference::RepositoryIndexResponse r;
  ASSERT_TRUE(stub_->RepositoryIndex(&c, {}, &r).ok());
  std::map<std::string, inference::RepositoryIndexResponse::ModelIndex> by_name;
  for (const auto& m : r.models()) by_name[m.name()] = m;
  ASSERT_EQ(by_name.size(), 4u);
  EXPECT_EQ(by_name["tiny"].state(), "READY");
  EXPECT_EQ(by_name["tiny"].version(), "1");
  EXPECT_EQ(by_name["derived"].state(), "READY");
  EXPECT_EQ(by_name["broken"].state(), "UNAVAILABLE");
  EXPECT_THAT(by_name["broken"].reason(), HasSubstr("model 'broken': config.pbtxt:2:"));
  EXPECT_EQ(by_name["badfile"].state(), "UNAVAILABLE");
  EXPECT_THAT(by_name["badfile"].reason(), HasSubstr("model 'badfile' version 1"));
}

// What clients are told about a model that is not served: why, and no path of the server's.
TEST_F(ServerTest, NotReadyErrorsGiveTheReasonWithoutServerPaths) {
  StartServer();
  const std::string version_reason = "model file 'badfile/1/model.onnx': not an ONNX model";
  inference::ModelInferResponse response;
  grpc::Status s = Infer(Fp32Request("badfile", {1}, true), &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(
      s.error_message(),
      HasSubstr("model 'badfile' is not ready: version 1 failed to load: " + version_reason));
  EXPECT_THAT(s.error_message(), Not(HasSubstr(root_.string())));
  inference::ModelMetadataRequest metadata;
  metadata.set_name("badfile");
  s = Call(&GRPCInferenceService::Stub::ModelMetadata, metadata);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(s.error_message(), HasSubstr("version 1 failed to load: " + version_reason));
  inference::RepositoryModelLoadRequest load;
  load.set_model_name("missing");
  s = Call(&GRPCInferenceService::Stub::RepositoryModelLoad, load);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(s.error_message(),
              HasSubstr("model 'missing' is not in the model repository (no folder 'missing' in "
                        "it)"));
  EXPECT_THAT(s.error_message(), Not(HasSubstr(root_.string())));
  grpc::ClientContext c;
  inference::RepositoryIndexResponse r;
  ASSERT_TRUE(stub_->RepositoryIndex(&c, {}, &r).ok());
  int badfile_rows = 0;
  for (const auto& m : r.models()) {
    EXPECT_THAT(m.reason(), Not(HasSubstr(root_.string()))) << m.name();
    if (m.name() != "badfile") continue;
    ++badfile_rows;
    EXPECT_EQ(m.version(), "1");
    EXPECT_EQ(m.reason(), "model 'badfile' version 1: " + version_reason);
  }
  EXPECT_EQ(badfile_rows, 1);
}

TEST_F(ServerTest, ExplicitLoadUnloadAndNameEscapes) {
  StartServer();
  auto load = [&](const std::string& name) {
    grpc::ClientContext c;
    inference::RepositoryModelLoadRequest q;
    q.set_model_name(name);
    inference::RepositoryModelLoadResponse r;
    return stub_->RepositoryModelLoad(&c, q, &r);
  };
  auto unload = [&](const std::string& name) {
    grpc::ClientContext c;
    inference::RepositoryModelUnloadRequest q;
    q.set_model_name(name);
    inference::RepositoryModelUnloadResponse r;
    return stub_->RepositoryModelUnload(&c, q, &r);
  };
  for (const char* escape : {"../tiny", "..", "a/b", ".hidden"}) {
    grpc::Status s = load(escape);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << escape;
    EXPECT_THAT(s.error_message(), HasSubstr("is not valid")) << escape;
  }
  EXPECT_EQ(load("missing").error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(unload("derived").ok());
  {
    auto r = Fp32Request("derived", {1}, true);
    inference::ModelInferResponse response;
    EXPECT_EQ(Infer(r, &response).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  EXPECT_EQ(unload("derived").error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(load("derived").ok());
  auto r = Fp32Request("derived", {1}, true);
  inference::ModelInferResponse response;
  EXPECT_TRUE(Infer(r, &response).ok());
  // A broken config fails the load with its reason.
  grpc::Status s = load("broken");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("model 'broken': config.pbtxt:2:"));
}

// Explicit mode loads only what --load-model names (Triton's behaviour); the other folders are
// listed as not loaded and answer UNAVAILABLE until a RepositoryModelLoad.
TEST_F(ServerTest, ExplicitModeLoadsOnlyTheStartupModels) {
  api::ServerOptions options;
  options.model_control_mode = "explicit";
  options.load_models = {"tiny"};
  StartServer(options);
  std::map<std::string, inference::RepositoryIndexResponse::ModelIndex> by_name;
  {
    grpc::ClientContext c;
    inference::RepositoryIndexResponse r;
    ASSERT_TRUE(stub_->RepositoryIndex(&c, {}, &r).ok());
    for (const auto& m : r.models()) by_name[m.name()] = m;
  }
  ASSERT_EQ(by_name.size(), 4u);
  EXPECT_EQ(by_name["tiny"].state(), "READY");
  for (const char* name : {"derived", "broken", "badfile"}) {
    EXPECT_EQ(by_name[name].state(), "UNAVAILABLE") << name;
    EXPECT_EQ(by_name[name].reason(), "not loaded") << name;
  }
  inference::ModelInferResponse response;
  EXPECT_TRUE(Infer(Fp32Request("tiny", {1}, true), &response).ok());
  grpc::Status status = Infer(Fp32Request("derived", {1}, true), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(),
              HasSubstr("model 'derived' is in the repository but not loaded"));
  // Names that are neither folders nor valid stay NOT_FOUND.
  EXPECT_EQ(Infer(Fp32Request("../tiny", {1}, true), &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext c;
  inference::RepositoryModelLoadRequest q;
  q.set_model_name("derived");
  inference::RepositoryModelLoadResponse r;
  ASSERT_TRUE(stub_->RepositoryModelLoad(&c, q, &r).ok());
  EXPECT_TRUE(Infer(Fp32Request("derived", {1}, true), &response).ok());
}

TEST_F(ServerTest, LoadModelFlagIsChecked) {
  struct Case {
    std::string mode;
    std::vector<std::string> models;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {"explicit", {"tiny", "missing"}, "--load-model missing: model 'missing' is not in"},
           {"explicit", {"../tiny"}, "--load-model ../tiny: "},
           {"poll", {"tiny"}, "--load-model needs --model-control-mode=explicit"}}) {
    api::ServerOptions options = LocalOptions();
    options.model_control_mode = c.mode;
    options.load_models = c.models;
    auto server = api::Server::Start(options);
    ASSERT_FALSE(server.ok()) << c.message;
    EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument) << server.status();
    EXPECT_THAT(std::string(server.status().message()), HasSubstr(c.message));
  }
  // With no --load-model, explicit mode starts empty.
  api::ServerOptions options = LocalOptions();
  options.model_control_mode = "explicit";
  options.load_models = {};
  auto server = api::Server::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_TRUE((*server)->core().Served().empty());
}

TEST_F(ServerTest, HotReloadSwapsVersionsWithoutFailures) {
  StartServer();
  std::atomic<bool> stop{false};
  std::atomic<int> failures{0}, v1{0}, v2{0};
  std::thread client([&] {
    while (!stop.load()) {
      inference::ModelInferResponse response;
      grpc::Status status = Infer(Fp32Request("tiny", {1}, true), &response);
      if (!status.ok()) {
        ++failures;
        continue;
      }
      const float first = Logits(response).at(0);
      if (response.model_version() == "2" && first > 50) ++v2;
      if (response.model_version() == "1" && first < 50) ++v1;
    }
  });
  // Stops and joins the client on every exit, a failed ASSERT included.
  struct Joiner {
    std::atomic<bool>& stop;
    std::thread& thread;
    ~Joiner() {
      stop = true;
      if (thread.joinable()) thread.join();
    }
  } joiner{stop, client};
  auto load = [&] {
    grpc::ClientContext c;
    inference::RepositoryModelLoadRequest q;
    q.set_model_name("tiny");
    inference::RepositoryModelLoadResponse r;
    return stub_->RepositoryModelLoad(&c, q, &r);
  };
  // The client must have been answered by version 1 before version 2 arrives (a CI run once
  // loaded version 2 before the client thread had sent its first request).
  const auto deadline0 = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (v1.load() < 3 && std::chrono::steady_clock::now() < deadline0) std::this_thread::yield();
  ASSERT_GE(v1.load(), 3) << "version 1 never answered; failures " << failures.load();
  WriteLinearOnnx(root_ / "tiny" / "2" / "model.onnx", 100.0f);
  ASSERT_TRUE(load().ok());
  // Wait (with a deadline) until the client has seen version 2.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (v2.load() < 5 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  // A broken version 3 fails to load and leaves version 2 serving.
  std::filesystem::create_directories(root_ / "tiny" / "3");
  std::ofstream(root_ / "tiny" / "3" / "model.onnx") << "garbage";
  grpc::Status s = load();
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.error_message(), HasSubstr("model 'tiny' version 3"));
  const int v2_before = v2.load();
  const auto deadline2 = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (v2.load() < v2_before + 5 && std::chrono::steady_clock::now() < deadline2) {
    std::this_thread::yield();
  }
  stop = true;
  client.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GT(v1.load(), 0);
  EXPECT_GE(v2.load(), v2_before + 5);
  grpc::ClientContext c;
  inference::RepositoryIndexResponse r;
  ASSERT_TRUE(stub_->RepositoryIndex(&c, {}, &r).ok());
  bool saw_failed_v3 = false;
  for (const auto& m : r.models()) {
    if (m.name() == "tiny" && m.version() == "3") {
      saw_failed_v3 = m.state() == "UNAVAILABLE" && !m.reason().empty();
    }
  }
  EXPECT_TRUE(saw_failed_v3);
}

TEST_F(ServerTest, ShutdownLetsInFlightRequestsFinish) {
  StartServer();
  constexpr int kRequests = 6;
  std::vector<std::future<grpc::Status>> futures;
  for (int i = 0; i < kRequests; ++i) {
    futures.push_back(std::async(std::launch::async, [this] {
      inference::ModelInferResponse response;
      return Infer(Fp32Request("tiny", {1}, true), &response);
    }));
  }
  // Wait until all requests reached the server (polling with a deadline), then shut down.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (server_->core().in_flight() + static_cast<int64_t>(Stats("tiny").inference_count()) <
             kRequests &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_TRUE(server_->Shutdown());
  for (auto& f : futures) {
    grpc::Status status = f.get();
    EXPECT_TRUE(status.ok()) << status.error_message();
  }
}

TEST_F(ServerTest, HealthAndNewRequestsDuringShutdown) {
  StartServer();
  server_->core().BeginShutdown();
  inference::ModelInferResponse response;
  grpc::Status status = Infer(Fp32Request("tiny", {1}, true), &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(status.error_message(), HasSubstr("shutting down"));
  grpc::ClientContext c;
  inference::ServerReadyResponse r;
  ASSERT_TRUE(stub_->ServerReady(&c, {}, &r).ok());
  EXPECT_FALSE(r.ready());
}

}  // namespace
}  // namespace convserve::testing
