// Wire compatibility of proto/inference.proto and proto/model_config.proto with Triton and KServe
// clients: every field number and type below is transcribed independently from
// docs/protocol.md (itself read from the public protocol definitions), so a renumbered or retyped
// field in the .proto files fails here.
#include <string>
#include <string_view>

#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "proto/convserve.pb.h"
#include "proto/inference.pb.h"
#include "proto/model_config.pb.h"

namespace {

using google::protobuf::Descriptor;
using google::protobuf::DescriptorPool;
using google::protobuf::FieldDescriptor;

struct WireField {
  std::string_view message;  // full name
  std::string_view field;
  int number;
  std::string_view type;  // "string", "repeated int64", "map", "inference.ModelConfig", ...
};

std::string TypeOf(const FieldDescriptor& field) {
  if (field.is_map()) return "map";
  std::string type = field.is_repeated() ? "repeated " : "";
  if (field.type() == FieldDescriptor::TYPE_MESSAGE)
    return type + field.message_type()->full_name();
  if (field.type() == FieldDescriptor::TYPE_ENUM) return type + field.enum_type()->full_name();
  return type + field.type_name();
}

constexpr WireField kInferenceFields[] = {
    {"inference.ServerLiveResponse", "live", 1, "bool"},
    {"inference.ServerReadyResponse", "ready", 1, "bool"},
    {"inference.ModelReadyRequest", "name", 1, "string"},
    {"inference.ModelReadyRequest", "version", 2, "string"},
    {"inference.ModelReadyResponse", "ready", 1, "bool"},
    {"inference.ServerMetadataResponse", "name", 1, "string"},
    {"inference.ServerMetadataResponse", "version", 2, "string"},
    {"inference.ServerMetadataResponse", "extensions", 3, "repeated string"},
    {"inference.ModelMetadataRequest", "name", 1, "string"},
    {"inference.ModelMetadataRequest", "version", 2, "string"},
    {"inference.ModelMetadataResponse", "name", 1, "string"},
    {"inference.ModelMetadataResponse", "versions", 2, "repeated string"},
    {"inference.ModelMetadataResponse", "platform", 3, "string"},
    {"inference.ModelMetadataResponse", "inputs", 4,
     "repeated inference.ModelMetadataResponse.TensorMetadata"},
    {"inference.ModelMetadataResponse", "outputs", 5,
     "repeated inference.ModelMetadataResponse.TensorMetadata"},
    {"inference.ModelMetadataResponse.TensorMetadata", "name", 1, "string"},
    {"inference.ModelMetadataResponse.TensorMetadata", "datatype", 2, "string"},
    {"inference.ModelMetadataResponse.TensorMetadata", "shape", 3, "repeated int64"},
    {"inference.ModelInferRequest", "model_name", 1, "string"},
    {"inference.ModelInferRequest", "model_version", 2, "string"},
    {"inference.ModelInferRequest", "id", 3, "string"},
    {"inference.ModelInferRequest", "parameters", 4, "map"},
    {"inference.ModelInferRequest", "inputs", 5,
     "repeated inference.ModelInferRequest.InferInputTensor"},
    {"inference.ModelInferRequest", "outputs", 6,
     "repeated inference.ModelInferRequest.InferRequestedOutputTensor"},
    {"inference.ModelInferRequest", "raw_input_contents", 7, "repeated bytes"},
    {"inference.ModelInferRequest.InferInputTensor", "name", 1, "string"},
    {"inference.ModelInferRequest.InferInputTensor", "datatype", 2, "string"},
    {"inference.ModelInferRequest.InferInputTensor", "shape", 3, "repeated int64"},
    {"inference.ModelInferRequest.InferInputTensor", "parameters", 4, "map"},
    {"inference.ModelInferRequest.InferInputTensor", "contents", 5,
     "inference.InferTensorContents"},
    {"inference.ModelInferRequest.InferRequestedOutputTensor", "name", 1, "string"},
    {"inference.ModelInferRequest.InferRequestedOutputTensor", "parameters", 2, "map"},
    {"inference.ModelInferResponse", "model_name", 1, "string"},
    {"inference.ModelInferResponse", "model_version", 2, "string"},
    {"inference.ModelInferResponse", "id", 3, "string"},
    {"inference.ModelInferResponse", "parameters", 4, "map"},
    {"inference.ModelInferResponse", "outputs", 5,
     "repeated inference.ModelInferResponse.InferOutputTensor"},
    {"inference.ModelInferResponse", "raw_output_contents", 6, "repeated bytes"},
    {"inference.ModelInferResponse.InferOutputTensor", "name", 1, "string"},
    {"inference.ModelInferResponse.InferOutputTensor", "datatype", 2, "string"},
    {"inference.ModelInferResponse.InferOutputTensor", "shape", 3, "repeated int64"},
    {"inference.ModelInferResponse.InferOutputTensor", "parameters", 4, "map"},
    {"inference.ModelInferResponse.InferOutputTensor", "contents", 5,
     "inference.InferTensorContents"},
    {"inference.InferParameter", "bool_param", 1, "bool"},
    {"inference.InferParameter", "int64_param", 2, "int64"},
    {"inference.InferParameter", "string_param", 3, "string"},
    {"inference.InferParameter", "double_param", 4, "double"},
    {"inference.InferParameter", "uint64_param", 5, "uint64"},
    {"inference.InferTensorContents", "bool_contents", 1, "repeated bool"},
    {"inference.InferTensorContents", "int_contents", 2, "repeated int32"},
    {"inference.InferTensorContents", "int64_contents", 3, "repeated int64"},
    {"inference.InferTensorContents", "uint_contents", 4, "repeated uint32"},
    {"inference.InferTensorContents", "uint64_contents", 5, "repeated uint64"},
    {"inference.InferTensorContents", "fp32_contents", 6, "repeated float"},
    {"inference.InferTensorContents", "fp64_contents", 7, "repeated double"},
    {"inference.InferTensorContents", "bytes_contents", 8, "repeated bytes"},
    {"inference.ModelConfigRequest", "name", 1, "string"},
    {"inference.ModelConfigRequest", "version", 2, "string"},
    {"inference.ModelConfigResponse", "config", 1, "inference.ModelConfig"},
    {"inference.ModelStatisticsRequest", "name", 1, "string"},
    {"inference.ModelStatisticsRequest", "version", 2, "string"},
    {"inference.ModelStatisticsResponse", "model_stats", 1, "repeated inference.ModelStatistics"},
    {"inference.StatisticDuration", "count", 1, "uint64"},
    {"inference.StatisticDuration", "ns", 2, "uint64"},
    {"inference.InferStatistics", "success", 1, "inference.StatisticDuration"},
    {"inference.InferStatistics", "fail", 2, "inference.StatisticDuration"},
    {"inference.InferStatistics", "queue", 3, "inference.StatisticDuration"},
    {"inference.InferStatistics", "compute_input", 4, "inference.StatisticDuration"},
    {"inference.InferStatistics", "compute_infer", 5, "inference.StatisticDuration"},
    {"inference.InferStatistics", "compute_output", 6, "inference.StatisticDuration"},
    {"inference.InferStatistics", "cache_hit", 7, "inference.StatisticDuration"},
    {"inference.InferStatistics", "cache_miss", 8, "inference.StatisticDuration"},
    {"inference.InferBatchStatistics", "batch_size", 1, "uint64"},
    {"inference.InferBatchStatistics", "compute_input", 2, "inference.StatisticDuration"},
    {"inference.InferBatchStatistics", "compute_infer", 3, "inference.StatisticDuration"},
    {"inference.InferBatchStatistics", "compute_output", 4, "inference.StatisticDuration"},
    {"inference.MemoryUsage", "type", 1, "string"},
    {"inference.MemoryUsage", "id", 2, "int64"},
    {"inference.MemoryUsage", "byte_size", 3, "uint64"},
    {"inference.ModelStatistics", "name", 1, "string"},
    {"inference.ModelStatistics", "version", 2, "string"},
    {"inference.ModelStatistics", "last_inference", 3, "uint64"},
    {"inference.ModelStatistics", "inference_count", 4, "uint64"},
    {"inference.ModelStatistics", "execution_count", 5, "uint64"},
    {"inference.ModelStatistics", "inference_stats", 6, "inference.InferStatistics"},
    {"inference.ModelStatistics", "batch_stats", 7, "repeated inference.InferBatchStatistics"},
    {"inference.ModelStatistics", "memory_usage", 8, "repeated inference.MemoryUsage"},
    {"inference.RepositoryIndexRequest", "repository_name", 1, "string"},
    {"inference.RepositoryIndexRequest", "ready", 2, "bool"},
    {"inference.RepositoryIndexResponse", "models", 1,
     "repeated inference.RepositoryIndexResponse.ModelIndex"},
    {"inference.RepositoryIndexResponse.ModelIndex", "name", 1, "string"},
    {"inference.RepositoryIndexResponse.ModelIndex", "version", 2, "string"},
    {"inference.RepositoryIndexResponse.ModelIndex", "state", 3, "string"},
    {"inference.RepositoryIndexResponse.ModelIndex", "reason", 4, "string"},
    {"inference.RepositoryModelLoadRequest", "repository_name", 1, "string"},
    {"inference.RepositoryModelLoadRequest", "model_name", 2, "string"},
    {"inference.RepositoryModelLoadRequest", "parameters", 3, "map"},
    {"inference.RepositoryModelUnloadRequest", "repository_name", 1, "string"},
    {"inference.RepositoryModelUnloadRequest", "model_name", 2, "string"},
    {"inference.RepositoryModelUnloadRequest", "parameters", 3, "map"},
    {"inference.ModelRepositoryParameter", "bool_param", 1, "bool"},
    {"inference.ModelRepositoryParameter", "int64_param", 2, "int64"},
    {"inference.ModelRepositoryParameter", "string_param", 3, "string"},
    {"inference.ModelRepositoryParameter", "bytes_param", 4, "bytes"},
    // model_config.proto
    {"inference.ModelConfig", "name", 1, "string"},
    {"inference.ModelConfig", "platform", 2, "string"},
    {"inference.ModelConfig", "backend", 17, "string"},
    {"inference.ModelConfig", "version_policy", 3, "inference.ModelVersionPolicy"},
    {"inference.ModelConfig", "max_batch_size", 4, "int32"},
    {"inference.ModelConfig", "input", 5, "repeated inference.ModelInput"},
    {"inference.ModelConfig", "output", 6, "repeated inference.ModelOutput"},
    {"inference.ModelConfig", "instance_group", 7, "repeated inference.ModelInstanceGroup"},
    {"inference.ModelConfig", "default_model_filename", 8, "string"},
    {"inference.ModelConfig", "dynamic_batching", 11, "inference.ModelDynamicBatching"},
    {"inference.ModelConfig", "parameters", 14, "map"},
    {"inference.ModelConfig", "preprocessing", 1000, "inference.ModelPreprocessing"},
    {"inference.ModelConfig", "precision", 1001, "string"},
    {"inference.ModelInput", "name", 1, "string"},
    {"inference.ModelInput", "data_type", 2, "inference.DataType"},
    {"inference.ModelInput", "format", 3, "inference.ModelInput.Format"},
    {"inference.ModelInput", "dims", 4, "repeated int64"},
    {"inference.ModelOutput", "name", 1, "string"},
    {"inference.ModelOutput", "data_type", 2, "inference.DataType"},
    {"inference.ModelOutput", "dims", 3, "repeated int64"},
    {"inference.ModelOutput", "label_filename", 4, "string"},
    {"inference.ModelInstanceGroup", "name", 1, "string"},
    {"inference.ModelInstanceGroup", "count", 2, "int32"},
    {"inference.ModelInstanceGroup", "kind", 4, "inference.ModelInstanceGroup.Kind"},
    {"inference.ModelDynamicBatching", "preferred_batch_size", 1, "repeated int32"},
    {"inference.ModelDynamicBatching", "max_queue_delay_microseconds", 2, "uint64"},
    {"inference.ModelDynamicBatching", "preserve_ordering", 3, "bool"},
    {"inference.ModelDynamicBatching", "default_queue_policy", 6, "inference.ModelQueuePolicy"},
    {"inference.ModelQueuePolicy", "timeout_action", 1, "inference.ModelQueuePolicy.TimeoutAction"},
    {"inference.ModelQueuePolicy", "default_timeout_microseconds", 2, "uint64"},
    {"inference.ModelQueuePolicy", "allow_timeout_override", 3, "bool"},
    {"inference.ModelQueuePolicy", "max_queue_size", 4, "uint32"},
    {"inference.ModelVersionPolicy", "latest", 1, "inference.ModelVersionPolicy.Latest"},
    {"inference.ModelVersionPolicy", "all", 2, "inference.ModelVersionPolicy.All"},
    {"inference.ModelVersionPolicy", "specific", 3, "inference.ModelVersionPolicy.Specific"},
    {"inference.ModelVersionPolicy.Latest", "num_versions", 1, "uint32"},
    {"inference.ModelVersionPolicy.Specific", "versions", 1, "repeated int64"},
    {"inference.ModelParameter", "string_value", 1, "string"},
};

TEST(ProtoWireTest, FieldNumbersAndTypesMatchTheProtocol) {
  const DescriptorPool* pool = DescriptorPool::generated_pool();
  // Make sure the files are linked in and registered.
  inference::ModelInferRequest::descriptor();
  inference::ModelConfig::descriptor();
  for (const WireField& expected : kInferenceFields) {
    SCOPED_TRACE(std::string(expected.message) + "." + std::string(expected.field));
    const Descriptor* message = pool->FindMessageTypeByName(std::string(expected.message));
    ASSERT_NE(message, nullptr);
    const FieldDescriptor* field = message->FindFieldByName(std::string(expected.field));
    ASSERT_NE(field, nullptr);
    EXPECT_EQ(field->number(), expected.number);
    EXPECT_EQ(TypeOf(*field), expected.type);
  }
}

TEST(ProtoWireTest, EnumValuesMatchTheProtocol) {
  EXPECT_EQ(inference::TYPE_INVALID, 0);
  EXPECT_EQ(inference::TYPE_BOOL, 1);
  EXPECT_EQ(inference::TYPE_UINT8, 2);
  EXPECT_EQ(inference::TYPE_UINT16, 3);
  EXPECT_EQ(inference::TYPE_UINT32, 4);
  EXPECT_EQ(inference::TYPE_UINT64, 5);
  EXPECT_EQ(inference::TYPE_INT8, 6);
  EXPECT_EQ(inference::TYPE_INT16, 7);
  EXPECT_EQ(inference::TYPE_INT32, 8);
  EXPECT_EQ(inference::TYPE_INT64, 9);
  EXPECT_EQ(inference::TYPE_FP16, 10);
  EXPECT_EQ(inference::TYPE_FP32, 11);
  EXPECT_EQ(inference::TYPE_FP64, 12);
  EXPECT_EQ(inference::TYPE_STRING, 13);
  EXPECT_EQ(inference::TYPE_BF16, 14);
  EXPECT_EQ(inference::ModelInput::FORMAT_NONE, 0);
  EXPECT_EQ(inference::ModelInput::FORMAT_NHWC, 1);
  EXPECT_EQ(inference::ModelInput::FORMAT_NCHW, 2);
  EXPECT_EQ(inference::ModelInstanceGroup::KIND_AUTO, 0);
  EXPECT_EQ(inference::ModelInstanceGroup::KIND_GPU, 1);
  EXPECT_EQ(inference::ModelInstanceGroup::KIND_CPU, 2);
}

TEST(ProtoWireTest, ServiceHasEveryRpc) {
  const google::protobuf::ServiceDescriptor* service =
      DescriptorPool::generated_pool()->FindServiceByName("inference.GRPCInferenceService");
  ASSERT_NE(service, nullptr);
  for (std::string_view rpc : {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                               "ModelMetadata", "ModelInfer", "ModelConfig", "ModelStatistics",
                               "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"}) {
    SCOPED_TRACE(std::string(rpc));
    const google::protobuf::MethodDescriptor* method = service->FindMethodByName(std::string(rpc));
    ASSERT_NE(method, nullptr);
    EXPECT_EQ(method->input_type()->full_name(), "inference." + std::string(rpc) + "Request");
    EXPECT_EQ(method->output_type()->full_name(), "inference." + std::string(rpc) + "Response");
    EXPECT_FALSE(method->client_streaming());
    EXPECT_FALSE(method->server_streaming());
  }
}

// Triton's grpc_service.proto: ModelStreamInfer(stream ModelInferRequest) returns (stream
// ModelStreamInferResponse), the answer holding error_message = 1, infer_response = 2.
TEST(ProtoWireTest, ModelStreamInferIsTritons) {
  const google::protobuf::ServiceDescriptor* service =
      DescriptorPool::generated_pool()->FindServiceByName("inference.GRPCInferenceService");
  ASSERT_NE(service, nullptr);
  const google::protobuf::MethodDescriptor* method = service->FindMethodByName("ModelStreamInfer");
  ASSERT_NE(method, nullptr);
  EXPECT_EQ(method->input_type()->full_name(), "inference.ModelInferRequest");
  EXPECT_EQ(method->output_type()->full_name(), "inference.ModelStreamInferResponse");
  EXPECT_TRUE(method->client_streaming());
  EXPECT_TRUE(method->server_streaming());
  const google::protobuf::Descriptor* answer = method->output_type();
  ASSERT_EQ(answer->field_count(), 2);
  const google::protobuf::FieldDescriptor* error = answer->FindFieldByName("error_message");
  ASSERT_NE(error, nullptr);
  EXPECT_EQ(error->number(), 1);
  EXPECT_EQ(error->type(), google::protobuf::FieldDescriptor::TYPE_STRING);
  const google::protobuf::FieldDescriptor* response = answer->FindFieldByName("infer_response");
  ASSERT_NE(response, nullptr);
  EXPECT_EQ(response->number(), 2);
  EXPECT_EQ(response->message_type()->full_name(), "inference.ModelInferResponse");
}

TEST(ProtoWireTest, ConvServeServiceExists) {
  const google::protobuf::ServiceDescriptor* service =
      convserve::v1::ModelStatisticsRequest::descriptor()->file()->FindServiceByName("ConvServe");
  ASSERT_NE(service, nullptr);
  EXPECT_EQ(service->full_name(), "convserve.v1.ConvServe");
  for (std::string_view rpc : {"GetModelStatistics", "GetLayerReport", "CompareKernels"}) {
    EXPECT_NE(service->FindMethodByName(std::string(rpc)), nullptr) << rpc;
  }
}

TEST(ProtoWireTest, FilesImportEachOtherByRepositoryPath) {
  // The descriptor names must match the import statements, or the pool rejects them at startup.
  EXPECT_EQ(inference::ModelConfig::descriptor()->file()->name(), "proto/model_config.proto");
  EXPECT_EQ(inference::ModelInferRequest::descriptor()->file()->name(), "proto/inference.proto");
  EXPECT_EQ(convserve::v1::LayerReport::descriptor()->file()->name(), "proto/convserve.proto");
}

}  // namespace
