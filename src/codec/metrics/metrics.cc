// D1/D2 PSNR as MPEG pc_error 0.14.1 computes them (source/pcc_distortion.cpp, findMetric and
// scaleNormals; source/pcc_processing.cpp, PccPointCloud::load), Chamfer distances, and the
// helpers around them. See include/torchless/codec/metrics.h for the definitions.
//
// Quirks of pc_error matched on purpose:
//  - coordinates are float32; a coordinate difference is taken in float, then squared and summed
//    in double (nanoflann's L2_Adaptor<float, ..., double> and pc_error's errVector do this);
//  - the k-NN query asks for 10 neighbours, and 5 more (up to 30) while the farthest one is still
//    as near as the nearest, so that every equidistant neighbour is seen;
//  - for D2 the equidistant set is a chain: neighbour n joins while |d_n - d_{n-1}| < 1e-8;
//    for normal derivation (scaleNormals) it is the exact-equality set, starting from 5;
//  - averaged D2 terms are computed in float (pc_error calls pow(float, 2.f));
//  - per-point terms are summed in the order of the sorted cloud (pc_error with 1 thread).
// Deliberate difference: a neighbour whose normal is NaN contributes its point-to-point error
// (as pc_error's non-averaging branch does); pc_error's averaging branch adds the unsquared sum
// of the coordinate differences there, which is a bug.
#include "torchless/codec/metrics.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numeric>

#include <nanoflann.hpp>

#include "torchless/core/error.h"
#include "torchless/core/parallel.h"

namespace torchless::codec {
namespace {

using formats::PointCloud;

struct CloudAdaptor {
  const float* xyz = nullptr;
  size_t n = 0;
  size_t kdtree_get_point_count() const { return n; }
  float kdtree_get_pt(size_t i, size_t d) const { return xyz[3 * i + d]; }
  template <class Box>
  bool kdtree_get_bbox(Box&) const {
    return false;
  }
};

using KdTree =
    nanoflann::KDTreeSingleIndexAdaptor<nanoflann::L2_Adaptor<float, CloudAdaptor, double>,
                                        CloudAdaptor, 3, uint32_t>;

// A cloud sorted lexicographically by position (ties by original index), as pc_error sorts on
// load, with identical positions merged when asked. The first point of a run is kept.
struct SortedCloud {
  std::vector<float> xyz;
  std::vector<float> normals;          // empty or 3 per point
  std::vector<uint32_t> multiplicity;  // points of the input each one stands for
  size_t size() const { return multiplicity.size(); }
};

void check_finite(const PointCloud& cloud, const char* which) {
  for (size_t i = 0; i < cloud.positions.size(); ++i) {
    if (!std::isfinite(cloud.positions[i])) {
      fail("{} cloud: point {} has a non-finite coordinate ({})", which, i / 3, cloud.positions[i]);
    }
  }
}

std::vector<uint32_t> lexicographic_order(const std::vector<float>& xyz) {
  const size_t n = xyz.size() / 3;
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
    const float* pa = &xyz[3 * size_t{a}];
    const float* pb = &xyz[3 * size_t{b}];
    for (int d = 0; d < 3; ++d) {
      if (pa[d] < pb[d]) return true;
      if (pb[d] < pa[d]) return false;
    }
    return a < b;
  });
  return order;
}

SortedCloud sort_and_merge(const std::vector<float>& xyz, const std::vector<float>* normals,
                           bool merge) {
  auto order = lexicographic_order(xyz);
  SortedCloud out;
  out.xyz.reserve(xyz.size());
  if (normals != nullptr) out.normals.reserve(xyz.size());
  for (size_t k = 0; k < order.size(); ++k) {
    const float* p = &xyz[3 * size_t{order[k]}];
    if (merge && !out.multiplicity.empty()) {
      const float* last = &out.xyz[out.xyz.size() - 3];
      if (p[0] == last[0] && p[1] == last[1] && p[2] == last[2]) {
        ++out.multiplicity.back();
        continue;
      }
    }
    out.xyz.insert(out.xyz.end(), p, p + 3);
    if (normals != nullptr) {
      const float* q = &(*normals)[3 * size_t{order[k]}];
      out.normals.insert(out.normals.end(), q, q + 3);
    }
    out.multiplicity.push_back(1);
  }
  return out;
}

