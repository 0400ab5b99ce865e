#include "server/repository/model_config.h"

#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace convserve::repository {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// The config bundled with models/repository/fashion-k3, verbatim.
constexpr std::string_view kFashionConfig = R"pb(name: "fashion-k3"
                                                 platform: "onnxruntime_onnx"
                                                 max_batch_size: 64 input
                                                 [ {
                                                   name: "input"
                                                   data_type: TYPE_FP32
                                                   format: FORMAT_NCHW
                                                   dims: [ 1, 28, 28 ]
                                                 }] output
                                                 [ {
                                                   name: "logits"
                                                   data_type: TYPE_FP32
                                                   dims: [ 10 ]
                                                   label_filename: "labels.txt"
                                                 }]
                                                 dynamic_batching {
                                                   max_queue_delay_microseconds: 500
                                                   preferred_batch_size: [ 8, 16, 32 ]
                                                   default_queue_policy { max_queue_size: 256 }
                                                 } instance_group
                                                 [ { count: 1 kind: KIND_CPU }]
                                                 preprocessing {
                                                   color_format: GRAY
                                                   width: 28
                                                   height: 28
                                                   scale: 0.003921569
                                                   mean: [ 0.2860 ]
                                                   std: [ 0.3530 ]
                                                   input: "input"
                                                 }
                                                 precision: "fp32"
)pb";

inference::ModelConfig FashionConfig() {
  absl::StatusOr<inference::ModelConfig> config = ParseModelConfig(kFashionConfig, "fashion-k3");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : inference::ModelConfig();
}

// Expects `status` to fail with `code` and a message that names the model and contains `text`.
void ExpectError(const absl::Status& status, absl::StatusCode code, std::string_view model,
                 std::string_view text) {
  EXPECT_EQ(status.code(), code) << status;
  EXPECT_THAT(std::string(status.message()), StartsWith("model '" + std::string(model) + "': "));
  EXPECT_THAT(std::string(status.message()), HasSubstr(std::string(text)));
}

void ExpectInvalid(const inference::ModelConfig& config, std::string_view text) {
  ExpectError(ValidateModelConfig(config, "fashion-k3"), absl::StatusCode::kInvalidArgument,
              "fashion-k3", text);
}

// ---------------------------------------------------------------------------------------------
// Parsing

TEST(ParseModelConfigTest, ParsesEveryFieldOfTheBundledConfig) {
  const inference::ModelConfig config = FashionConfig();
  EXPECT_EQ(config.name(), "fashion-k3");
  EXPECT_EQ(config.platform(), "onnxruntime_onnx");
  EXPECT_EQ(config.max_batch_size(), 64);

  ASSERT_EQ(config.input_size(), 1);
  const inference::ModelInput& input = config.input(0);
  EXPECT_EQ(input.name(), "input");
  EXPECT_EQ(input.data_type(), inference::TYPE_FP32);
  EXPECT_EQ(input.format(), inference::ModelInput::FORMAT_NCHW);
  EXPECT_THAT(input.dims(), ::testing::ElementsAre(1, 28, 28));

  ASSERT_EQ(config.output_size(), 1);
  const inference::ModelOutput& output = config.output(0);
  EXPECT_EQ(output.name(), "logits");
  EXPECT_EQ(output.data_type(), inference::TYPE_FP32);
  EXPECT_THAT(output.dims(), ::testing::ElementsAre(10));
  EXPECT_EQ(output.label_filename(), "labels.txt");

  ASSERT_TRUE(config.has_dynamic_batching());
  const inference::ModelDynamicBatching& batching = config.dynamic_batching();
  EXPECT_EQ(batching.max_queue_delay_microseconds(), 500u);
  EXPECT_THAT(batching.preferred_batch_size(), ::testing::ElementsAre(8, 16, 32));
  EXPECT_FALSE(batching.preserve_ordering());
  ASSERT_TRUE(batching.has_default_queue_policy());
  EXPECT_EQ(batching.default_queue_policy().max_queue_size(), 256u);

  ASSERT_EQ(config.instance_group_size(), 1);
  EXPECT_EQ(config.instance_group(0).count(), 1);
  EXPECT_EQ(config.instance_group(0).kind(), inference::ModelInstanceGroup::KIND_CPU);

  ASSERT_TRUE(config.has_preprocessing());
  const inference::ModelPreprocessing& pre = config.preprocessing();
  EXPECT_EQ(pre.color_format(), inference::ModelPreprocessing::GRAY);
  EXPECT_EQ(pre.width(), 28);
  EXPECT_EQ(pre.height(), 28);
  EXPECT_FLOAT_EQ(pre.scale(), 0.003921569f);
  EXPECT_THAT(pre.mean(), ::testing::ElementsAre(::testing::FloatEq(0.2860f)));
  EXPECT_THAT(pre.std(), ::testing::ElementsAre(::testing::FloatEq(0.3530f)));
  EXPECT_EQ(pre.input(), "input");
  EXPECT_EQ(pre.resize(), inference::ModelPreprocessing::BILINEAR);

  EXPECT_EQ(config.precision(), "fp32");
  EXPECT_TRUE(config.backend().empty());
  EXPECT_FALSE(config.has_version_policy());
}

