// EncodedImagePixels (the header peek that keeps large images off the receiving thread) against
// the decoder itself, on the bundled test images (PNG and JPEG, gray and RGB, 28x28 and 112x112).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "server/serving/image.h"

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

}  // namespace
}  // namespace convserve::testing