class Index {
 public:
  explicit Index(const SortedCloud& cloud)
      : adaptor_{cloud.xyz.data(), cloud.size()},
        tree_(3, adaptor_, nanoflann::KDTreeSingleIndexAdaptorParams(10)) {}

  size_t size() const { return adaptor_.n; }

  // Up to k nearest neighbours of q, nearest first; returns how many were found.
  size_t knn(const float* q, size_t k, uint32_t* indices, double* sq_dists) const {
    k = std::min(k, adaptor_.n);
    if (k == 0) return 0;
    return tree_.knnSearch(q, k, indices, sq_dists);
  }

  // pc_error's growing query: start with `first` neighbours and add 5 (up to 30) while the
  // farthest returned is exactly as near as the nearest.
  size_t knn_all_equidistant(const float* q, size_t first, uint32_t* indices,
                             double* sq_dists) const {
    size_t k = first;
    size_t found = knn(q, k, indices, sq_dists);
    while (found == k && k < adaptor_.n && sq_dists[0] == sq_dists[found - 1] && k + 5 <= 30) {
      k += 5;
      found = knn(q, k, indices, sq_dists);
    }
    return found;
  }

 private:
  CloudAdaptor adaptor_;
  KdTree tree_;
};

constexpr size_t kMaxNeighbours = 30;
constexpr size_t kChunk = 512;

template <typename Body>
void for_each_point(size_t n, size_t threads, Body&& body) {
  const size_t chunks = (n + kChunk - 1) / kChunk;
  parallel_for(chunks, threads, [&](size_t c) {
    const size_t end = std::min(n, (c + 1) * kChunk);
    for (size_t i = c * kChunk; i < end; ++i) body(i);
  });
}

// pc_error's scaleNormals: normals for `target` derived from `source`'s.
std::vector<float> derive_normals(const SortedCloud& source, const Index& source_index,
                                  const SortedCloud& target, const Index& target_index,
                                  bool average, size_t threads) {
  const size_t ns = source.size(), nt = target.size();
  // For each source point, the target points that are (equally) nearest to it, kept per chunk
  // of source points (most have exactly one) and consumed in source order below.
  const size_t chunks = (ns + kChunk - 1) / kChunk;
  std::vector<std::vector<uint32_t>> chunk_hits(chunks);
  std::vector<uint8_t> hit_count(ns);
  parallel_for(chunks, threads, [&](size_t c) {
    std::array<uint32_t, kMaxNeighbours> idx;
    std::array<double, kMaxNeighbours> d2;
    auto& out = chunk_hits[c];
    const size_t end = std::min(ns, (c + 1) * kChunk);
    out.reserve(end - c * kChunk);
    for (size_t i = c * kChunk; i < end; ++i) {
      size_t found =
          average ? target_index.knn_all_equidistant(&source.xyz[3 * i], 5, idx.data(), d2.data())
                  : target_index.knn(&source.xyz[3 * i], 1, idx.data(), d2.data());
      uint8_t count = 0;
      for (size_t j = 0; j < found; ++j) {
        if (d2[j] != d2[0]) continue;
        out.push_back(idx[j]);
        ++count;
      }
      hit_count[i] = count;
    }
  });
  std::vector<float> normals(3 * nt, 0.0f);
  std::vector<int> counts(nt, 0);
  for (size_t c = 0, i = 0; c < chunks; ++c) {  // in source order, as pc_error accumulates
    size_t h = 0;
    const size_t end = std::min(ns, (c + 1) * kChunk);
    for (; i < end; ++i) {
      for (size_t k = 0; k < hit_count[i]; ++k, ++h) {
        uint32_t j = chunk_hits[c][h];
        for (int d = 0; d < 3; ++d) normals[3 * j + d] += source.normals[3 * i + d];
        ++counts[j];
      }
    }
  }
  for_each_point(nt, threads, [&](size_t j) {
    if (counts[j] > 0) {
      for (int d = 0; d < 3; ++d) normals[3 * j + d] /= static_cast<float>(counts[j]);
      return;
    }
    std::array<uint32_t, kMaxNeighbours> idx;
    std::array<double, kMaxNeighbours> d2;
    size_t found =
        average ? source_index.knn_all_equidistant(&target.xyz[3 * j], 5, idx.data(), d2.data())
                : source_index.knn(&target.xyz[3 * j], 1, idx.data(), d2.data());
    size_t num = 0;
    for (size_t k = 0; k < found; ++k) {
      if (d2[k] != d2[0]) continue;
      for (int d = 0; d < 3; ++d) normals[3 * j + d] += source.normals[3 * size_t{idx[k]} + d];
      ++num;
    }
    if (num > 0) {
      for (int d = 0; d < 3; ++d) normals[3 * j + d] /= static_cast<float>(num);
    }
  });
  return normals;
}

