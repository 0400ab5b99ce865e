// EncodedImagePixels (the header peek that keeps large images off the receiving thread) against
// the decoder itself, on the bundled test images (PNG and JPEG, gray and RGB, 28x28 and 112x112);
// DecodeImage on CMYK and YCCK JPEGs (with and without Adobe's marker) against RGB and grey
// computed by hand;
// PreprocessImage and Uint8ToFloat against hand-computed values and naive per-element references.
#include <gtest/gtest.h>
#include <png.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "server/serving/image.h"
#include "tests/server/test_models.h"

namespace convserve::testing {
namespace {

std::string ReadBytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

TEST(EncodedImagePixels, MatchesTheDecodedSizeOfEveryTestImage) {
  int checked = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(CONVSERVE_SOURCE_DIR "/tests/data/images")) {
    const std::string ext = entry.path().extension().string();
    if (ext != ".png" && ext != ".jpg") continue;
    const std::string bytes = ReadBytes(entry.path());
    auto image = serving::DecodeImage(bytes, 3, serving::kDefaultMaxImagePixels);
    ASSERT_TRUE(image.ok()) << entry.path() << ": " << image.status();
    EXPECT_EQ(serving::EncodedImagePixels(bytes), int64_t{image->width} * image->height)
        << entry.path();
    ++checked;
  }
  EXPECT_GE(checked, 10);
}

// The stored samples, as JPEG's decoder and PIL read them: no colour management.
TEST(DecodeImage, PngSamplesAreReadWithoutColourManagement) {
  // Colour to grey: Rec.601 in libjpeg's fixed point, (19595 R + 38470 G + 7471 B + 32768) >> 16:
  // (200, 40, 40) -> 88 (libpng's linear-light conversion gave 103).
  const std::vector<uint8_t> red(2 * 2 * 3, 0);
  std::vector<uint8_t> rgb = red;
  for (size_t i = 0; i < rgb.size(); i += 3) rgb[i] = 200, rgb[i + 1] = 40, rgb[i + 2] = 40;
  auto gray = serving::DecodeImage(EncodePngFormat(PNG_FORMAT_RGB, 2, 2, rgb.data()), 1, 1 << 20);
  ASSERT_TRUE(gray.ok()) << gray.status();
  EXPECT_EQ(gray->channels, 1);
  EXPECT_EQ(gray->pixels, std::vector<uint8_t>(4, 88));
  auto color = serving::DecodeImage(EncodePngFormat(PNG_FORMAT_RGB, 2, 2, rgb.data()), 3, 1 << 20);
  ASSERT_TRUE(color.ok()) << color.status();
  EXPECT_EQ(color->pixels, rgb);

  // 16-bit samples scaled to 8 bits (v / 257): 32896 -> 128 (it was gamma-encoded to 186).
  const std::vector<uint16_t> wide(3 * 2, 32896);
  auto scaled =
      serving::DecodeImage(EncodePngFormat(PNG_FORMAT_LINEAR_Y, 3, 2, wide.data()), 1, 1 << 20);
  ASSERT_TRUE(scaled.ok()) << scaled.status();
  EXPECT_EQ(scaled->pixels, std::vector<uint8_t>(6, 128));

  // Alpha is ignored (as PIL's convert does), not composited: a transparent pixel keeps its colour.
  const std::vector<uint8_t> rgba = {10, 20, 30, 0, 200, 40, 40, 255};
  auto opaque =
      serving::DecodeImage(EncodePngFormat(PNG_FORMAT_RGBA, 2, 1, rgba.data()), 3, 1 << 20);
  ASSERT_TRUE(opaque.ok()) << opaque.status();
  EXPECT_EQ(opaque->pixels, (std::vector<uint8_t>{10, 20, 30, 200, 40, 40}));

  // Grey to colour: the grey value in every channel.
  const std::vector<uint8_t> grey = {0, 77, 255};
  auto widened =
      serving::DecodeImage(EncodePngFormat(PNG_FORMAT_GRAY, 3, 1, grey.data()), 3, 1 << 20);
  ASSERT_TRUE(widened.ok()) << widened.status();
  EXPECT_EQ(widened->pixels, (std::vector<uint8_t>{0, 0, 0, 77, 77, 77, 255, 255, 255}));

  // A truncated file is an error, not a padded image.
  const std::string png = EncodePngFormat(PNG_FORMAT_RGB, 2, 2, rgb.data());
  auto cut = serving::DecodeImage(png.substr(0, png.size() - 20), 1, 1 << 20);
  EXPECT_EQ(cut.status().code(), absl::StatusCode::kInvalidArgument) << cut.status();
}

// CMYK JPEGs: 8x8 blocks of flat inks (C, M, Y, K), 3 across and 2 down, each aligned with a
// JPEG block, and the RGB and grey each should decode to, by hand: R = (255 - C) * (255 - K) / 255
// (likewise G from M, B from Y) rounded, grey (19595 R + 38470 G + 7471 B + 32768) >> 16.
struct InkBlock {
  uint8_t c, m, y, k;
  uint8_t r, g, b, grey;
};
constexpr InkBlock kInkBlocks[] = {
    {0, 0, 0, 0, 255, 255, 255, 255},    // white
    {0, 0, 0, 255, 0, 0, 0, 0},          // black
    {255, 0, 0, 0, 0, 255, 255, 179},    // cyan: (38470 + 7471) * 255 / 65536 = 178.8
    {0, 255, 0, 0, 255, 0, 255, 105},    // magenta: (19595 + 7471) * 255 / 65536 = 105.3
    {0, 0, 0, 128, 127, 127, 127, 127},  // 50% grey: 255 * 127 / 255
    // 191 * 185 / 255 = 138.6, 223 * 185 / 255 = 161.8: rounded, and products, not 255 - C - K.
    {64, 32, 0, 70, 139, 162, 185, 158},
};
constexpr int kInkBlocksAcross = 3, kInkWidth = 24, kInkHeight = 16;

// The blocks' samples as the file stores them: inverted (Adobe's convention, as Photoshop writes
// them).
std::vector<uint8_t> InkSamples() {
  std::vector<uint8_t> samples(static_cast<size_t>(kInkWidth) * kInkHeight * 4);
  for (int y = 0; y < kInkHeight; ++y) {
    for (int x = 0; x < kInkWidth; ++x) {
      const InkBlock& block = kInkBlocks[y / 8 * kInkBlocksAcross + x / 8];
      uint8_t* at = &samples[(static_cast<size_t>(y) * kInkWidth + x) * 4];
      for (uint8_t ink : {block.c, block.m, block.y, block.k}) *at++ = 255 - ink;
    }
  }
  return samples;
}

// `tolerance`: quality 100 without subsampling keeps flat 8x8 blocks as they are (measured: CMYK
// decodes exactly), but YCCK's colour transform rounds (measured: some samples 1 off).
void ExpectInkBlocks(const std::string& jpeg, int tolerance) {
  for (int channels : {3, 1}) {
    auto image = serving::DecodeImage(jpeg, channels, 1 << 20);
    ASSERT_TRUE(image.ok()) << image.status();
    ASSERT_EQ(image->width, kInkWidth);
    ASSERT_EQ(image->height, kInkHeight);
    ASSERT_EQ(image->channels, channels);
    ASSERT_EQ(image->pixels.size(), static_cast<size_t>(kInkWidth) * kInkHeight * channels);
    for (int y = 0; y < kInkHeight; ++y) {
      for (int x = 0; x < kInkWidth; ++x) {
        const InkBlock& block = kInkBlocks[y / 8 * kInkBlocksAcross + x / 8];
        const std::vector<int> want = channels == 3 ? std::vector<int>{block.r, block.g, block.b}
                                                    : std::vector<int>{block.grey};
        for (int c = 0; c < channels; ++c) {
          EXPECT_NEAR(image->pixels[(static_cast<size_t>(y) * kInkWidth + x) * channels + c],
                      want[static_cast<size_t>(c)], tolerance)
              << "channels " << channels << " at (" << x << ", " << y << ") sample " << c;
        }
      }
    }
  }
}

TEST(DecodeImage, AdobeCmykJpegIsReadInverted) {
  const std::string jpeg = EncodeCmykJpeg(InkSamples(), kInkWidth, kInkHeight, false, true);
  ExpectInkBlocks(jpeg, 0);
  // The pixel limit holds as for any JPEG.
  EXPECT_EQ(serving::EncodedImagePixels(jpeg), kInkWidth * kInkHeight);
  auto big = serving::DecodeImage(jpeg, 3, kInkWidth * kInkHeight - 1);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument) << big.status();
  EXPECT_NE(big.status().message().find("exceeds the limit"), std::string::npos) << big.status();
}