TEST(ParseModelConfigTest, BundledConfigIsValid) {
  EXPECT_TRUE(ValidateModelConfig(FashionConfig(), "fashion-k3").ok());
}

TEST(ParseModelConfigTest, ParsesTritonFieldsBeyondTheBundledConfig) {
  absl::StatusOr<inference::ModelConfig> config =
      ParseModelConfig(R"pb(
                         backend: "onnxruntime"
                         default_model_filename: "net.onnx"
                         version_policy { specific { versions: [ 1, 3 ] } }
                         parameters {
                           key: "k"
                           value { string_value: "v" }
                         }
                         preprocessing { resize: NEAREST }
                       )pb",
                       "m");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->backend(), "onnxruntime");
  EXPECT_EQ(config->default_model_filename(), "net.onnx");
  EXPECT_THAT(config->version_policy().specific().versions(), ::testing::ElementsAre(1, 3));
  EXPECT_EQ(config->parameters().at("k").string_value(), "v");
  EXPECT_EQ(config->preprocessing().resize(), inference::ModelPreprocessing::NEAREST);
}

TEST(ParseModelConfigTest, OurFieldsAreNumberedAboveTritons) {
  // A Triton client skips fields it does not know; ours must not reuse Triton's numbers.
  const auto* descriptor = inference::ModelConfig::descriptor();
  EXPECT_EQ(descriptor->FindFieldByName("preprocessing")->number(), 1000);
  EXPECT_EQ(descriptor->FindFieldByName("precision")->number(), 1001);
  EXPECT_EQ(descriptor->FindFieldByName("dynamic_batching")->number(), 11);
  EXPECT_EQ(descriptor->FindFieldByName("backend")->number(), 17);
}

TEST(ParseModelConfigTest, MalformedTextNamesModelLineAndColumn) {
  const absl::StatusOr<inference::ModelConfig> config =
      ParseModelConfig("name: \"m\"\nmax_batch_size: 4\ninput [ { name: 12 } ]\n", "m");
  ASSERT_FALSE(config.ok());
  ExpectError(config.status(), absl::StatusCode::kInvalidArgument, "m", "config.pbtxt:3:");
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("Expected string"));
}

TEST(ParseModelConfigTest, ErrorPositionIsOneBased) {
  const absl::StatusOr<inference::ModelConfig> config = ParseModelConfig("max_batch_size: x", "m");
  ASSERT_FALSE(config.ok());
  ExpectError(config.status(), absl::StatusCode::kInvalidArgument, "m", "config.pbtxt:1:17: ");
}

TEST(ParseModelConfigTest, UnknownFieldIsAnError) {
  const absl::StatusOr<inference::ModelConfig> config =
      ParseModelConfig("name: \"m\"\n\nmax_batch: 4\n", "m");
  ASSERT_FALSE(config.ok());
  ExpectError(config.status(), absl::StatusCode::kInvalidArgument, "m", "config.pbtxt:3:");
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("max_batch"));
}

