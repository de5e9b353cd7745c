/*
 * ctest: hand-checked cases of the CPU implementations through their C ABI (the torchvision
 * comparisons are in the pytest files beside this folder). Exit code 0 when every check passes.
 */
#include "common/cpu_ops_api.h"
#include "check.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

namespace
{


uint16_t toHalf(float v)
{
    uint16_t h;
    dettool_cpu_float_to_half(&v, &h, 1);
    return h;
}

float bits(uint32_t u)
{
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
}

void testHalfConversion()
{
    // Every finite or infinite half survives half -> float -> half.
    std::vector<uint16_t> all(65536);
    for (uint32_t i = 0; i < 65536; ++i)
    {
        all[i] = static_cast<uint16_t>(i);
    }
    std::vector<float> asFloat(65536);
    dettool_cpu_half_to_float(all.data(), asFloat.data(), 65536);
    std::vector<uint16_t> back(65536);
    dettool_cpu_float_to_half(asFloat.data(), back.data(), 65536);
    int mismatches = 0;
    for (uint32_t i = 0; i < 65536; ++i)
    {
        bool const isNan = (i & 0x7c00u) == 0x7c00u && (i & 0x3ffu) != 0;
        mismatches += isNan ? !std::isnan(asFloat[i]) : back[i] != all[i];
    }
    CHECK(mismatches == 0);
    CHECK(asFloat[0x3c00] == 1.0F && asFloat[0x0001] == std::ldexp(1.0F, -24) && std::isinf(asFloat[0x7c00]));
    // Ties round to even, in the normal and subnormal ranges; overflow gives inf.
    CHECK(toHalf(1.0F + std::ldexp(1.0F, -11)) == 0x3c00);
    CHECK(toHalf(1.0F + 3 * std::ldexp(1.0F, -11)) == 0x3c02);
    CHECK(toHalf(std::ldexp(1.0F, -25)) == 0x0000);
    CHECK(toHalf(3 * std::ldexp(1.0F, -25)) == 0x0002);
    CHECK(toHalf(65519.0F) == 0x7bff);
    CHECK(toHalf(65520.0F) == 0x7c00);
    CHECK(toHalf(-bits(0x7f800000u)) == 0xfc00);
    CHECK((toHalf(bits(0x7fc00000u)) & 0x7c00u) == 0x7c00u && (toHalf(bits(0x7fc00000u)) & 0x3ffu) != 0);
}

void testNms()
{
    // One image, 4 boxes, 2 classes. IoU(A, B) is exactly 0.5: not > 0.5, B survives A.
    float const boxes[] = {
        0, 0, 3, 1, // A
        1, 0, 4, 1, // B: IoU 0.5 with A
        0, 0, 3, 1, // C: same as A
        10, 10, 11, 11,
    };
    float const scores[] = {
        0.9F, 0.1F, // A: class 0 0.9
        0.8F, 0.9F, // B: class 1 0.9 ties with A class 0: flat index 0 < 3
        0.7F, 0.0F, // C: class 0 0.7, suppressed by A (IoU 1)
        0.05F, 0.5F,
    };
    int32_t numDets = -1;
    float detBoxes[6 * 4];
    float detScores[6];
    int32_t detClasses[6];
    int32_t const rc = dettool_cpu_batched_nms(
        boxes, scores, 1, 4, 2, 0, 0.05F, 0.5F, 6, &numDets, detBoxes, detScores, detClasses);
    CHECK(rc == 0);
    // Candidates (> 0.05): A0 .9, A1 .1, B0 .8, B1 .9, C0 .7, D1 .5 (D0 = 0.05 is not > 0.05).
    // Order: A0 .9 (index 0), B1 .9 (3), B0 .8 (IoU 0.5 with A0: kept), C0 suppressed by A0,
    // D1 .5, A1 .1 (IoU 0.5 with B1: kept).
    CHECK(numDets == 5);
    int32_t const wantClasses[] = {0, 1, 0, 1, 1, -1};
    float const wantScores[] = {0.9F, 0.9F, 0.8F, 0.5F, 0.1F, 0.0F};
    for (int i = 0; i < 6; ++i)
    {
        CHECK(detClasses[i] == wantClasses[i]);
        CHECK(detScores[i] == wantScores[i]);
    }
    CHECK(detBoxes[1 * 4 + 0] == 1.0F && detBoxes[3 * 4 + 0] == 10.0F && detBoxes[5 * 4 + 2] == 0.0F);

    // Zero candidates and K = 0.
    CHECK(dettool_cpu_batched_nms(boxes, scores, 1, 4, 2, 0, 0.95F, 0.5F, 6, &numDets, detBoxes, detScores, detClasses)
        == 0);
    CHECK(numDets == 0 && detClasses[0] == -1 && detScores[5] == 0.0F);
    CHECK(dettool_cpu_batched_nms(boxes, scores, 1, 4, 2, 0, 0.0F, 0.5F, 0, &numDets, detBoxes, detScores, detClasses)
        == 0);
    CHECK(numDets == 0);
    CHECK(dettool_cpu_batched_nms(boxes, scores, 1, 4, 2, 0, 0.0F, 0.5F, -1, &numDets, detBoxes, detScores, detClasses)
        == -1);
    CHECK(std::strlen(dettool_cpu_last_error()) > 0);
}

void testRoiLevels()
{
    // Four 1-channel levels whose every pixel holds the level number: the output is the level.
    // (Level 3 is larger than a real pyramid's so that the 5000-pixel RoI samples inside it.)
    int32_t const heights[] = {64, 32, 16, 160};
    int32_t const widths[] = {64, 32, 16, 160};
    int32_t const strides[] = {4, 8, 16, 32};
    std::vector<std::vector<float>> data(4);
    void const* levels[4];
    for (int l = 0; l < 4; ++l)
    {
        data[l].assign(static_cast<size_t>(heights[l] * widths[l]), static_cast<float>(l));
        levels[l] = data[l].data();
    }
    // (scale, level): boundaries at 112, 224, 448 (finest_scale 56).
    float const sides[] = {1.0F, 111.99F, 112.0F, 223.99F, 224.0F, 448.0F, 5000.0F};
    int const wantLevel[] = {0, 0, 1, 1, 2, 3, 3};
    std::vector<float> rois;
    for (float side : sides)
    {
        rois.insert(rois.end(), {0.0F, 1.0F, 1.0F, 1.0F + side, 1.0F + side});
    }
    rois.insert(rois.end(), {0.0F, 10.0F, 10.0F, 5.0F, 20.0F}); // negative area: no level, zeros
    rois.insert(rois.end(), {1.0F, 1.0F, 1.0F, 200.0F, 200.0F}); // batch index 1 of 1: zeros
    rois.insert(rois.end(), {-0.5F, 1.0F, 1.0F, 200.0F, 200.0F}); // truncates to image 0: level 1
    int const numRois = static_cast<int>(rois.size() / 5);
    std::vector<float> out(static_cast<size_t>(numRois) * 2 * 2, -1.0F);
    CHECK(dettool_cpu_multi_level_roi_align(0, rois.data(), numRois, levels, heights, widths, strides, 4, 1, 1, 2, 2,
              2, 56, 1, 1.0F, out.data())
        == 0);
    for (int r = 0; r < 7; ++r)
    {
        CHECK(out[r * 4] == static_cast<float>(wantLevel[r]));
        if (out[r * 4] != static_cast<float>(wantLevel[r]))
        {
            std::printf("  RoI %d: %g\n", r, out[r * 4]);
        }
    }
    CHECK(out[7 * 4] == 0.0F && out[7 * 4 + 3] == 0.0F);
    CHECK(out[8 * 4 + 3] == 0.0F);
    CHECK(out[9 * 4] == 1.0F);
    CHECK(dettool_cpu_multi_level_roi_align(0, rois.data(), 0, levels, heights, widths, strides, 4, 1, 1, 2, 2, 2, 56,
              1, 1.0F, out.data())
        == 0);
    CHECK(dettool_cpu_multi_level_roi_align(0, rois.data(), 1, levels, heights, widths, strides, 9, 1, 1, 2, 2, 2, 56,
              1, 1.0F, out.data())
        == -1);
}

void testRoiScaleFactor()
{
    // Level l holds 1000 * l + x at column x, so a pooled value tells the level and the mean x of
    // its samples (bilinear interpolation of a ramp is exact inside the map). Output 1 x 2 with one
    // sample per bin (aligned): bin k samples x at x1' + (2k + 1) * w' / 4 in level pixels.
    int32_t const heights[] = {64, 32, 16, 8};
    int32_t const widths[] = {64, 32, 16, 8};
    int32_t const strides[] = {4, 8, 16, 32};
    std::vector<std::vector<float>> data(4);
    void const* levels[4];
    for (int l = 0; l < 4; ++l)
    {
        data[l].resize(static_cast<size_t>(heights[l] * widths[l]));
        for (int y = 0; y < heights[l]; ++y)
        {
            for (int x = 0; x < widths[l]; ++x)
            {
                data[l][y * widths[l] + x] = 1000.0F * static_cast<float>(l) + static_cast<float>(x);
            }
        }
        levels[l] = data[l].data();
    }
    // Scale 100 (level 0): x in [60, 160] -> [45, 175] at 1.3, i.e. [10.75, 43.25] on level 0.
    // Scale 104 (level 0) rescaled to 135.2 (level 1 by itself): still pooled on level 0.
    float const rois[] = {0.0F, 60.0F, 60.0F, 160.0F, 160.0F, 0.0F, 40.0F, 40.0F, 144.0F, 144.0F};
    float out[2 * 2];
    CHECK(dettool_cpu_multi_level_roi_align(0, rois, 2, levels, heights, widths, strides, 4, 1, 1, 1, 2, 1, 56, 1,
              1.3F, out)
        == 0);
    CHECK(std::fabs(out[0] - 18.875F) < 1e-4F && std::fabs(out[1] - 35.125F) < 1e-4F);
    CHECK(out[2] < 1000.0F && out[3] < 1000.0F);
    CHECK(dettool_cpu_multi_level_roi_align(0, rois, 1, levels, heights, widths, strides, 4, 1, 1, 1, 2, 1, 56, 1,
              1.0F, out)
        == 0);
    CHECK(std::fabs(out[0] - 20.75F) < 1e-4F && std::fabs(out[1] - 33.25F) < 1e-4F); // [14.5, 39.5]: not rescaled
    for (float bad : {0.0F, -1.0F, NAN, INFINITY})
    {
        CHECK(dettool_cpu_multi_level_roi_align(0, rois, 1, levels, heights, widths, strides, 4, 1, 1, 1, 2, 1, 56, 1,
                  bad, out)
            == -1);
    }
}

void testPsRoiAlign()
{
    // k = 2, C = 3: input channel i holds 100 * i + x at column x, so a pooled value tells the
    // channel its bin read and the mean x of its samples (bilinear interpolation of a ramp is exact
    // inside the map). One sample per bin: bin pw samples x at x1 - 0.5 + (pw + 0.5) * w / 2.
    int const B = 2, k = 2, C = 3, H = 6, W = 10;
    std::vector<float> features(static_cast<size_t>(B * C * k * k * H * W));
    for (int b = 0; b < B; ++b)
    {
        for (int i = 0; i < C * k * k; ++i)
        {
            for (int y = 0; y < H; ++y)
            {
                for (int x = 0; x < W; ++x)
                {
                    features[((b * C * k * k + i) * H + y) * W + x] = 100.0F * static_cast<float>(i) + x;
                }
            }
        }
    }
    float const rois[] = {
        1, 1.5F, 1.5F, 9.5F, 5.5F, // image 1, inside: bins sample x = 3 and 7
        0, 4, 4, 4, 4,             // a point: no adaptive sample, 0 (torchvision: 0 / 0)
        2, 1, 1, 5, 5,             // batch index 2 of 2: zeros
        0, -50, -50, -40, -40,     // off the map: zeros
    };
    std::vector<float> out(static_cast<size_t>(4 * C * k * k), -1.0F);
    CHECK(dettool_cpu_ps_roi_align(0, features.data(), rois, 4, B, C * k * k, H, W, k, 1.0F, 1, out.data()) == 0);
    for (int c = 0; c < C; ++c)
    {
        for (int ph = 0; ph < k; ++ph)
        {
            for (int pw = 0; pw < k; ++pw)
            {
                float const want = 100.0F * static_cast<float>((c * k + ph) * k + pw) + (pw == 0 ? 3.0F : 7.0F);
                CHECK(std::fabs(out[(c * k + ph) * k + pw] - want) < 1e-4F);
            }
        }
    }
    // The point, one sample at x = y = 4 - 0.5: channel 0 for bin (0, 0), channel 3 for bin (1, 1).
    CHECK(out[C * k * k] == 3.5F && out[C * k * k + 3] == 303.5F);
    for (int i = 2 * C * k * k; i < 4 * C * k * k; ++i)
    {
        CHECK(out[i] == 0.0F); // out of the batch, off the map
    }
    CHECK(dettool_cpu_ps_roi_align(0, features.data(), rois, 4, B, C * k * k, H, W, k, 1.0F, 0, out.data()) == 0);
    for (int i = C * k * k; i < 2 * C * k * k; ++i)
    {
        CHECK(out[i] == 0.0F); // the point, adaptive: no NaN
    }
    CHECK(dettool_cpu_ps_roi_align(0, features.data(), rois, 0, B, C * k * k, H, W, k, 1.0F, 0, out.data()) == 0);
    CHECK(dettool_cpu_ps_roi_align(0, features.data(), rois, 1, B, C * k * k - 1, H, W, k, 1.0F, 0, out.data()) == -1);
    CHECK(std::strstr(dettool_cpu_last_error(), "multiple of output_size") != nullptr);
    for (float bad : {0.0F, -0.25F, NAN, INFINITY})
    {
        CHECK(dettool_cpu_ps_roi_align(0, features.data(), rois, 1, B, C * k * k, H, W, k, bad, 0, out.data()) == -1);
    }
    CHECK(dettool_cpu_ps_roi_align(0, features.data(), rois, 1, B, C * k * k, H, W, k, 1.0F, -1, out.data()) == -1);
}

void testDeformConvWithoutOffsets()
{
    // Zero offsets and a mask of ones: a plain 3x3 convolution, stride 1, padding 1.
    int const B = 1, C = 2, H = 5, W = 4, Co = 3, K = 3;
    std::vector<float> input(B * C * H * W), weight(Co * C * K * K), bias(Co);
    for (size_t i = 0; i < input.size(); ++i)
    {
        input[i] = std::sin(0.37F * static_cast<float>(i));
    }
    for (size_t i = 0; i < weight.size(); ++i)
    {
        weight[i] = std::cos(0.11F * static_cast<float>(i));
    }
    for (int i = 0; i < Co; ++i)
    {
        bias[i] = 0.25F * static_cast<float>(i);
    }
    std::vector<float> offset(B * 2 * K * K * H * W, 0.0F), mask(B * K * K * H * W, 1.0F), out(B * Co * H * W);
    CHECK(dettool_cpu_modulated_deform_conv(0, input.data(), offset.data(), mask.data(), weight.data(), bias.data(), B,
              C, H, W, Co, K, K, 1, 1, 1, 1, 1, 1, 1, 1, out.data())
        == 0);
    double worst = 0.0;
    for (int co = 0; co < Co; ++co)
    {
        for (int y = 0; y < H; ++y)
        {
            for (int x = 0; x < W; ++x)
            {
                double want = bias[co];
                for (int c = 0; c < C; ++c)
                {
                    for (int i = 0; i < K; ++i)
                    {
                        for (int j = 0; j < K; ++j)
                        {
                            int const yy = y - 1 + i;
                            int const xx = x - 1 + j;
                            if (yy >= 0 && yy < H && xx >= 0 && xx < W)
                            {
                                want += static_cast<double>(weight[((co * C + c) * K + i) * K + j])
                                    * input[(c * H + yy) * W + xx];
                            }
                        }
                    }
                }
                worst = std::fmax(worst, std::fabs(want - out[(co * H + y) * W + x]));
            }
        }
    }
    CHECK(worst < 1e-5);
    // The dilated kernel must fit the padded input.
    CHECK(dettool_cpu_modulated_deform_conv(0, input.data(), offset.data(), mask.data(), weight.data(), bias.data(), B,
              C, H, W, Co, K, K, 1, 1, 0, 0, 3, 3, 1, 1, out.data())
        == -1);
}

} // namespace

int main()
{
    testHalfConversion();
    testNms();
    testRoiLevels();
    testRoiScaleFactor();
    testPsRoiAlign();
    testDeformConvWithoutOffsets();
    if (gFailures == 0)
    {
        std::printf("cpu_ops: all checks passed\n");
    }
    return gFailures == 0 ? 0 : 1;
}