TEST(DecodeImage, AdobeYcckJpegIsReadAsCmyk) {
  ExpectInkBlocks(EncodeCmykJpeg(InkSamples(), kInkWidth, kInkHeight, true, true), 1);
}

// Pillow assumes Adobe's inverted samples for every CMYK JPEG (JpegImagePlugin: "CMYK;I"), so
// a file without the marker reads the same as one with it.
TEST(DecodeImage, CmykJpegWithoutAdobeMarkerIsReadInvertedAsPillowDoes) {
  ExpectInkBlocks(EncodeCmykJpeg(InkSamples(), kInkWidth, kInkHeight, false, false), 0);
}

TEST(EncodedImagePixels, UnknownWhenTheHeaderDoesNotSay) {
  const std::string png =
      ReadBytes(CONVSERVE_SOURCE_DIR "/tests/data/images/t10k-00000_label-9_ankle-boot.png");
  const std::string jpeg =
      ReadBytes(CONVSERVE_SOURCE_DIR "/tests/data/images/t10k-00000_label-9_ankle-boot.jpg");
  ASSERT_EQ(serving::EncodedImagePixels(png), 28 * 28);
  ASSERT_EQ(serving::EncodedImagePixels(jpeg), 28 * 28);
  EXPECT_EQ(serving::EncodedImagePixels(png.substr(0, 20)), -1);   // cut inside IHDR
  EXPECT_EQ(serving::EncodedImagePixels(jpeg.substr(0, 20)), -1);  // cut before the frame
  EXPECT_EQ(serving::EncodedImagePixels("GIF89a and more bytes than a header"), -1);
  EXPECT_EQ(serving::EncodedImagePixels(""), -1);
  // A PNG header claiming 70000 x 70000 is read as such (the decoder then refuses it).
  std::string bomb = png;
  for (int at : {16, 20}) {
    bomb[at] = 0;
    bomb[at + 1] = 1;
    bomb[at + 2] = static_cast<char>(0x11);
    bomb[at + 3] = static_cast<char>(0x70);
  }
  EXPECT_EQ(serving::EncodedImagePixels(bomb), int64_t{70000} * 70000);
  // Sides past PNG's 2^31 - 1 would overflow the product: the largest count instead.
  for (int at = 16; at < 24; ++at) bomb[at] = static_cast<char>(0xFF);
  EXPECT_EQ(serving::EncodedImagePixels(bomb), std::numeric_limits<int64_t>::max());
}