TEST(ParseModelConfigTest, UnknownEnumValueIsAnError) {
  const absl::StatusOr<inference::ModelConfig> config =
      ParseModelConfig("input [ { name: \"a\" data_type: TYPE_FLOAT } ]", "m");
  ASSERT_FALSE(config.ok());
  ExpectError(config.status(), absl::StatusCode::kInvalidArgument, "m", "config.pbtxt:1:");
  EXPECT_THAT(std::string(config.status().message()), HasSubstr("TYPE_FLOAT"));
}

TEST(ParseModelConfigTest, RepeatedSingularFieldIsAnError) {
  const absl::StatusOr<inference::ModelConfig> config =
      ParseModelConfig("name: \"a\"\nname: \"b\"\n", "m");
  ASSERT_FALSE(config.ok());
  ExpectError(config.status(), absl::StatusCode::kInvalidArgument, "m", "config.pbtxt:2:");
}

TEST(ParseModelConfigTest, EmptyTextIsAnEmptyConfig) {
  const absl::StatusOr<inference::ModelConfig> config = ParseModelConfig("", "m");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->ByteSizeLong(), 0u);
}

// ---------------------------------------------------------------------------------------------
// Validation: each rule has a failing case that asserts its message.

TEST(ValidateModelConfigTest, NameMustMatchFolder) {
  inference::ModelConfig config = FashionConfig();
  config.set_name("other");
  ExpectInvalid(config, "name 'other' does not match the model folder 'fashion-k3'");
}

TEST(ValidateModelConfigTest, EmptyNameIsAcceptedAndFilledFromFolder) {
  inference::ModelConfig config = FashionConfig();
  config.clear_name();
  ASSERT_TRUE(ValidateModelConfig(config, "fashion-k3").ok());
  ApplyModelConfigDefaults(&config, "fashion-k3");
  EXPECT_EQ(config.name(), "fashion-k3");
}

TEST(ValidateModelConfigTest, MaxBatchSizeMustNotBeNegative) {
  inference::ModelConfig config = FashionConfig();
  config.set_max_batch_size(-1);
  ExpectInvalid(config, "max_batch_size must be >= 0, got -1");
}

TEST(ValidateModelConfigTest, NeedsAnInputAndAnOutput) {
  inference::ModelConfig config = FashionConfig();
  config.clear_preprocessing();
  config.clear_input();
  ExpectInvalid(config, "input: at least one input is required");
  config = FashionConfig();
  config.clear_output();
  ExpectInvalid(config, "output: at least one output is required");
}

TEST(ValidateModelConfigTest, InputNeedsName) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_input(0)->clear_name();
  ExpectInvalid(config, "input[0]: name is required");
}

TEST(ValidateModelConfigTest, OutputNeedsName) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_output(0)->clear_name();
  ExpectInvalid(config, "output[0]: name is required");
}

TEST(ValidateModelConfigTest, DataTypeIsRequired) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_input(0)->set_data_type(inference::TYPE_INVALID);
  ExpectInvalid(config, "input[0] 'input': data_type is required");
  config = FashionConfig();
  config.mutable_output(0)->set_data_type(inference::TYPE_INVALID);
  ExpectInvalid(config, "output[0] 'logits': data_type is required");
}

TEST(ValidateModelConfigTest, DataTypeOutsideTheEnumIsRejected) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_output(0)->set_data_type(static_cast<inference::DataType>(99));
  ExpectInvalid(config, "output[0] 'logits': data_type 99 is not a valid data type");
}

TEST(ValidateModelConfigTest, DimsAreRequired) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_output(0)->clear_dims();
  ExpectInvalid(config, "output[0] 'logits': dims is required");
}

TEST(ValidateModelConfigTest, DimsMustBePositiveOrMinusOne) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_input(0)->set_dims(1, 0);
  ExpectInvalid(config, "input[0] 'input': dims[1] must be >= 1 or -1, got 0");
  config = FashionConfig();
  config.mutable_output(0)->set_dims(0, -2);
  ExpectInvalid(config, "output[0] 'logits': dims[0] must be >= 1 or -1, got -2");
}

