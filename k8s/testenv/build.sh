#!/usr/bin/env bash
# Build the binaries of the test control plane from the Go module proxy, once.
#
#   etcd                     go.etcd.io/etcd/server/v3
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#                            k8s.io/kubernetes (staging modules replaced by v0.X.Y)
#   kwok                     sigs.k8s.io/kwok/cmd/kwok
#   fluid                    upstream Fluid's CRDs: github.com/fluid-cloudnative/fluid@FLUID_VERSION,
#                            charts/fluid/fluid/crds/*.yaml and docs/en/samples/*.md copied to
#                            <cache>/fluid-<FLUID_VERSION>/{crds,samples}
#
# Output: $FLUIDCACHE_K8S_BIN (default ${XDG_CACHE_HOME:-$HOME/.cache}/fluidcache/k8s-<K8S_VERSION>/bin).
# Idempotent: a binary already there (and its version stamp matching) is skipped.
# Needs: Go (>= 1.23) and the Go module proxy. Nothing else.
# Knobs: FLUIDCACHE_K8S_BIN, GOFLAGS (default -p=2), NICE (default 10), ONLY="etcd kwok ..." to build a subset.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

root="${XDG_CACHE_HOME:-$HOME/.cache}/fluidcache/k8s-${K8S_VERSION}"
bin="${FLUIDCACHE_K8S_BIN:-$root/bin}"
src="$(dirname "$bin")/src"
mkdir -p "$bin" "$src"

export GOFLAGS="${GOFLAGS:--p=2}"
export CGO_ENABLED=0
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
nice_n="${NICE:-10}"
only="${ONLY:-etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok fluid}"

command -v go >/dev/null || { echo "build.sh: go not found on PATH" >&2; exit 1; }

k8s_minor="${K8S_VERSION#v1.}"            # 32.13
staging_version="v0.${k8s_minor}"         # v0.32.13
k8s_major_minor="${K8S_VERSION%.*}"       # v1.32

want() { [[ " $only " == *" $1 "* ]]; }

# built NAME STAMP -> true if $bin/NAME exists and was built from STAMP
built() { [[ -x "$bin/$1" && -f "$bin/.$1.version" && "$(cat "$bin/.$1.version")" == "$2" ]]; }

