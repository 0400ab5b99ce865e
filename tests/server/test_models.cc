#include "tests/server/test_models.h"

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <jpeglib.h>
#include <png.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <stdexcept>

#include "onnx/onnx_pb.h"

namespace convserve::testing {
namespace {

void WriteText(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

}  // namespace

void WriteLinearOnnx(const std::filesystem::path& path, float bias_offset) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.add_opset_import()->set_version(13);
  auto* graph = model.mutable_graph();
  graph->set_name("linear");
  auto add_value = [](onnx::ValueInfoProto* value, const char* name, std::vector<int64_t> dims) {
    value->set_name(name);
    auto* type = value->mutable_type()->mutable_tensor_type();
    type->set_elem_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) {
      auto* dim = type->mutable_shape()->add_dim();
      if (d < 0) {
        dim->set_dim_param("N");
      } else {
        dim->set_dim_value(d);
      }
    }
  };
  add_value(graph->add_input(), "input", {-1, 1, kImageSide, kImageSide});
  add_value(graph->add_output(), "logits", {-1, kClasses});

  auto* weights = graph->add_initializer();
  weights->set_name("fc_weight");
  weights->set_data_type(onnx::TensorProto::FLOAT);
  weights->add_dims(kClasses);
  weights->add_dims(kPixels);
  for (int k = 0; k < kClasses; ++k) {
    for (int p = 0; p < kPixels; ++p)
      weights->add_float_data(p % kClasses == k ? 1.0f / kPixels : 0);
  }
  auto* bias = graph->add_initializer();
  bias->set_name("fc_bias");
  bias->set_data_type(onnx::TensorProto::FLOAT);
  bias->add_dims(kClasses);
  for (int k = 0; k < kClasses; ++k) bias->add_float_data(bias_offset + k / 1000.0f);

  auto* flatten = graph->add_node();
  flatten->set_op_type("Flatten");
  flatten->set_name("flatten");
  flatten->add_input("input");
  flatten->add_output("flat");
  auto* axis = flatten->add_attribute();
  axis->set_name("axis");
  axis->set_type(onnx::AttributeProto::INT);
  axis->set_i(1);

  auto* gemm = graph->add_node();
  gemm->set_op_type("Gemm");
  gemm->set_name("fc");
  gemm->add_input("flat");
  gemm->add_input("fc_weight");
  gemm->add_input("fc_bias");
  gemm->add_output("logits");
  auto* trans_b = gemm->add_attribute();
  trans_b->set_name("transB");
  trans_b->set_type(onnx::AttributeProto::INT);
  trans_b->set_i(1);

  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  model.SerializeToOstream(&out);
}

std::array<float, kClasses> LinearLogits(const float* pixels, float bias_offset) {
  std::array<float, kClasses> logits{};
  for (int k = 0; k < kClasses; ++k) {
    double sum = 0;
    for (int p = k; p < kPixels; p += kClasses) sum += pixels[p] / kPixels;
    logits[k] = static_cast<float>(sum) + bias_offset + k / 1000.0f;
  }
  return logits;
}

std::vector<uint8_t> PatternImage(int label, int side) {
  std::vector<uint8_t> pixels(static_cast<size_t>(side) * side);
  for (int y = 0; y < side; ++y) {
    for (int x = 0; x < side; ++x) {
      // Sample the 28x28 pattern (for bigger sides, blocks of it).
      const int py = y * kImageSide / side, px = x * kImageSide / side;
      const int p = py * kImageSide + px;
      pixels[static_cast<size_t>(y) * side + x] = p % kClasses == label ? 250 : 10;
    }
  }
  return pixels;
}

std::vector<float> PatternFloats(int label) {
  std::vector<uint8_t> image = PatternImage(label);
  std::vector<float> out(image.begin(), image.end());
  for (float& v : out) v /= 255.0f;
  return out;
}

inference::ModelInferRequest Uint8Request(const std::string& model,
                                          const std::vector<uint8_t>& pixels) {
  inference::ModelInferRequest request;
  request.set_model_name(model);
  auto* input = request.add_inputs();
  input->set_name("input");
  input->set_datatype("UINT8");
  for (int64_t d : {int64_t{1}, int64_t{1}, int64_t{kImageSide}, int64_t{kImageSide}}) {
    input->add_shape(d);
  }
  request.add_raw_input_contents(std::string(pixels.begin(), pixels.end()));
  return request;
}

inference::ModelInferRequest PatternRequest(const std::string& model,
                                            const std::vector<int>& labels, bool raw) {
  inference::ModelInferRequest request;
  request.set_model_name(model);
  request.set_id("req");
  auto* input = request.add_inputs();
  input->set_name("input");
  input->set_datatype("FP32");
  for (int64_t d : {static_cast<int64_t>(labels.size()), int64_t{1}, int64_t{kImageSide},
                    int64_t{kImageSide}}) {
    input->add_shape(d);
  }
  std::string bytes;
  for (int label : labels) {
    const std::vector<float> pixels = PatternFloats(label);
    if (raw) {
      bytes.append(reinterpret_cast<const char*>(pixels.data()), pixels.size() * sizeof(float));
    } else {
      for (float v : pixels) input->mutable_contents()->add_fp32_contents(v);
    }
  }
  if (raw) request.add_raw_input_contents(bytes);
  return request;
}