inference::ModelPreprocessing Pre(
    inference::ModelPreprocessing::ColorFormat format, int width, int height, float scale,
    std::vector<float> mean, std::vector<float> std,
    inference::ModelPreprocessing::ResizeMode resize = inference::ModelPreprocessing::BILINEAR) {
  inference::ModelPreprocessing pre;
  pre.set_color_format(format);
  pre.set_width(width);
  pre.set_height(height);
  pre.set_scale(scale);
  for (float m : mean) pre.add_mean(m);
  for (float s : std) pre.add_std(s);
  pre.set_resize(resize);
  return pre;
}

serving::Image MakeImage(int width, int height, int channels, std::vector<uint8_t> pixels) {
  serving::Image image;
  image.width = width;
  image.height = height;
  image.channels = channels;
  image.pixels = std::move(pixels);
  return image;
}

TEST(PreprocessImage, MatchesHandComputedValues) {
  // 2x2 gray [0 100; 200 50] to 1x1, bilinear with half-pixel centres: the source point is
  // (0.5, 0.5), the mean of the four, 87.5; then (87.5 * 0.01 - 0.5) / 2.
  float out = 0;
  serving::PreprocessImage(MakeImage(2, 2, 1, {0, 100, 200, 50}),
                           Pre(inference::ModelPreprocessing::GRAY, 1, 1, 0.01f, {0.5f}, {2.0f}),
                           false, &out);
  EXPECT_FLOAT_EQ(out, 0.1875f);
  // Nearest: output pixel 0 of 1 reads source pixel 0.
  serving::PreprocessImage(MakeImage(2, 2, 1, {0, 100, 200, 50}),
                           Pre(inference::ModelPreprocessing::GRAY, 1, 1, 1.0f, {}, {},
                               inference::ModelPreprocessing::NEAREST),
                           false, &out);
  EXPECT_EQ(out, 0.0f);
  // BGR swaps the channels; CHW and HWC lay two pixels out differently.
  const serving::Image rgb = MakeImage(2, 1, 3, {10, 20, 30, 40, 50, 60});
  const auto bgr = Pre(inference::ModelPreprocessing::BGR, 2, 1, 1.0f, {1, 2, 3}, {1, 1, 1});
  std::vector<float> chw(6), hwc(6);
  serving::PreprocessImage(rgb, bgr, false, chw.data());
  serving::PreprocessImage(rgb, bgr, true, hwc.data());
  EXPECT_EQ(chw, (std::vector<float>{29, 59, 18, 48, 7, 37}));
  EXPECT_EQ(hwc, (std::vector<float>{29, 18, 7, 59, 48, 37}));
}