timed_build() { # NAME STAMP MODDIR PKG LDFLAGS
  local name=$1 stamp=$2 dir=$3 pkg=$4 ldflags=$5
  if built "$name" "$stamp"; then
    echo "[build] $name $stamp: already built, skipped"
    return
  fi
  local t0=$SECONDS
  echo "[build] $name $stamp: building $pkg ..."
  (cd "$dir" && nice -n "$nice_n" go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  echo "$stamp" > "$bin/.$name.version"
  echo "[build] $name $stamp: built in $((SECONDS - t0))s"
}

# A throwaway main module per upstream project, so each dependency graph stays its own.
prepare_module() { # DIR  (go.mod content on stdin)
  mkdir -p "$1"
  local new; new="$(cat)"
  if [[ ! -f "$1/go.mod" || "$(cat "$1/go.mod.in" 2>/dev/null)" != "$new" ]]; then
    rm -f "$1/go.mod" "$1/go.sum"
    printf '%s\n' "$new" > "$1/go.mod.in"
    printf '%s\n' "$new" > "$1/go.mod"
  fi
}

fetch() { # DIR PKG@VERSION...  (resolve requirements, fill go.sum)
  local dir=$1; shift
  local t0=$SECONDS
  local log="$dir/go-get.log"
  if ! (cd "$dir" && nice -n "$nice_n" go get "$@") >"$log" 2>&1; then
    grep -v '^go: \(downloading\|added\|upgraded\|finding\)' "$log" >&2 || true
    echo "build.sh: 'go get $*' failed (full log: $log)" >&2
    exit 1
  fi
  echo "[build] resolved $* in $((SECONDS - t0))s"
}

# --- etcd ---------------------------------------------------------------------
if want etcd && ! built etcd "$ETCD_VERSION"; then
  d="$src/etcd"
  prepare_module "$d" <<EOT
module fluidcache.local/k8s-testenv/etcd

go 1.23
EOT
  fetch "$d" "go.etcd.io/etcd/server/v3@${ETCD_VERSION}"
fi
want etcd && timed_build etcd "$ETCD_VERSION" "$src/etcd" go.etcd.io/etcd/server/v3 ""

# --- kubernetes ---------------------------------------------------------------
k8s_bins=()
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  want "$b" && k8s_bins+=("$b")
done
if ((${#k8s_bins[@]})); then
  d="$src/kubernetes"
  need_fetch=0
  for b in "${k8s_bins[@]}"; do built "$b" "$K8S_VERSION" || need_fetch=1; done
  if ((need_fetch)); then
    # Staging modules: every "k8s.io/X => ./staging/src/k8s.io/X" of kubernetes' own go.mod.
    gomod="$(cd "$src" && go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
    [[ -f "$gomod" ]] || { echo "build.sh: could not fetch go.mod of k8s.io/kubernetes@${K8S_VERSION}" >&2; exit 1; }
    mapfile -t staging < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod" | sort -u)
    ((${#staging[@]})) || { echo "build.sh: no staging modules found in $gomod" >&2; exit 1; }
    {
      echo "module fluidcache.local/k8s-testenv/kubernetes"
      echo
      echo "go 1.23"
      echo
      echo "require k8s.io/kubernetes ${K8S_VERSION}"
      echo
      echo "replace ("
      for m in "${staging[@]}"; do echo "	$m => $m ${staging_version}"; done
      echo ")"
    } | prepare_module "$d"
    pkgs=()
    for b in "${k8s_bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b@${K8S_VERSION}"); done
    fetch "$d" "${pkgs[@]}"
  fi
  minor="${k8s_major_minor#v1.}"
  ld=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=${K8S_VERSION} -X $p.gitMajor=1 -X $p.gitMinor=${minor}"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  for b in "${k8s_bins[@]}"; do
    timed_build "$b" "$K8S_VERSION" "$d" "k8s.io/kubernetes/cmd/$b" "$ld"
  done
fi

# --- kwok ---------------------------------------------------------------------
if want kwok && ! built kwok "$KWOK_VERSION"; then
  d="$src/kwok"
  prepare_module "$d" <<EOT
module fluidcache.local/k8s-testenv/kwok

go 1.23
EOT
  fetch "$d" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
fi
want kwok && timed_build kwok "$KWOK_VERSION" "$src/kwok" sigs.k8s.io/kwok/cmd/kwok \
  "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION}"

# --- upstream Fluid's CRDs (not built: the module's chart files, copied out of the module cache) --
if want fluid; then
  crds="$(dirname "$bin")/fluid-${FLUID_VERSION}/crds"
  samples="$(dirname "$crds")/samples"
  if [[ -f "$crds/.version" && "$(cat "$crds/.version")" == "$FLUID_VERSION" ]]; then
    echo "[build] fluid ${FLUID_VERSION} CRDs: already fetched, skipped"
  else
    t0=$SECONDS
    dir="$(cd "$src" && go mod download -json "github.com/fluid-cloudnative/fluid@${FLUID_VERSION}" \
      | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
    [[ -d "$dir/charts/fluid/fluid/crds" ]] || {
      echo "build.sh: github.com/fluid-cloudnative/fluid@${FLUID_VERSION} has no charts/fluid/fluid/crds" >&2
      exit 1
    }
    rm -rf "$crds" "$samples" && mkdir -p "$crds" "$samples"
    cp "$dir"/charts/fluid/fluid/crds/*.yaml "$crds/"
    cp "$dir"/docs/en/samples/*.md "$samples/"
    echo "$FLUID_VERSION" > "$crds/.version"
    echo "[build] fluid ${FLUID_VERSION} CRDs: $(ls "$crds" | wc -l) files and $(ls "$samples" | wc -l) sample docs fetched in $((SECONDS - t0))s"
  fi
fi

echo "[build] binaries in $bin:"
ls -l "$bin" | sed 1d
du -sh "$bin"