// pc_error's findMetric for one direction: loop over `query`, neighbours in `target`, D2 with
// `target_normals` (empty: D1 only).
DirectionalError measure_direction(const SortedCloud& query, const SortedCloud& target,
                                   const Index& target_index,
                                   const std::vector<float>& target_normals, bool average,
                                   size_t threads) {
  const size_t n = query.size();
  const bool with_d2 = !target_normals.empty();
  std::vector<double> d1(n), d2(n);
  for_each_point(n, threads, [&](size_t i) {
    std::array<uint32_t, kMaxNeighbours> idx;
    std::array<double, kMaxNeighbours> sq;
    const float* a = &query.xyz[3 * i];
    // D1 needs only the nearest distance; the equidistant set matters for D2 alone.
    size_t found = !with_d2  ? target_index.knn(a, 1, idx.data(), sq.data())
                   : average ? target_index.knn_all_equidistant(a, 10, idx.data(), sq.data())
                             : target_index.knn(a, 10, idx.data(), sq.data());
    const float* b = &target.xyz[3 * size_t{idx[0]}];
    std::array<double, 3> err;
    for (int d = 0; d < 3; ++d) err[d] = static_cast<float>(a[d] - b[d]);
    d1[i] = err[0] * err[0] + err[1] * err[1] + err[2] * err[2];
    if (!with_d2) return;
    auto point_to_point = [&](const float* p) {
      double s = 0;
      for (int d = 0; d < 3; ++d) {
        double e = static_cast<float>(a[d] - p[d]);
        s += e * e;
      }
      return s;
    };
    if (average) {
      size_t same = 1;
      while (same < found && std::fabs(sq[same] - sq[same - 1]) < 1e-8) ++same;
      double sum = 0;
      for (size_t k = 0; k < same; ++k) {
        const float* p = &target.xyz[3 * size_t{idx[k]}];
        const float* nb = &target_normals[3 * size_t{idx[k]}];
        if (std::isnan(nb[0]) || std::isnan(nb[1]) || std::isnan(nb[2])) {
          sum += point_to_point(p);
          continue;
        }
        float e = (a[0] - p[0]) * nb[0] + (a[1] - p[1]) * nb[1] + (a[2] - p[2]) * nb[2];
        sum += std::pow(e, 2.0f);
      }
      d2[i] = sum / static_cast<double>(same);
    } else {
      const float* nb = &target_normals[3 * size_t{idx[0]}];
      if (std::isnan(nb[0]) || std::isnan(nb[1]) || std::isnan(nb[2])) {
        d2[i] = d1[i];
      } else {
        double e = err[0] * nb[0] + err[1] * nb[1] + err[2] * nb[2];
        d2[i] = e * e;
      }
    }
  });
  DirectionalError out;
  double sum1 = 0, sum2 = 0, weighted_sq = 0, weighted_dist = 0;
  uint64_t points = 0;
  for (size_t i = 0; i < n; ++i) {
    sum1 += d1[i];
    out.d1_hausdorff = std::max(out.d1_hausdorff, d1[i]);
    if (with_d2) {
      sum2 += d2[i];
      out.d2_hausdorff = std::max(out.d2_hausdorff, d2[i]);
    }
    weighted_sq += query.multiplicity[i] * d1[i];
    weighted_dist += query.multiplicity[i] * std::sqrt(d1[i]);
    points += query.multiplicity[i];
  }
  out.d1_mse = sum1 / static_cast<double>(n);
  out.d2_mse = with_d2 ? sum2 / static_cast<double>(n) : 0.0;
  out.mean_squared_distance = weighted_sq / static_cast<double>(points);
  out.mean_distance = weighted_dist / static_cast<double>(points);
  return out;
}

