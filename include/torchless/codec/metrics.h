// Geometry quality metrics for point-cloud codecs: MPEG D1 (point-to-point) and D2 (point-to-
// plane) PSNR exactly as pc_error 0.14.1 (mpeg-pcc-dmetric) computes them with its default
// options, Chamfer distances in the conventions the literature uses, and bits per point.
//
// pc_error, reproduced here (A = reference, B = decoded):
//  - both clouds are sorted and points with identical coordinates merged (--dropdups=2; for
//    geometry, merging is all "averaging" does; a merged point keeps the normal of the first);
//  - MSE_D1(A->B) = mean over a in A of |a - nn_B(a)|^2, coordinates as float32, errors in double;
//  - MSE_D2(A->B) = mean over a of ((a - b) . n_b)^2, averaged over all b in B equidistant to a
//    (--averageNormals=1), with n_b derived from A's normals ("scaleNormals": each a adds its
//    normal to its equidistant nearest b's, summed and divided by the count, not renormalised;
//    a b that received none takes the mean normal of its equidistant nearest a's). For B->A
//    the normals of A are used directly;
//  - symmetric MSE = max(MSE(A->B), MSE(B->A)); PSNR = 10 log10(3 p^2 / MSE);
//  - peak p: given (--resolution), else the largest distance from a point of A to its nearest
//    other point of A (pc_error's findNNdistances).
// Identical clouds give MSE 0 and PSNR +infinity.
// Nearest neighbours come from nanoflann k-d trees; queries run in parallel (core/parallel.h),
// and every sum is taken in point order, so results do not depend on the thread count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "torchless/formats/point_cloud.h"

namespace torchless::codec {

enum class NormalSource {
  kAuto,       // the reference's normals when it has them, else estimated
  kReference,  // the reference's normals; Error if it has none
  kEstimate,   // always estimate (PCA over the k nearest neighbours in the reference)
  kNone,       // D1 only
};

struct MetricOptions {
  // PSNR peak (pc_error --resolution). Unset: derived from the reference as pc_error does.
  std::optional<double> peak;
  // pc_error --dropdups=2 (default): merge points with identical coordinates before measuring.
  bool merge_duplicates = true;
  // pc_error --averageNormals=1 (default).
  bool average_normals = true;
  NormalSource normals = NormalSource::kAuto;
  // Neighbours used to estimate a normal (PCA of the k nearest points, the point included).
  size_t normal_estimation_k = 16;
  size_t threads = 0;  // 0: all cores
};

// One direction (e.g. reference -> decoded): means over the points looped over.
struct DirectionalError {
  double d1_mse = 0;
  double d2_mse = 0;
  double d1_hausdorff = 0;  // largest squared point-to-point error
  double d2_hausdorff = 0;
  // Chamfer terms over the points as given (duplicates counted), squared and not squared.
  double mean_squared_distance = 0;
  double mean_distance = 0;
};

// Chamfer distance (CD) conventions. D-PCC, CompressAI and PyTorch3D report `squared_sum`
// (sum over both directions of the mean squared nearest distance); "CD-L1" papers report
// `l1_average` (mean of the two directions' mean non-squared distances).
struct ChamferDistance {
  double squared_sum = 0;      // mean_a d^2 + mean_b d^2        (D-PCC, PyTorch3D default)
  double squared_average = 0;  // (mean_a d^2 + mean_b d^2) / 2
  double squared_max = 0;      // max(mean_a d^2, mean_b d^2)
  double l1_sum = 0;           // mean_a d + mean_b d
  double l1_average = 0;       // (mean_a d + mean_b d) / 2
};

struct GeometryQuality {
  uint64_t reference_points = 0;  // as given
  uint64_t decoded_points = 0;
  uint64_t reference_unique = 0;  // after merging duplicates (what D1/D2 loop over)
  uint64_t decoded_unique = 0;
  double peak = 0;
  std::string peak_rule;  // "given" or "max nearest-neighbour distance in the reference"

  DirectionalError reference_to_decoded;  // pc_error's "1" (A->B)
  DirectionalError decoded_to_reference;  // pc_error's "2" (B->A)
  double d1_mse = 0;                      // symmetric (pc_error "mseF (p2point)")
  double d1_psnr = 0;                     // +inf when d1_mse == 0
  bool has_d2 = false;
  double d2_mse = 0;
  double d2_psnr = 0;
  std::string normals_used;  // "reference", "estimated (PCA, k=16)" or "none"
  ChamferDistance chamfer;   // over the points as given, in their coordinates (no normalisation)
};

// Measures `decoded` against `reference`. Throws Error on empty clouds or non-finite
// coordinates, and when options.normals == kReference but the reference has no normals.
GeometryQuality measure_geometry(const formats::PointCloud& reference,
                                 const formats::PointCloud& decoded,
                                 const MetricOptions& options = {});

// 10 log10(3 peak^2 / mse): pc_error's getPSNR with its geometry factor 3. +inf for mse == 0.
double geometry_psnr(double mse, double peak);

// Bits per input point, MPEG style: 8 * compressed_bytes / points of the original cloud.
double bits_per_point(uint64_t compressed_bytes, uint64_t input_points);

// Unit normals estimated by PCA: the eigenvector of the smallest eigenvalue of the covariance
// of each point's k nearest neighbours (itself included). Sign is arbitrary (D2 squares it).
std::vector<float> estimate_normals(const formats::PointCloud& cloud, size_t k, size_t threads = 0);

// Quantises positions to the integer grid 0..2^bits-1 over the largest extent of the bounding
// box, q = round((p - min) / extent * (2^bits - 1)) (ties to even, like numpy.round), and merges
// points that land on the same cell, keeping the first one's normal and colour. This is how the
// anchors of the D-PCC spec (§4.3) were voxelised ("10-bit grid, peak 1023").
formats::PointCloud voxelize(const formats::PointCloud& cloud, int bits);

}  // namespace torchless::codec