TEST(ValidateModelConfigTest, VariableDimsAreAccepted) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_input(0)->set_dims(1, -1);
  config.mutable_input(0)->set_dims(2, -1);
  config.mutable_output(0)->set_dims(0, -1);
  EXPECT_TRUE(ValidateModelConfig(config, "fashion-k3").ok());
}

TEST(ValidateModelConfigTest, DuplicateNamesAreRejected) {
  inference::ModelConfig config = FashionConfig();
  *config.add_input() = config.input(0);
  ExpectInvalid(config, "input[1] 'input': duplicate input name (also input[0])");
  config = FashionConfig();
  *config.add_output() = config.output(0);
  ExpectInvalid(config, "output[1] 'logits': duplicate output name (also output[0])");
}

TEST(ValidateModelConfigTest, ImageFormatNeedsThreeDims) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_input(0)->add_dims(1);
  ExpectInvalid(config, "input[0] 'input': format FORMAT_NCHW needs 3 dims (C, H, W), got 4");
}

TEST(ValidateModelConfigTest, ImageFormatWithoutBatchingMayIncludeTheBatchDim) {
  inference::ModelConfig config = FashionConfig();
  config.clear_dynamic_batching();
  config.set_max_batch_size(0);
  config.mutable_input(0)->clear_dims();
  for (int64_t dim : {1, 1, 28, 28}) config.mutable_input(0)->add_dims(dim);
  EXPECT_TRUE(ValidateModelConfig(config, "fashion-k3").ok());
}

TEST(ValidateModelConfigTest, LabelFileMustStayInTheModelFolder) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_output(0)->set_label_filename("../secrets.txt");
  ExpectInvalid(config,
                "output[0] 'logits': label_filename '../secrets.txt' must be a file name in the "
                "model folder, not a path");
}

TEST(ValidateModelConfigTest, LabelFileMustNotBeBlank) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_output(0)->set_label_filename("  ");
  ExpectInvalid(config,
                "output[0] 'logits': label_filename '  ' must be a file name in the model folder, "
                "not blank");
}

// The model file is read from the version folder; like label_filename, it may not be a path.
TEST(ValidateModelConfigTest, ModelFileMustStayInTheVersionFolder) {
  for (const std::string file : {"/tmp/x/secret.onnx", "../../other-model/1/model.onnx",
                                 "sub/model.onnx", "..", ".", "a\\b.onnx"}) {
    SCOPED_TRACE(file);
    inference::ModelConfig config = FashionConfig();
    config.set_default_model_filename(file);
    const std::string shown = file == "a\\b.onnx" ? "a\\\\b.onnx" : file;
    EXPECT_EQ(ValidateModelConfig(config, "fashion-k3"),
              absl::InvalidArgumentError("model 'fashion-k3': default_model_filename '" + shown +
                                         "' must be a file name in the version folder, not a "
                                         "path"));
  }
  inference::ModelConfig config = FashionConfig();
  config.set_default_model_filename(" \t");
  ExpectInvalid(config,
                "default_model_filename ' \\t' must be a file name in the version folder, not "
                "blank");
  config.set_default_model_filename(std::string("net.onnx\0/../x", 14));
  ExpectInvalid(config,
                "default_model_filename 'net.onnx\\000/../x' must be a file name in the version "
                "folder, not a name with a NUL character");
  // A plain file name, and the default (empty: model.onnx), are fine.
  config.set_default_model_filename("net.onnx");
  EXPECT_TRUE(ValidateModelConfig(config, "fashion-k3").ok());
  config.clear_default_model_filename();
  EXPECT_TRUE(ValidateModelConfig(config, "fashion-k3").ok());
}