// The per-pixel formula, written as plainly as possible.
std::vector<float> NaivePreprocess(const serving::Image& image,
                                   const inference::ModelPreprocessing& pre, bool hwc) {
  const int ow = pre.width(), oh = pre.height(), ch = image.channels;
  std::vector<float> out(static_cast<size_t>(ow) * oh * ch);
  const float sx = static_cast<float>(image.width) / ow, sy = static_cast<float>(image.height) / oh;
  auto px = [&](int x, int y, int c) {
    return static_cast<float>(image.pixels[(static_cast<size_t>(y) * image.width + x) * ch + c]);
  };
  for (int y = 0; y < oh; ++y) {
    for (int x = 0; x < ow; ++x) {
      for (int c = 0; c < ch; ++c) {
        const int sc = pre.color_format() == inference::ModelPreprocessing::BGR ? ch - 1 - c : c;
        float v;
        if (pre.resize() == inference::ModelPreprocessing::NEAREST) {
          v = px(std::min(static_cast<int>(x * sx), image.width - 1),
                 std::min(static_cast<int>(y * sy), image.height - 1), sc);
        } else {
          const float fx = std::max(0.0f, (x + 0.5f) * sx - 0.5f);
          const float fy = std::max(0.0f, (y + 0.5f) * sy - 0.5f);
          const int x0 = std::min(static_cast<int>(fx), image.width - 1);
          const int y0 = std::min(static_cast<int>(fy), image.height - 1);
          const int x1 = std::min(x0 + 1, image.width - 1), y1 = std::min(y0 + 1, image.height - 1);
          const float ax = fx - x0, ay = fy - y0;
          v = (px(x0, y0, sc) * (1 - ax) + px(x1, y0, sc) * ax) * (1 - ay) +
              (px(x0, y1, sc) * (1 - ax) + px(x1, y1, sc) * ax) * ay;
        }
        const float mean = c < pre.mean_size() ? pre.mean(c) : 0.0f;
        const float sd = c < pre.std_size() ? pre.std(c) : 1.0f;
        const float scale = pre.scale() == 0.0f ? 1.0f : pre.scale();
        out[hwc ? (static_cast<size_t>(y) * ow + x) * ch + c
                : (static_cast<size_t>(c) * oh + y) * ow + x] = (v * scale - mean) / sd;
      }
    }
  }
  return out;
}

TEST(PreprocessImage, MatchesTheNaiveFormulaForEveryLayoutAndResize) {
  std::mt19937 random(7);
  std::uniform_int_distribution<int> byte(0, 255);
  struct Size {
    int w, h;
  };
  int checked = 0;
  for (auto [in, out] : std::vector<std::pair<Size, Size>>{{{28, 28}, {28, 28}},
                                                           {{112, 112}, {28, 28}},
                                                           {{20, 30}, {28, 28}},
                                                           {{1, 1}, {5, 3}},
                                                           {{57, 13}, {7, 2}}}) {
    for (auto format : {inference::ModelPreprocessing::GRAY, inference::ModelPreprocessing::RGB,
                        inference::ModelPreprocessing::BGR}) {
      const int ch = format == inference::ModelPreprocessing::GRAY ? 1 : 3;
      std::vector<uint8_t> pixels(static_cast<size_t>(in.w) * in.h * ch);
      for (auto& p : pixels) p = static_cast<uint8_t>(byte(random));
      const serving::Image image = MakeImage(in.w, in.h, ch, pixels);
      for (auto resize :
           {inference::ModelPreprocessing::BILINEAR, inference::ModelPreprocessing::NEAREST}) {
        for (bool hwc : {false, true}) {
          const std::vector<float> mean =
              ch == 3 ? std::vector<float>{0.2f, 0.4f, 0.6f} : std::vector<float>{0.3f};
          const std::vector<float> std =
              ch == 3 ? std::vector<float>{0.5f, 0.25f, 2.0f} : std::vector<float>{0.35f};
          const auto pre = Pre(format, out.w, out.h, 1.0f / 255, mean, std, resize);
          std::vector<float> got(static_cast<size_t>(out.w) * out.h * ch, -99.0f);
          serving::PreprocessImage(image, pre, hwc, got.data());
          const std::vector<float> want = NaivePreprocess(image, pre, hwc);
          ASSERT_EQ(got.size(), want.size());
          for (size_t i = 0; i < want.size(); ++i) {
            ASSERT_NEAR(got[i], want[i], 1e-5f * std::max(1.0f, std::abs(want[i])))
                << in.w << "x" << in.h << " to " << out.w << "x" << out.h << " channels " << ch
                << " format " << format << " resize " << resize << " hwc " << hwc << " at " << i;
          }
          ++checked;
        }
      }
    }
  }
  EXPECT_EQ(checked, 5 * 3 * 2 * 2);
}

