#include "torchless/codec/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "torchless/core/error.h"

namespace torchless::codec {
namespace {

using formats::PointCloud;

PointCloud cloud(std::vector<float> xyz, std::vector<float> normals = {}) {
  PointCloud c;
  c.positions = std::move(xyz);
  c.normals = std::move(normals);
  return c;
}

MetricOptions with_peak(double peak) {
  MetricOptions o;
  o.peak = peak;
  return o;
}

// A 5 x 5 grid with spacing 10 in the plane z = 0, normals +z.
PointCloud plane_grid() {
  PointCloud c;
  for (int i = 0; i < 5; ++i) {
    for (int j = 0; j < 5; ++j) {
      c.positions.insert(c.positions.end(), {10.0f * i, 10.0f * j, 0.0f});
      c.normals.insert(c.normals.end(), {0, 0, 1});
    }
  }
  return c;
}

PointCloud shifted(const PointCloud& c, float dx, float dy, float dz) {
  PointCloud out;
  out.positions = c.positions;
  for (size_t i = 0; i < c.size(); ++i) {
    out.positions[3 * i] += dx;
    out.positions[3 * i + 1] += dy;
    out.positions[3 * i + 2] += dz;
  }
  return out;
}

TEST(GeometryPsnr, IsTenLogOfThreePeakSquaredOverMse) {
  EXPECT_DOUBLE_EQ(geometry_psnr(1.0, 1023), 10 * std::log10(3.0 * 1023 * 1023));
  // PCGCv2's longdress_vox10_1300 row: mse1 2.55505 -> 60.8947 dB (spec §3.1).
  EXPECT_NEAR(geometry_psnr(2.55505, 1023), 60.8947, 5e-5);
  EXPECT_TRUE(std::isinf(geometry_psnr(0.0, 1023)));
}

TEST(Metrics, IdenticalCloudsGiveZeroMseAndInfinitePsnr) {
  auto a = plane_grid();
  auto q = measure_geometry(a, a, with_peak(1023));
  EXPECT_EQ(q.d1_mse, 0.0);
  EXPECT_TRUE(std::isinf(q.d1_psnr) && q.d1_psnr > 0);
  ASSERT_TRUE(q.has_d2);
  EXPECT_TRUE(std::isinf(q.d2_psnr));
  EXPECT_EQ(q.chamfer.squared_sum, 0.0);
}

TEST(Metrics, ShiftedCopyHasMseOfShiftSquared) {
  // Spacing 10, shift (1, 2, 2): every point's nearest neighbour is its own copy, at distance 3.
  auto a = plane_grid();
  auto b = shifted(a, 1, 2, 2);
  auto q = measure_geometry(a, b, with_peak(1023));
  EXPECT_DOUBLE_EQ(q.reference_to_decoded.d1_mse, 9.0);
  EXPECT_DOUBLE_EQ(q.decoded_to_reference.d1_mse, 9.0);
  EXPECT_DOUBLE_EQ(q.d1_mse, 9.0);
  EXPECT_DOUBLE_EQ(q.d1_psnr, 10 * std::log10(3.0 * 1023 * 1023 / 9.0));
  EXPECT_DOUBLE_EQ(q.chamfer.squared_sum, 18.0);
  EXPECT_DOUBLE_EQ(q.chamfer.l1_average, 3.0);
}

TEST(Metrics, TwoTinyCloudsWithKnownNearestDistances) {
  // A = {(0,0,0), (10,0,0)}, B = {(1,0,0)}: A->B squared distances 1 and 81, B->A 1.
  auto a = cloud({0, 0, 0, 10, 0, 0});
  auto b = cloud({1, 0, 0});
  MetricOptions o = with_peak(10);
  o.normals = NormalSource::kNone;
  auto q = measure_geometry(a, b, o);
  EXPECT_DOUBLE_EQ(q.reference_to_decoded.d1_mse, 41.0);
  EXPECT_DOUBLE_EQ(q.decoded_to_reference.d1_mse, 1.0);
  EXPECT_DOUBLE_EQ(q.d1_mse, 41.0);  // symmetric: the larger direction
  EXPECT_DOUBLE_EQ(q.reference_to_decoded.d1_hausdorff, 81.0);
  EXPECT_DOUBLE_EQ(q.d1_psnr, 10 * std::log10(300.0 / 41.0));
  EXPECT_DOUBLE_EQ(q.chamfer.squared_sum, 42.0);
  EXPECT_DOUBLE_EQ(q.chamfer.squared_max, 41.0);
  EXPECT_DOUBLE_EQ(q.chamfer.l1_sum, (1.0 + 9.0) / 2 + 1.0);
}

TEST(Metrics, PointToPlaneKeepsOnlyTheNormalComponent) {
  // Shift (1, 0, 2) against normals +z: D1 = 1 + 4, D2 = 4.
  auto a = plane_grid();
  auto b = shifted(a, 1, 0, 2);
  auto q = measure_geometry(a, b, with_peak(1023));
  ASSERT_TRUE(q.has_d2);
  EXPECT_EQ(q.normals_used, "reference");
  EXPECT_DOUBLE_EQ(q.d1_mse, 5.0);
  EXPECT_DOUBLE_EQ(q.reference_to_decoded.d2_mse, 4.0);
  EXPECT_DOUBLE_EQ(q.decoded_to_reference.d2_mse, 4.0);
  EXPECT_DOUBLE_EQ(q.d2_psnr, 10 * std::log10(3.0 * 1023 * 1023 / 4.0));
}

TEST(Metrics, InPlaneShiftHasNoPointToPlaneError) {
  auto a = plane_grid();
  auto q = measure_geometry(a, shifted(a, 3, 4, 0), with_peak(1023));
  EXPECT_DOUBLE_EQ(q.d1_mse, 25.0);
  EXPECT_DOUBLE_EQ(q.d2_mse, 0.0);
  EXPECT_TRUE(std::isinf(q.d2_psnr));
}

TEST(Metrics, DerivedNormalsAreAveragedNotRenormalised) {
  // Two reference points with normals +x and +y share one nearest decoded point (0,0,1):
  // pc_error gives it the mean normal (0.5, 0.5, 0), length 0.707, and does not renormalise.
  auto a = cloud({1, 0, 0, 0, 1, 0}, {1, 0, 0, 0, 1, 0});
  auto b = cloud({0, 0, 1});
  auto q = measure_geometry(a, b, with_peak(1));
  // A->B: (a - b).n_b = 0.5 for both points -> 0.25.
  EXPECT_DOUBLE_EQ(q.reference_to_decoded.d2_mse, 0.25);
  // B->A: b is equidistant (sqrt 2) to both; the errors along each one's normal are 1 and 1.
  EXPECT_DOUBLE_EQ(q.decoded_to_reference.d2_mse, 1.0);
}

TEST(Metrics, PeakDefaultsToLargestNearestNeighbourDistanceInReference) {
  // Nearest-neighbour distances in A: 1, 1, 4.
  auto a = cloud({0, 0, 0, 1, 0, 0, 5, 0, 0});
  auto q = measure_geometry(a, a);
  EXPECT_DOUBLE_EQ(q.peak, 4.0);
  EXPECT_EQ(q.peak_rule, "max nearest-neighbour distance in the reference");
}

TEST(Metrics, MergesDuplicatePointsAsPcErrorDoes) {
  // B holds (0,0,0) three times and (4,0,1) once. Merged (pc_error --dropdups=2) B has two
  // points, so B->A = (0 + 1) / 2; D-PCC's Chamfer counts every point: (0 + 0 + 0 + 1) / 4.
  auto a = cloud({0, 0, 0, 4, 0, 0});
  auto b = cloud({0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0});
  auto q = measure_geometry(a, b, with_peak(4));
  EXPECT_EQ(q.decoded_points, 4u);
  EXPECT_EQ(q.decoded_unique, 2u);
  EXPECT_DOUBLE_EQ(q.decoded_to_reference.d1_mse, 0.5);
  EXPECT_DOUBLE_EQ(q.decoded_to_reference.mean_squared_distance, 0.25);
  MetricOptions keep = with_peak(4);
  keep.merge_duplicates = false;
  EXPECT_DOUBLE_EQ(measure_geometry(a, b, keep).decoded_to_reference.d1_mse, 0.25);
}

TEST(Metrics, EstimatesNormalsWhenReferenceHasNone) {
  // Points on the plane z = 0.5 x; shift B along that plane's normal by 2: D2 = D1 = 4.
  PointCloud a;
  for (int i = 0; i < 8; ++i) {
    for (int j = 0; j < 8; ++j) {
      a.positions.insert(a.positions.end(), {10.0f * i, 10.0f * j, 5.0f * i});
    }
  }
  const float s = 2.0f / std::sqrt(1.25f);
  auto b = shifted(a, -0.5f * s, 0, s);
  auto q = measure_geometry(a, b, with_peak(100));
  ASSERT_TRUE(q.has_d2);
  EXPECT_EQ(q.normals_used, "estimated (PCA, k=16)");
  EXPECT_NEAR(q.d1_mse, 4.0, 1e-4);
  EXPECT_NEAR(q.d2_mse, 4.0, 1e-4);
}

TEST(Metrics, EstimatedNormalOfAPlaneIsPerpendicularToIt) {
  PointCloud a;
  for (int i = 0; i < 6; ++i) {
    for (int j = 0; j < 6; ++j)
      a.positions.insert(a.positions.end(), {1.0f * i, 1.0f * j, 0.5f * i});
  }
  auto n = estimate_normals(a, 8);
  const double inv = 1 / std::sqrt(1.25);
  for (size_t p = 0; p < a.size(); ++p) {
    double dot = n[3 * p] * (-0.5 * inv) + n[3 * p + 2] * inv;
    EXPECT_NEAR(std::fabs(dot), 1.0, 1e-5) << p;
  }
}

TEST(Metrics, NoNormalsModeComputesD1Only) {
  auto a = plane_grid();
  MetricOptions o = with_peak(1023);
  o.normals = NormalSource::kNone;
  auto q = measure_geometry(a, shifted(a, 1, 0, 0), o);
  EXPECT_FALSE(q.has_d2);
  EXPECT_EQ(q.normals_used, "none");
}

TEST(Metrics, ResultDoesNotDependOnThreadCount) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0, 100);
  PointCloud a, b;
  for (int i = 0; i < 5000; ++i) {
    a.positions.insert(a.positions.end(), {u(rng), u(rng), u(rng)});
    b.positions.insert(b.positions.end(), {u(rng), u(rng), u(rng)});
  }
  MetricOptions one = with_peak(100), four = with_peak(100);
  one.threads = 1;
  four.threads = 4;
  auto q1 = measure_geometry(a, b, one);
  auto q4 = measure_geometry(a, b, four);
  EXPECT_EQ(q1.d1_mse, q4.d1_mse);
  EXPECT_EQ(q1.d2_mse, q4.d2_mse);
  EXPECT_EQ(q1.chamfer.l1_sum, q4.chamfer.l1_sum);
}

