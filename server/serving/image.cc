#include "server/serving/image.h"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <jpeglib.h>
#include <png.h>

#include "absl/strings/str_cat.h"

namespace convserve::serving {
namespace {

absl::Status TooManyPixels(int64_t width, int64_t height, int64_t max_pixels) {
  return absl::InvalidArgumentError(absl::StrCat("image of ", width, "x", height, " = ",
                                                 width * height, " pixels exceeds the limit of ",
                                                 max_pixels, " pixels"));
}

struct JpegErrorManager {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void JpegErrorExit(j_common_ptr cinfo) {
  auto* manager = reinterpret_cast<JpegErrorManager*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, manager->message);
  std::longjmp(manager->jump, 1);
}

// Warnings (level -1) include "premature end of data": libjpeg would pad a truncated file with
// grey; treat it as the error it is.
void JpegEmitMessage(j_common_ptr cinfo, int level) {
  if (level < 0) JpegErrorExit(cinfo);
}

// Colour (3 samples a pixel) to grey: Rec.601 weights in libjpeg's fixed point (identical to its
// JCS_GRAYSCALE and to PIL).
void RgbToGrey(const unsigned char* rgb, size_t pixels, unsigned char* grey) {
  for (size_t i = 0; i < pixels; ++i, rgb += 3) {
    grey[i] = static_cast<unsigned char>(
        (19595u * rgb[0] + 38470u * rgb[1] + 7471u * rgb[2] + 32768u) >> 16);
  }
}

// CMYK (4 samples a pixel) to RGB as Pillow reads it (JpegImagePlugin's "CMYK;I": Adobe's
// convention, samples stored inverted as Photoshop writes them, assumed for every CMYK JPEG,
// with or without the APP14 marker): R = C * K / 255 of the stored samples, rounded to nearest.
// In place: `pixels` CMYK samples become `pixels` RGB ones at the start of `samples` (each write
// at 3i + c comes after the reads at 4i..4i+3 it would overwrite).
void CmykToRgbInPlace(unsigned char* samples, size_t pixels) {
  for (size_t i = 0; i < pixels; ++i) {
    const unsigned char* cmyk = samples + 4 * i;
    const unsigned c = cmyk[0], m = cmyk[1], y = cmyk[2], k = cmyk[3];
    unsigned char* rgb = samples + 3 * i;
    rgb[0] = static_cast<unsigned char>((c * k + 127u) / 255u);
    rgb[1] = static_cast<unsigned char>((m * k + 127u) / 255u);
    rgb[2] = static_cast<unsigned char>((y * k + 127u) / 255u);
  }
}

// CMYK and YCCK files: libjpeg gives CMYK (it converts YCCK), CmykToRgb and RgbToGrey the rest.
// No C++ objects with destructors live between setjmp and longjmp in this function.
absl::StatusOr<Image> DecodeJpeg(std::string_view bytes, int channels, int64_t max_pixels) {
  jpeg_decompress_struct cinfo;
  JpegErrorManager error;
  cinfo.err = jpeg_std_error(&error.base);
  error.base.error_exit = JpegErrorExit;
  error.base.emit_message = JpegEmitMessage;
  error.message[0] = '\0';
  Image* image = new Image();
  int too_many = 0, cmyk = 0;
  if (setjmp(error.jump)) {
    jpeg_destroy_decompress(&cinfo);
    delete image;
    return absl::InvalidArgumentError(
        absl::StrCat("corrupt or truncated JPEG image: ", static_cast<const char*>(error.message)));
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, reinterpret_cast<const unsigned char*>(bytes.data()),
               static_cast<unsigned long>(bytes.size()));
  jpeg_read_header(&cinfo, TRUE);
  if (static_cast<int64_t>(cinfo.image_width) * cinfo.image_height > max_pixels) {
    too_many = 1;
    image->width = static_cast<int>(cinfo.image_width);
    image->height = static_cast<int>(cinfo.image_height);
    jpeg_destroy_decompress(&cinfo);
  } else {
    cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
    cinfo.out_color_space = cmyk ? JCS_CMYK : channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    const int decoded = cinfo.output_components;
    image->width = static_cast<int>(cinfo.output_width);
    image->height = static_cast<int>(cinfo.output_height);
    image->channels = channels;
    image->pixels.resize(static_cast<size_t>(image->width) * image->height * decoded);
    while (cinfo.output_scanline < cinfo.output_height) {
      JSAMPROW row = image->pixels.data() +
                     static_cast<size_t>(cinfo.output_scanline) * image->width * decoded;
      jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
  }
  Image result = std::move(*image);
  delete image;
  if (too_many) return TooManyPixels(result.width, result.height, max_pixels);
  if (cmyk) {
    const size_t pixels = static_cast<size_t>(result.width) * result.height;
    CmykToRgbInPlace(result.pixels.data(), pixels);
    // Grey in place too: each write at i comes after the reads at 3i..3i+2.
    if (channels == 1) RgbToGrey(result.pixels.data(), pixels, result.pixels.data());
    result.pixels.resize(pixels * static_cast<size_t>(channels));
  }
  return result;
}

struct PngReader {
  std::jmp_buf jump;
  char message[256];
  const unsigned char* data;
  size_t size;
  size_t offset;
};

void PngError(png_structp png, png_const_charp message) {
  auto* reader = static_cast<PngReader*>(png_get_error_ptr(png));
  std::snprintf(reader->message, sizeof(reader->message), "%s", message);
  std::longjmp(reader->jump, 1);
}

void PngWarning(png_structp, png_const_charp) {}

void PngRead(png_structp png, png_bytep out, size_t n) {
  auto* reader = static_cast<PngReader*>(png_get_io_ptr(png));
  if (reader->size - reader->offset < n) png_error(png, "the data ends inside the image");
  std::memcpy(out, reader->data + reader->offset, n);
  reader->offset += n;
}

// The stored samples as they are, as JPEG's decoder and PIL give them: no colour management
// (libpng's simplified API treats 16-bit samples as linear light and gamma-encodes them, and
// turns colour into grey with linear-light weights); 16-bit scaled to 8 (v / 257, rounded);
// alpha and palette transparency ignored, as PIL's convert("L"/"RGB") does; grey from colour
// with RgbToGrey.
// No C++ objects with destructors live between setjmp and longjmp in this function.
absl::StatusOr<Image> DecodePng(std::string_view bytes, int channels, int64_t max_pixels) {
  PngReader reader;
  reader.message[0] = '\0';
  reader.data = reinterpret_cast<const unsigned char*>(bytes.data());
  reader.size = bytes.size();
  reader.offset = 0;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &reader, PngError, PngWarning);
  png_infop info = png != nullptr ? png_create_info_struct(png) : nullptr;
  if (info == nullptr) {
    png_destroy_read_struct(&png, nullptr, nullptr);
    return absl::ResourceExhaustedError("cannot allocate a PNG decoder");
  }
  Image* image = new Image();
  std::vector<unsigned char>* decoded = new std::vector<unsigned char>();
  std::vector<png_bytep>* rows = new std::vector<png_bytep>();
  int too_many = 0, decoded_channels = 0;
  if (setjmp(reader.jump)) {
    png_destroy_read_struct(&png, &info, nullptr);
    delete image;
    delete decoded;
    delete rows;
    return absl::InvalidArgumentError(
        absl::StrCat("corrupt or truncated PNG image: ", static_cast<const char*>(reader.message)));
  }
  png_set_read_fn(png, &reader, PngRead);
  png_read_info(png, info);
  image->width = static_cast<int>(png_get_image_width(png, info));
  image->height = static_cast<int>(png_get_image_height(png, info));
  if (static_cast<int64_t>(image->width) * image->height > max_pixels) {
    too_many = 1;
  } else {
    const int color = png_get_color_type(png, info);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8) {
      png_set_expand_gray_1_2_4_to_8(png);
    }
    if (png_get_bit_depth(png, info) == 16) png_set_scale_16(png);
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    decoded_channels = png_get_channels(png, info);
    const size_t row_bytes = png_get_rowbytes(png, info);
    decoded->resize(row_bytes * static_cast<size_t>(image->height));
    rows->resize(static_cast<size_t>(image->height));
    for (size_t y = 0; y < rows->size(); ++y) (*rows)[y] = decoded->data() + y * row_bytes;
    png_read_image(png, rows->data());
    png_read_end(png, nullptr);
  }
  png_destroy_read_struct(&png, &info, nullptr);
  Image result = std::move(*image);
  std::vector<unsigned char> samples = std::move(*decoded);
  delete image;
  delete decoded;
  delete rows;
  if (too_many) return TooManyPixels(result.width, result.height, max_pixels);
  if (decoded_channels != 1 && decoded_channels != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("PNG image decodes to ", decoded_channels, " channels, expected 1 or 3"));
  }
  const size_t pixels = static_cast<size_t>(result.width) * result.height;
  result.channels = channels;
  result.pixels.resize(pixels * static_cast<size_t>(channels));
  unsigned char* out = result.pixels.data();
  const unsigned char* in = samples.data();
  if (decoded_channels == channels) {
    std::memcpy(out, in, result.pixels.size());
  } else if (channels == 1) {
    RgbToGrey(in, pixels, out);
  } else {
    for (size_t i = 0; i < pixels; ++i) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = in[i];
  }
  return result;
}

}  // namespace