std::string EncodePngFormat(uint32_t format, int width, int height, const void* samples) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = format;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&image, nullptr, &size, 0, samples, 0, nullptr)) {
    throw std::runtime_error(image.message);
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(&image, out.data(), &size, 0, samples, 0, nullptr)) {
    throw std::runtime_error(image.message);
  }
  out.resize(size);
  return out;
}

std::string EncodePng(const std::vector<uint8_t>& gray, int width, int height) {
  return EncodePngFormat(PNG_FORMAT_GRAY, width, height, gray.data());
}

namespace {

// `configure` runs after jpeg_set_defaults, before compression starts.
std::string WriteJpeg(const uint8_t* samples, int width, int height, int components,
                      J_COLOR_SPACE in_color_space,
                      const std::function<void(jpeg_compress_struct&)>& configure) {
  jpeg_compress_struct cinfo;
  jpeg_error_mgr error;
  cinfo.err = jpeg_std_error(&error);
  jpeg_create_compress(&cinfo);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&cinfo, &buffer, &size);
  cinfo.image_width = static_cast<JDIMENSION>(width);
  cinfo.image_height = static_cast<JDIMENSION>(height);
  cinfo.input_components = components;
  cinfo.in_color_space = in_color_space;
  jpeg_set_defaults(&cinfo);
  configure(cinfo);
  jpeg_start_compress(&cinfo, TRUE);
  const size_t stride = static_cast<size_t>(width) * components;
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(samples) + cinfo.next_scanline * stride;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::string out(reinterpret_cast<char*>(buffer), size);
  free(buffer);
  return out;
}

}  // namespace

std::string EncodeJpeg(const std::vector<uint8_t>& gray, int width, int height) {
  return WriteJpeg(gray.data(), width, height, 1, JCS_GRAYSCALE,
                   [](jpeg_compress_struct& cinfo) { jpeg_set_quality(&cinfo, 95, TRUE); });
}

std::string EncodeCmykJpeg(const std::vector<uint8_t>& cmyk, int width, int height, bool ycck,
                           bool adobe_marker) {
  return WriteJpeg(cmyk.data(), width, height, 4, JCS_CMYK, [&](jpeg_compress_struct& cinfo) {
    jpeg_set_colorspace(&cinfo, ycck ? JCS_YCCK : JCS_CMYK);
    cinfo.write_Adobe_marker = adobe_marker ? TRUE : FALSE;
    for (int c = 0; c < cinfo.num_components; ++c) {
      cinfo.comp_info[c].h_samp_factor = cinfo.comp_info[c].v_samp_factor = 1;
    }
    jpeg_set_quality(&cinfo, 100, TRUE);
  });
}

void BuildTestRepository(const std::filesystem::path& root) {
  const std::string config_body = R"(
max_batch_size: 8
input [ { name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 1, 28, 28 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" } ]
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
preprocessing { color_format: GRAY width: 28 height: 28 scale: 0.003921569 }
)";
  std::string tiny_config = "name: \"tiny\"";
  tiny_config.append(config_body);
  std::string labels;
  for (int k = 0; k < kClasses; ++k) labels += "class" + std::to_string(k) + "\n";
  WriteText(root / "tiny" / "config.pbtxt", tiny_config);
  WriteText(root / "tiny" / "labels.txt", labels);
  WriteLinearOnnx(root / "tiny" / "1" / "model.onnx", 0.0f);

  WriteLinearOnnx(root / "derived" / "1" / "model.onnx", 0.0f);

  WriteText(root / "broken" / "config.pbtxt", "name: \"broken\"\nmax_batch_size: [oops\n");
  WriteLinearOnnx(root / "broken" / "1" / "model.onnx", 0.0f);

  std::string badfile_config = "name: \"badfile\"";
  badfile_config.append(config_body);
  WriteText(root / "badfile" / "config.pbtxt", badfile_config);
  WriteText(root / "badfile" / "labels.txt", labels);
  WriteText(root / "badfile" / "1" / "model.onnx", "this is not an ONNX file");
}

std::filesystem::path MakeTempDir(const std::string& prefix) {
  std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  return pattern;
}

inference::ModelStatistics FetchModelStatistics(inference::GRPCInferenceService::Stub& stub,
                                                const std::string& model) {
  grpc::ClientContext context;
  inference::ModelStatisticsRequest request;
  request.set_name(model);
  inference::ModelStatisticsResponse response;
  EXPECT_TRUE(stub.ModelStatistics(&context, request, &response).ok());
  return response.model_stats_size() ? response.model_stats(0) : inference::ModelStatistics{};
}

}  // namespace convserve::testing