TEST(Metrics, RejectsEmptyAndNonFiniteClouds) {
  auto a = plane_grid();
  EXPECT_THROW(measure_geometry(a, PointCloud{}, with_peak(1)), Error);
  auto bad = cloud({0, 0, NAN});
  try {
    measure_geometry(a, bad, with_peak(1));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("decoded cloud: point 0 has a non-finite"),
              std::string::npos)
        << e.what();
  }
}

TEST(Metrics, RejectsReferenceNormalsRequestWithoutNormals) {
  MetricOptions o = with_peak(1);
  o.normals = NormalSource::kReference;
  auto a = cloud({0, 0, 0, 1, 1, 1});
  EXPECT_THROW(measure_geometry(a, a, o), Error);
}

TEST(BitsPerPoint, IsEightBytesOverInputPoints) {
  EXPECT_DOUBLE_EQ(bits_per_point(7242, 5210), 8.0 * 7242 / 5210);
  EXPECT_THROW(bits_per_point(1, 0), Error);
}

TEST(Voxelize, QuantisesLargestExtentToGridAndMergesDuplicates) {
  // Extent 2 along x -> 1023 steps; y spans 1 -> 511.5 -> 512 (ties to even).
  PointCloud c =
      cloud({0, 0, 0, 2, 1, 0, 2, 1, 0.0001f, 1, 0.5f, 0}, {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1});
  auto v = voxelize(c, 10);
  EXPECT_EQ(v.positions, (std::vector<float>{0, 0, 0, 512, 256, 0, 1023, 512, 0}));
  // The merged cell keeps the first point's normal.
  EXPECT_EQ(v.normals, (std::vector<float>{1, 0, 0, 1, 1, 1, 0, 1, 0}));
}

}  // namespace
}  // namespace torchless::codec