absl::StatusOr<Image> DecodeImage(std::string_view bytes, int channels, int64_t max_pixels) {
  static constexpr unsigned char kPng[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  if (bytes.size() >= 8 && std::memcmp(data, kPng, 8) == 0) {
    return DecodePng(bytes, channels, max_pixels);
  }
  if (bytes.size() >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) {
    return DecodeJpeg(bytes, channels, max_pixels);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("not a JPEG or PNG image (", bytes.size(), " bytes)"));
}

int64_t EncodedImagePixels(std::string_view bytes) {
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t size = bytes.size();
  auto be16 = [&](size_t at) { return static_cast<int64_t>(data[at]) << 8 | data[at + 1]; };
  auto be32 = [&](size_t at) { return be16(at) << 16 | be16(at + 2); };
  // PNG: the signature (8 bytes), then the IHDR chunk: length (4), "IHDR", width (4), height (4).
  if (size >= 24 && data[0] == 0x89 && std::memcmp(data + 12, "IHDR", 4) == 0) {
    // PNG allows at most 2^31 - 1 per side; beyond that the product could overflow.
    constexpr int64_t kMaxSide = 0x7fffffff;
    if (be32(16) > kMaxSide || be32(20) > kMaxSide) return std::numeric_limits<int64_t>::max();
    return be32(16) * be32(20);
  }
  // JPEG: segments after SOI; a start-of-frame marker (C0-CF except C4 DHT, C8 JPG, CC DAC)
  // holds length (2), precision (1), height (2), width (2).
  if (size < 4 || data[0] != 0xFF || data[1] != 0xD8) return -1;
  size_t at = 2;
  while (at + 4 <= size) {
    if (data[at] != 0xFF) return -1;
    const unsigned char marker = data[at + 1];
    if (marker == 0xFF) {  // fill byte
      ++at;
      continue;
    }
    if (marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC) {
      if (at + 9 > size) return -1;
      return be16(at + 5) * be16(at + 7);
    }
    if (marker == 0xD9 || marker == 0xDA) return -1;  // end of image, or scan data before a frame
    at += 2 + static_cast<size_t>(be16(at + 2));
  }
  return -1;
}

namespace {

// Where output coordinate i of `out` reads the source of size `in`: two neighbours and the
// weight of the second (bilinear, half-pixel centres), or one (nearest).
struct Tap {
  int i0 = 0, i1 = 0;
  float a = 0.0f;
};

std::vector<Tap> Taps(int in, int out, bool nearest) {
  std::vector<Tap> taps(static_cast<size_t>(out));
  const float s = static_cast<float>(in) / out;
  for (int i = 0; i < out; ++i) {
    Tap& t = taps[static_cast<size_t>(i)];
    if (nearest) {
      t.i0 = t.i1 = std::min(static_cast<int>(i * s), in - 1);
    } else {
      const float f = std::max(0.0f, (i + 0.5f) * s - 0.5f);
      t.i0 = std::min(static_cast<int>(f), in - 1);
      t.i1 = std::min(t.i0 + 1, in - 1);
      t.a = f - t.i0;
    }
  }
  return taps;
}

}  // namespace

void PreprocessImage(const Image& image, const inference::ModelPreprocessing& pre, bool hwc,
                     float* out) {
  const int out_w = pre.width(), out_h = pre.height(), channels = image.channels;
  const bool bgr = pre.color_format() == inference::ModelPreprocessing::BGR;
  const bool nearest = pre.resize() == inference::ModelPreprocessing::NEAREST;
  const float scale = pre.scale() == 0.0f ? 1.0f : pre.scale();
  // Everything the loops read is local: `out` could alias the config's floats for all the
  // compiler knows, which made it reload them for every pixel (6 us for a 28x28 image).
  const std::vector<Tap> xs = Taps(image.width, out_w, nearest);
  const std::vector<Tap> ys = Taps(image.height, out_h, nearest);
  const size_t row_stride = static_cast<size_t>(image.width) * channels;
  const uint8_t* pixels = image.pixels.data();
  for (int c = 0; c < channels; ++c) {
    const int src_c = bgr ? channels - 1 - c : c;
    const float mean = c < pre.mean_size() ? pre.mean(c) : 0.0f;
    const float stdev = c < pre.std_size() ? pre.std(c) : 1.0f;
    for (int y = 0; y < out_h; ++y) {
      const Tap ty = ys[static_cast<size_t>(y)];
      const uint8_t* row0 = pixels + static_cast<size_t>(ty.i0) * row_stride + src_c;
      const uint8_t* row1 = pixels + static_cast<size_t>(ty.i1) * row_stride + src_c;
      float* dst = hwc ? out + static_cast<size_t>(y) * out_w * channels + c
                       : out + (static_cast<size_t>(c) * out_h + y) * out_w;
      const size_t dst_step = hwc ? static_cast<size_t>(channels) : 1;
      if (image.width == out_w && image.height == out_h) {
        // No resize (both modes then read each pixel as it is): a loop the compiler vectorizes.
        for (int x = 0; x < out_w; ++x) {
          dst[static_cast<size_t>(x) * dst_step] =
              (static_cast<float>(row0[static_cast<size_t>(x) * channels]) * scale - mean) / stdev;
        }
        continue;
      }
      for (int x = 0; x < out_w; ++x) {
        const Tap tx = xs[static_cast<size_t>(x)];
        const size_t at0 = static_cast<size_t>(tx.i0) * channels;
        float value;
        if (nearest) {
          value = row0[at0];
        } else {
          const size_t at1 = static_cast<size_t>(tx.i1) * channels;
          const float top = row0[at0] * (1 - tx.a) + row0[at1] * tx.a;
          const float bottom = row1[at0] * (1 - tx.a) + row1[at1] * tx.a;
          value = top * (1 - ty.a) + bottom * ty.a;
        }
        dst[static_cast<size_t>(x) * dst_step] = (value * scale - mean) / stdev;
      }
    }
  }
}

void Uint8ToFloat(const uint8_t* in, size_t count, int64_t sample, int64_t plane, int64_t channels,
                  bool nhwc, const inference::ModelPreprocessing* pre, float* out) {
  if (pre == nullptr) {
    for (size_t e = 0; e < count; ++e) out[e] = in[e];
    return;
  }
  // Locals, as in PreprocessImage: `out` could alias the config's floats. Mean 0 and std 1 where
  // not given leave the value exactly as it is.
  const float scale = pre->scale();
  channels = std::max<int64_t>(channels, 1);
  std::vector<float> mean(static_cast<size_t>(channels), 0.0f);
  std::vector<float> stdev(static_cast<size_t>(channels), 1.0f);
  for (int64_t c = 0; c < channels; ++c) {
    if (c < pre->mean_size()) mean[static_cast<size_t>(c)] = pre->mean(static_cast<int>(c));
    if (c < pre->std_size()) stdev[static_cast<size_t>(c)] = pre->std(static_cast<int>(c));
  }
  const auto convert = [&](size_t e, size_t c) { out[e] = (in[e] * scale - mean[c]) / stdev[c]; };
  if (nhwc) {
    const size_t n = static_cast<size_t>(channels);
    size_t e = 0;
    for (; e + n <= count; e += n) {
      for (size_t c = 0; c < n; ++c) convert(e + c, c);
    }
    for (size_t c = 0; e < count; ++e, ++c) convert(e, c);
    return;
  }
  if (sample <= 0 || plane <= 0 || count % static_cast<size_t>(sample) != 0 ||
      sample % plane != 0) {
    for (size_t e = 0; e < count; ++e) {
      convert(e, static_cast<size_t>((static_cast<int64_t>(e) % std::max<int64_t>(sample, 1)) /
                                     std::max<int64_t>(plane, 1) % channels));
    }
    return;
  }
  // Runs of `plane` elements share a channel.
  size_t e = 0;
  for (size_t s = 0; s < count / static_cast<size_t>(sample); ++s) {
    for (int64_t k = 0; k < sample / plane; ++k) {
      const size_t c = static_cast<size_t>(k % channels);
      const float m = mean[c], d = stdev[c];
      for (int64_t p = 0; p < plane; ++p, ++e) out[e] = (in[e] * scale - m) / d;
    }
  }
}

}  // namespace convserve::serving