TEST(ValidateModelConfigTest, PreferredBatchSizeMustNotExceedMaxBatchSize) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_dynamic_batching()->add_preferred_batch_size(128);
  ExpectInvalid(config,
                "dynamic_batching.preferred_batch_size[3] must be in [1, 64] (max_batch_size), "
                "got 128");
  config = FashionConfig();
  config.mutable_dynamic_batching()->set_preferred_batch_size(0, 0);
  ExpectInvalid(config, "dynamic_batching.preferred_batch_size[0] must be in [1, 64]");
}

TEST(ValidateModelConfigTest, DynamicBatchingNeedsBatching) {
  inference::ModelConfig config = FashionConfig();
  config.set_max_batch_size(0);
  config.mutable_input(0)->set_format(inference::ModelInput::FORMAT_NONE);
  ExpectInvalid(config, "dynamic_batching requires max_batch_size > 0");
}

TEST(ValidateModelConfigTest, InstanceCountMustNotBeNegative) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_instance_group(0)->set_count(-2);
  ExpectInvalid(config, "instance_group[0].count must be >= 0, got -2");
}

TEST(ValidateModelConfigTest, InstanceCountZeroBecomesOne) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_instance_group(0)->set_count(0);
  config.mutable_instance_group(0)->set_kind(inference::ModelInstanceGroup::KIND_AUTO);
  ASSERT_TRUE(ValidateModelConfig(config, "fashion-k3").ok());
  ApplyModelConfigDefaults(&config, "fashion-k3");
  EXPECT_EQ(config.instance_group(0).count(), 1);
  EXPECT_EQ(config.instance_group(0).kind(), inference::ModelInstanceGroup::KIND_CPU);
}

TEST(ValidateModelConfigTest, GpuInstancesAreUnimplemented) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_instance_group(0)->set_kind(inference::ModelInstanceGroup::KIND_GPU);
  ExpectError(ValidateModelConfig(config, "fashion-k3"), absl::StatusCode::kUnimplemented,
              "fashion-k3",
              "instance_group[0].kind KIND_GPU is not supported: convserve runs on CPU only");
}

TEST(ValidateModelConfigTest, PrecisionMustBeKnown) {
  inference::ModelConfig config = FashionConfig();
  config.set_precision("fp16");
  ExpectInvalid(config, "precision 'fp16' is not supported (fp32, bf16 or int8)");
  for (const char* precision : {"", "fp32", "bf16", "int8"}) {
    config.set_precision(precision);
    EXPECT_TRUE(ValidateModelConfig(config, "fashion-k3").ok()) << precision;
  }
}

TEST(ValidateModelConfigTest, PreprocessingNeedsColorFormat) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_preprocessing()->clear_color_format();
  ExpectInvalid(config, "preprocessing.color_format is required (GRAY, RGB or BGR)");
}

TEST(ValidateModelConfigTest, PreprocessingSizeMustBePositive) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_preprocessing()->set_width(0);
  ExpectInvalid(config, "preprocessing.width must be > 0, got 0");
  config = FashionConfig();
  config.mutable_preprocessing()->set_height(-28);
  ExpectInvalid(config, "preprocessing.height must be > 0, got -28");
}

TEST(ValidateModelConfigTest, PreprocessingMeanAndStdMatchTheChannels) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_preprocessing()->add_mean(0.5f);
  ExpectInvalid(config, "preprocessing.mean has 2 values but GRAY has 1 channel");

  // RGB needs three values each, and a 3-channel input.
  config = FashionConfig();
  config.mutable_input(0)->set_dims(0, 3);
  config.mutable_preprocessing()->set_color_format(inference::ModelPreprocessing::RGB);
  ExpectInvalid(config, "preprocessing.mean has 1 value but RGB has 3 channels");
  config.mutable_preprocessing()->mutable_mean()->Resize(3, 0.5f);
  ExpectInvalid(config, "preprocessing.std has 1 value but RGB has 3 channels");
  config.mutable_preprocessing()->mutable_std()->Resize(3, 0.25f);
  EXPECT_TRUE(ValidateModelConfig(config, "fashion-k3").ok());
}