TEST(Uint8ToFloat, MatchesTheNaiveFormulaForEveryLayout) {
  std::mt19937 random(11);
  std::uniform_int_distribution<int> byte(0, 255);
  struct Case {
    std::vector<int64_t> dims;  // per sample, as the model input's dims
    bool nhwc;
    int given;  // how many channels the config gives mean/std for
  };
  int checked = 0;
  for (const Case& c :
       std::vector<Case>{{{3, 5, 4}, false, 3},
                         {{5, 4, 3}, true, 3},
                         {{1, 28, 28}, false, 1},
                         {{2, 3, 2, 2}, false, 2},  // a leading dim, mean for 2 of 3
                         {{10}, false, 1}}) {
    const int n = static_cast<int>(c.dims.size());
    int64_t sample = 1;
    for (int64_t d : c.dims) sample *= d;
    const int64_t channels =
        n >= 3 ? (c.nhwc ? c.dims[static_cast<size_t>(n - 1)] : c.dims[static_cast<size_t>(n - 3)])
               : 1;
    const int64_t plane =
        n >= 3 ? c.dims[static_cast<size_t>(n - 2)] * c.dims[static_cast<size_t>(n - 1)] : sample;
    inference::ModelPreprocessing pre;
    pre.set_scale(1.0f / 255);
    for (int i = 0; i < c.given; ++i) {
      pre.add_mean(0.1f * (i + 1));
      pre.add_std(0.3f + 0.2f * i);
    }
    const size_t count = static_cast<size_t>(2 * sample);  // a batch of 2
    std::vector<uint8_t> in(count);
    for (auto& b : in) b = static_cast<uint8_t>(byte(random));
    for (bool normalize : {true, false}) {
      std::vector<float> got(count, -99.0f);
      serving::Uint8ToFloat(in.data(), count, sample, plane, channels, c.nhwc,
                            normalize ? &pre : nullptr, got.data());
      for (size_t e = 0; e < count; ++e) {
        float want = in[e];
        if (normalize) {
          const int64_t ch = c.nhwc ? static_cast<int64_t>(e) % channels
                                    : (static_cast<int64_t>(e) % sample) / plane % channels;
          want = want * pre.scale();
          if (ch < pre.mean_size()) want -= pre.mean(static_cast<int>(ch));
          if (ch < pre.std_size()) want /= pre.std(static_cast<int>(ch));
        }
        ASSERT_FLOAT_EQ(got[e], want) << "case " << checked << " element " << e;
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 10);
}

// Counts that do not fill whole samples or pixels, and samples that are not whole planes, take
// the general path; it follows the same formula.
TEST(Uint8ToFloat, IrregularCountsFollowTheSameFormula) {
  inference::ModelPreprocessing pre;
  pre.set_scale(0.5f);
  for (float m : {1.0f, 2.0f, 3.0f}) pre.add_mean(m);
  for (float s : {2.0f, 4.0f, 8.0f}) pre.add_std(s);
  struct Case {
    size_t count;
    int64_t sample, plane, channels;
    bool nhwc;
  };
  for (const Case& c : std::vector<Case>{{2 * 12 + 1, 12, 4, 3, false},  // a partial sample
                                         {2 * 12 + 2, 12, 4, 3, true},   // a partial pixel
                                         {2 * 10, 10, 4, 3, false},      // 10 is not 4 + 4 + 4
                                         {7, 0, 0, 0, false}}) {         // no usable dims
    std::vector<uint8_t> in(c.count);
    for (size_t e = 0; e < c.count; ++e) in[e] = static_cast<uint8_t>(e * 37 % 256);
    std::vector<float> got(c.count, -99.0f);
    serving::Uint8ToFloat(in.data(), c.count, c.sample, c.plane, c.channels, c.nhwc, &pre,
                          got.data());
    const int64_t channels = std::max<int64_t>(c.channels, 1);
    for (size_t e = 0; e < c.count; ++e) {
      const int64_t i = static_cast<int64_t>(e);
      const int64_t ch =
          c.nhwc ? i % channels
                 : (i % std::max<int64_t>(c.sample, 1)) / std::max<int64_t>(c.plane, 1) % channels;
      const float want =
          (in[e] * 0.5f - pre.mean(static_cast<int>(ch))) / pre.std(static_cast<int>(ch));
      ASSERT_FLOAT_EQ(got[e], want) << "count " << c.count << " element " << e;
    }
  }
}

}  // namespace
}  // namespace convserve::testing