// pc_error's findNNdistances: the largest distance from a point to its nearest other point.
double max_nearest_neighbour_distance(const SortedCloud& cloud, const Index& index,
                                      size_t threads) {
  const size_t n = cloud.size();
  std::vector<double> nearest(n, -1.0);
  for_each_point(n, threads, [&](size_t i) {
    std::array<uint32_t, 3> idx;
    std::array<double, 3> sq;
    size_t found = index.knn(&cloud.xyz[3 * i], 3, idx.data(), sq.data());
    // pc_error skips a point whose first hit is not itself or whose second is a duplicate.
    if (found < 2 || idx[0] != i || sq[1] <= 1e-10) return;
    nearest[i] = std::sqrt(sq[1]);
  });
  double peak = -1.0;
  for (double d : nearest) peak = std::max(peak, d);
  if (peak <= 0) {
    fail(
        "cannot derive a PSNR peak from the reference (it needs two distinct points); give "
        "the peak explicitly");
  }
  return peak;
}

// Eigenvector of the smallest eigenvalue of a symmetric 3x3 matrix (cyclic Jacobi rotations).
std::array<double, 3> smallest_eigenvector(std::array<std::array<double, 3>, 3> a) {
  std::array<std::array<double, 3>, 3> v{{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}};
  for (int sweep = 0; sweep < 50; ++sweep) {
    double off = std::fabs(a[0][1]) + std::fabs(a[0][2]) + std::fabs(a[1][2]);
    double scale = std::fabs(a[0][0]) + std::fabs(a[1][1]) + std::fabs(a[2][2]);
    if (off <= 1e-15 * scale || off == 0) break;
    for (int p = 0; p < 2; ++p) {
      for (int q = p + 1; q < 3; ++q) {
        if (a[p][q] == 0) continue;
        double theta = (a[q][q] - a[p][p]) / (2 * a[p][q]);
        double t = (theta >= 0 ? 1.0 : -1.0) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < 3; ++k) {  // A <- A J
          double akp = a[k][p], akq = a[k][q];
          a[k][p] = c * akp - s * akq;
          a[k][q] = s * akp + c * akq;
        }
        for (int k = 0; k < 3; ++k) {  // A <- J^T A
          double apk = a[p][k], aqk = a[q][k];
          a[p][k] = c * apk - s * aqk;
          a[q][k] = s * apk + c * aqk;
        }
        for (int k = 0; k < 3; ++k) {
          double vkp = v[k][p], vkq = v[k][q];
          v[k][p] = c * vkp - s * vkq;
          v[k][q] = s * vkp + c * vkq;
        }
      }
    }
  }
  int m = 0;
  for (int k = 1; k < 3; ++k) {
    if (a[k][k] < a[m][m]) m = k;
  }
  return {v[0][m], v[1][m], v[2][m]};
}