TEST(ValidateModelConfigTest, PreprocessingStdMustBeNonZero) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_preprocessing()->set_std(0, 0.0f);
  ExpectInvalid(config, "preprocessing.std[0] must be non-zero");
}

TEST(ValidateModelConfigTest, PreprocessingInputMustExist) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_preprocessing()->set_input("image");
  ExpectInvalid(config, "preprocessing.input 'image' is not an input of the model (input)");
}

TEST(ValidateModelConfigTest, PreprocessingInputMayBeEmptyWithOneInput) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_preprocessing()->clear_input();
  ASSERT_TRUE(ValidateModelConfig(config, "fashion-k3").ok());
  ApplyModelConfigDefaults(&config, "fashion-k3");
  EXPECT_EQ(config.preprocessing().input(), "input");
}

TEST(ValidateModelConfigTest, PreprocessingInputIsRequiredWithSeveralInputs) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_preprocessing()->clear_input();
  inference::ModelInput* second = config.add_input();
  *second = config.input(0);
  second->set_name("mask");
  ExpectInvalid(config, "preprocessing.input is required when the model has 2 inputs");
  config.mutable_preprocessing()->set_input("mask");
  EXPECT_TRUE(ValidateModelConfig(config, "fashion-k3").ok());
}

TEST(ValidateModelConfigTest, PreprocessingMustProduceTheInputShape) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_preprocessing()->set_width(32);
  ExpectInvalid(config, "preprocessing.width 32 does not match input[0] 'input' width 28");
  config = FashionConfig();
  config.mutable_preprocessing()->set_height(32);
  ExpectInvalid(config, "preprocessing.height 32 does not match input[0] 'input' height 28");
  config = FashionConfig();
  config.mutable_input(0)->set_dims(0, 3);
  ExpectInvalid(config,
                "preprocessing.color_format GRAY gives 1 channel but input[0] 'input' has 3");
}

TEST(ValidateModelConfigTest, PreprocessingChecksNhwcLayout) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_input(0)->set_format(inference::ModelInput::FORMAT_NHWC);
  config.mutable_input(0)->clear_dims();
  for (int64_t dim : {28, 28, 1}) config.mutable_input(0)->add_dims(dim);
  EXPECT_TRUE(ValidateModelConfig(config, "fashion-k3").ok());
  config.mutable_input(0)->set_dims(2, 3);
  ExpectInvalid(config,
                "preprocessing.color_format GRAY gives 1 channel but input[0] 'input' has 3");
}

// ---------------------------------------------------------------------------------------------
// Defaults and the combined entry point

TEST(ApplyModelConfigDefaultsTest, FillsEverythingLeftOut) {
  absl::StatusOr<inference::ModelConfig> config =
      LoadModelConfig(R"pb(
                        max_batch_size: 8 input
                        [ {
                          name: "x"
                          data_type: TYPE_FP32
                          format: FORMAT_NCHW
                          dims: [ 3, 32, 32 ]
                        }] output
                        [ {
                          name: "y"
                          data_type: TYPE_FP32
                          dims: [ 10 ]
                        }]
                        preprocessing { color_format: RGB width: 32 height: 32 }
                      )pb",
                      "cifar");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->name(), "cifar");
  EXPECT_EQ(config->backend(), "convserve");
  ASSERT_EQ(config->instance_group_size(), 1);
  EXPECT_EQ(config->instance_group(0).name(), "cifar_0");
  EXPECT_EQ(config->instance_group(0).count(), 1);
  EXPECT_EQ(config->instance_group(0).kind(), inference::ModelInstanceGroup::KIND_CPU);
  EXPECT_EQ(config->precision(), "fp32");
  ASSERT_TRUE(config->version_policy().has_latest());
  EXPECT_EQ(config->version_policy().latest().num_versions(), 1u);
  EXPECT_EQ(config->preprocessing().input(), "x");
  EXPECT_FLOAT_EQ(config->preprocessing().scale(), 1.0f);
  EXPECT_THAT(config->preprocessing().mean(), ::testing::ElementsAre(0.0f, 0.0f, 0.0f));
  EXPECT_THAT(config->preprocessing().std(), ::testing::ElementsAre(1.0f, 1.0f, 1.0f));
}

