#include "client/image.h"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include <jpeglib.h>
#include <png.h>

#include "absl/strings/str_cat.h"

namespace convserve::client {
namespace {

struct JpegError {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void JpegErrorExit(j_common_ptr cinfo) {
  auto* error = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, error->message);
  std::longjmp(error->jump, 1);
}

// A warning such as "premature end of data" would leave grey rows: treat it as an error.
void JpegEmitMessage(j_common_ptr cinfo, int level) {
  if (level < 0) JpegErrorExit(cinfo);
}

// Only trivially destructible locals live between setjmp and longjmp; the pixels go to a
// heap buffer owned by the caller.
bool DecodeJpegInto(const unsigned char* data, size_t size, int channels, Image* image,
                    char* message) {
  jpeg_decompress_struct cinfo;
  JpegError error;
  cinfo.err = jpeg_std_error(&error.base);
  error.base.error_exit = JpegErrorExit;
  error.base.emit_message = JpegEmitMessage;
  error.message[0] = '\0';
  if (setjmp(error.jump)) {
    jpeg_destroy_decompress(&cinfo);
    std::snprintf(message, JMSG_LENGTH_MAX, "%s", error.message);
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  cinfo.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&cinfo);
  image->width = static_cast<int>(cinfo.output_width);
  image->height = static_cast<int>(cinfo.output_height);
  image->channels = channels;
  image->pixels.resize(static_cast<size_t>(image->width) * image->height * channels);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row =
        image->pixels.data() + static_cast<size_t>(cinfo.output_scanline) * image->width * channels;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return true;
}

absl::StatusOr<Image> DecodePng(std::string_view bytes, int channels) {
  png_image png;
  std::memset(&png, 0, sizeof(png));
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&png, bytes.data(), bytes.size())) {
    std::string message = png.message;
    png_image_free(&png);
    return absl::InvalidArgumentError(absl::StrCat("corrupt PNG image: ", message));
  }
  png.format = channels == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  Image image;
  image.width = static_cast<int>(png.width);
  image.height = static_cast<int>(png.height);
  image.channels = channels;
  image.pixels.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, image.pixels.data(), 0, nullptr)) {
    std::string message = png.message;
    png_image_free(&png);
    return absl::InvalidArgumentError(absl::StrCat("corrupt or truncated PNG image: ", message));
  }
  return image;
}

}  // namespace

absl::StatusOr<Image> DecodeImage(std::string_view bytes, int channels) {
  static constexpr unsigned char kPng[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() >= 8 && std::memcmp(data, kPng, 8) == 0) return DecodePng(bytes, channels);
  if (bytes.size() >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    Image image;
    char message[JMSG_LENGTH_MAX] = {0};
    if (!DecodeJpegInto(data, bytes.size(), channels, &image, message)) {
      return absl::InvalidArgumentError(
          absl::StrCat("corrupt or truncated JPEG image: ", static_cast<const char*>(message)));
    }
    return image;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("not a JPEG or PNG image (", bytes.size(), " bytes)"));
}

void PreprocessImage(const Image& image, const PreprocessParams& params, float* out) {
  const int out_w = params.width, out_h = params.height, channels = image.channels;
  const float scale = params.scale == 0.0f ? 1.0f : params.scale;
  const float sx = static_cast<float>(image.width) / out_w;
  const float sy = static_cast<float>(image.height) / out_h;
  auto pixel = [&](int x, int y, int c) {
    return static_cast<float>(
        image.pixels[(static_cast<size_t>(y) * image.width + x) * channels + c]);
  };
  for (int y = 0; y < out_h; ++y) {
    for (int x = 0; x < out_w; ++x) {
      for (int c = 0; c < channels; ++c) {
        const int src_c = params.bgr ? channels - 1 - c : c;
        float value;
        if (params.nearest) {
          const int ix = std::min(static_cast<int>(x * sx), image.width - 1);
          const int iy = std::min(static_cast<int>(y * sy), image.height - 1);
          value = pixel(ix, iy, src_c);
        } else {
          // Half-pixel centres, clamped at the border.
          const float fx = std::max(0.0f, (x + 0.5f) * sx - 0.5f);
          const float fy = std::max(0.0f, (y + 0.5f) * sy - 0.5f);
          const int x0 = std::min(static_cast<int>(fx), image.width - 1);
          const int y0 = std::min(static_cast<int>(fy), image.height - 1);
          const int x1 = std::min(x0 + 1, image.width - 1);
          const int y1 = std::min(y0 + 1, image.height - 1);
          const float ax = fx - x0, ay = fy - y0;
          const float top = pixel(x0, y0, src_c) * (1 - ax) + pixel(x1, y0, src_c) * ax;
          const float bottom = pixel(x0, y1, src_c) * (1 - ax) + pixel(x1, y1, src_c) * ax;
          value = top * (1 - ay) + bottom * ay;
        }
        const float mean = c < static_cast<int>(params.mean.size()) ? params.mean[c] : 0.0f;
        const float std = c < static_cast<int>(params.std.size()) ? params.std[c] : 1.0f;
        const size_t index = params.hwc ? (static_cast<size_t>(y) * out_w + x) * channels + c
                                        : (static_cast<size_t>(c) * out_h + y) * out_w + x;
        out[index] = (value * scale - mean) / (std == 0.0f ? 1.0f : std);
      }
    }
  }
}

absl::StatusOr<std::string> ReadBinaryFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read '", path, "'"));
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

}  // namespace convserve::client