std::vector<float> estimate_normals_sorted(const SortedCloud& cloud, const Index& index, size_t k,
                                           size_t threads) {
  const size_t n = cloud.size();
  std::vector<float> normals(3 * n, std::numeric_limits<float>::quiet_NaN());
  if (k < 3) fail("normal estimation needs k >= 3 neighbours, got {}", k);
  for_each_point(n, threads, [&](size_t i) {
    std::vector<uint32_t> idx(k);
    std::vector<double> sq(k);
    size_t found = index.knn(&cloud.xyz[3 * i], k, idx.data(), sq.data());
    if (found < 3) return;  // NaN: D2 falls back to D1 for this point
    std::array<double, 3> mean{0, 0, 0};
    for (size_t j = 0; j < found; ++j) {
      for (int d = 0; d < 3; ++d) mean[d] += cloud.xyz[3 * size_t{idx[j]} + d];
    }
    for (int d = 0; d < 3; ++d) mean[d] /= static_cast<double>(found);
    std::array<std::array<double, 3>, 3> cov{};
    for (size_t j = 0; j < found; ++j) {
      std::array<double, 3> e;
      for (int d = 0; d < 3; ++d) e[d] = cloud.xyz[3 * size_t{idx[j]} + d] - mean[d];
      for (int r = 0; r < 3; ++r) {
        for (int c = 0; c < 3; ++c) cov[r][c] += e[r] * e[c];
      }
    }
    auto v = smallest_eigenvector(cov);
    double norm = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    if (!(norm > 0)) return;
    for (int d = 0; d < 3; ++d) normals[3 * i + d] = static_cast<float>(v[d] / norm);
  });
  return normals;
}

}  // namespace

double geometry_psnr(double mse, double peak) {
  if (mse == 0) return std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(3.0 * peak * peak / mse);
}

double bits_per_point(uint64_t compressed_bytes, uint64_t input_points) {
  if (input_points == 0) fail("bits per point of an empty cloud is undefined");
  return 8.0 * static_cast<double>(compressed_bytes) / static_cast<double>(input_points);
}

std::vector<float> estimate_normals(const PointCloud& cloud, size_t k, size_t threads) {
  cloud.check_consistent();
  check_finite(cloud, "input");
  SortedCloud all;
  all.xyz = cloud.positions;
  all.multiplicity.assign(cloud.size(), 1);
  Index index(all);
  return estimate_normals_sorted(all, index, k, threads);
}