TEST(ApplyModelConfigDefaultsTest, KeepsWhatIsSet) {
  inference::ModelConfig config = FashionConfig();
  config.mutable_version_policy()->mutable_latest()->set_num_versions(2);
  config.set_backend("onnxruntime");
  config.mutable_instance_group(0)->set_name("cpu");
  const inference::ModelConfig before = config;
  ApplyModelConfigDefaults(&config, "fashion-k3");
  EXPECT_EQ(config.SerializeAsString(), before.SerializeAsString());
}

TEST(LoadModelConfigTest, ReportsParseAndValidationErrors) {
  ExpectError(LoadModelConfig("max_batch_size: [", "m").status(),
              absl::StatusCode::kInvalidArgument, "m", "config.pbtxt:1:");
  ExpectError(LoadModelConfig(kFashionConfig, "fashion").status(),
              absl::StatusCode::kInvalidArgument, "fashion",
              "name 'fashion-k3' does not match the model folder 'fashion'");
}

// ---------------------------------------------------------------------------------------------
// Data types

TEST(DataTypeTest, ConvertsEveryTypeBothWays) {
  struct Case {
    inference::DataType type;
    std::string_view kserve;
    int64_t byte_size;
  };
  const Case cases[] = {
      {inference::TYPE_BOOL, "BOOL", 1},     {inference::TYPE_UINT8, "UINT8", 1},
      {inference::TYPE_UINT16, "UINT16", 2}, {inference::TYPE_UINT32, "UINT32", 4},
      {inference::TYPE_UINT64, "UINT64", 8}, {inference::TYPE_INT8, "INT8", 1},
      {inference::TYPE_INT16, "INT16", 2},   {inference::TYPE_INT32, "INT32", 4},
      {inference::TYPE_INT64, "INT64", 8},   {inference::TYPE_FP16, "FP16", 2},
      {inference::TYPE_FP32, "FP32", 4},     {inference::TYPE_FP64, "FP64", 8},
      {inference::TYPE_STRING, "BYTES", 0},  {inference::TYPE_BF16, "BF16", 2},
  };
  // Every valid enum value except TYPE_INVALID is covered.
  EXPECT_EQ(std::size(cases), static_cast<size_t>(inference::DataType_MAX));
  for (const Case& c : cases) {
    EXPECT_EQ(DataTypeToKServe(c.type), c.kserve);
    EXPECT_EQ(DataTypeFromKServe(c.kserve), c.type) << c.kserve;
    EXPECT_EQ(DataTypeByteSize(c.type), c.byte_size) << c.kserve;
  }
}

TEST(DataTypeTest, UnknownValuesMapToInvalid) {
  EXPECT_EQ(DataTypeToKServe(inference::TYPE_INVALID), "");
  EXPECT_EQ(DataTypeToKServe(static_cast<inference::DataType>(99)), "");
  EXPECT_EQ(DataTypeByteSize(inference::TYPE_INVALID), 0);
  EXPECT_EQ(DataTypeFromKServe("fp32"), inference::TYPE_INVALID);
  EXPECT_EQ(DataTypeFromKServe("STRING"), inference::TYPE_INVALID);
  EXPECT_EQ(DataTypeFromKServe("TYPE_FP32"), inference::TYPE_INVALID);
  EXPECT_EQ(DataTypeFromKServe(""), inference::TYPE_INVALID);
}

TEST(ColorFormatTest, ChannelsPerFormat) {
  EXPECT_EQ(ColorFormatChannels(inference::ModelPreprocessing::GRAY), 1);
  EXPECT_EQ(ColorFormatChannels(inference::ModelPreprocessing::RGB), 3);
  EXPECT_EQ(ColorFormatChannels(inference::ModelPreprocessing::BGR), 3);
  EXPECT_EQ(ColorFormatChannels(inference::ModelPreprocessing::COLOR_FORMAT_UNSPECIFIED), 0);
}

}  // namespace
}  // namespace convserve::repository