GeometryQuality measure_geometry(const PointCloud& reference, const PointCloud& decoded,
                                 const MetricOptions& options) {
  reference.check_consistent();
  decoded.check_consistent();
  if (reference.size() == 0) fail("reference cloud has no points");
  if (decoded.size() == 0) fail("decoded cloud has no points");
  check_finite(reference, "reference");
  check_finite(decoded, "decoded");
  if (options.normals == NormalSource::kReference && !reference.has_normals()) {
    fail("D2 needs normals, and the reference cloud has none (estimate them, or ask for D1 only)");
  }
  const bool use_reference_normals =
      reference.has_normals() &&
      (options.normals == NormalSource::kReference || options.normals == NormalSource::kAuto);
  const bool estimate = options.normals == NormalSource::kEstimate ||
                        (options.normals == NormalSource::kAuto && !reference.has_normals());

  SortedCloud a =
      sort_and_merge(reference.positions, use_reference_normals ? &reference.normals : nullptr,
                     options.merge_duplicates);
  SortedCloud b = sort_and_merge(decoded.positions, nullptr, options.merge_duplicates);
  Index index_a(a), index_b(b);

  GeometryQuality q;
  q.reference_points = reference.size();
  q.decoded_points = decoded.size();
  q.reference_unique = a.size();
  q.decoded_unique = b.size();
  if (options.peak) {
    if (!(*options.peak > 0) || !std::isfinite(*options.peak)) {
      fail("PSNR peak must be a positive number, got {}", *options.peak);
    }
    q.peak = *options.peak;
    q.peak_rule = "given";
  } else {
    q.peak = max_nearest_neighbour_distance(a, index_a, options.threads);
    q.peak_rule = "max nearest-neighbour distance in the reference";
  }

  if (estimate) {
    a.normals = estimate_normals_sorted(a, index_a, options.normal_estimation_k, options.threads);
    q.normals_used = fmt::format("estimated (PCA, k={})", options.normal_estimation_k);
  } else if (use_reference_normals) {
    q.normals_used = "reference";
  } else {
    q.normals_used = "none";
  }
  q.has_d2 = !a.normals.empty();
  std::vector<float> b_normals;
  if (q.has_d2) {
    b_normals = derive_normals(a, index_a, b, index_b, options.average_normals, options.threads);
  }
  q.reference_to_decoded =
      measure_direction(a, b, index_b, b_normals, options.average_normals, options.threads);
  q.decoded_to_reference =
      measure_direction(b, a, index_a, a.normals, options.average_normals, options.threads);

  const auto& ab = q.reference_to_decoded;
  const auto& ba = q.decoded_to_reference;
  q.d1_mse = std::max(ab.d1_mse, ba.d1_mse);
  q.d1_psnr = geometry_psnr(q.d1_mse, q.peak);
  if (q.has_d2) {
    q.d2_mse = std::max(ab.d2_mse, ba.d2_mse);
    q.d2_psnr = geometry_psnr(q.d2_mse, q.peak);
  }
  q.chamfer.squared_sum = ab.mean_squared_distance + ba.mean_squared_distance;
  q.chamfer.squared_average = q.chamfer.squared_sum / 2;
  q.chamfer.squared_max = std::max(ab.mean_squared_distance, ba.mean_squared_distance);
  q.chamfer.l1_sum = ab.mean_distance + ba.mean_distance;
  q.chamfer.l1_average = q.chamfer.l1_sum / 2;
  return q;
}

PointCloud voxelize(const PointCloud& cloud, int bits) {
  cloud.check_consistent();
  check_finite(cloud, "input");
  if (bits < 1 || bits > 24) fail("voxel grid bits must be in 1..24, got {}", bits);
  const double steps = std::ldexp(1.0, bits) - 1;
  auto box = cloud.bounds();
  const double extent = box.largest_extent();
  const size_t n = cloud.size();
  std::vector<float> grid(3 * n);
  for (size_t i = 0; i < n; ++i) {
    for (int d = 0; d < 3; ++d) {
      double t = extent > 0 ? (static_cast<double>(cloud.positions[3 * i + d]) - box.min[d]) /
                                  extent * steps
                            : 0.0;
      grid[3 * i + d] = static_cast<float>(std::nearbyint(t));  // ties to even
    }
  }
  auto order = lexicographic_order(grid);
  PointCloud out;
  std::vector<uint32_t> kept;
  for (uint32_t i : order) {
    const float* p = &grid[3 * size_t{i}];
    if (!out.positions.empty()) {
      const float* last = &out.positions[out.positions.size() - 3];
      if (p[0] == last[0] && p[1] == last[1] && p[2] == last[2]) continue;
    }
    out.positions.insert(out.positions.end(), p, p + 3);
    kept.push_back(i);
  }
  for (uint32_t i : kept) {
    if (cloud.has_normals()) {
      out.normals.insert(out.normals.end(), &cloud.normals[3 * size_t{i}],
                         &cloud.normals[3 * size_t{i}] + 3);
    }
    if (cloud.has_colors()) {
      out.colors.insert(out.colors.end(), &cloud.colors[3 * size_t{i}],
                        &cloud.colors[3 * size_t{i}] + 3);
    }
  }
  for (const auto& attr : cloud.attributes) {
    formats::ScalarAttribute kept_attr{attr.name, {}};
    kept_attr.values.reserve(kept.size());
    for (uint32_t i : kept) kept_attr.values.push_back(attr.values[i]);
    out.attributes.push_back(std::move(kept_attr));
  }
  return out;
}

}  // namespace torchless::codec
