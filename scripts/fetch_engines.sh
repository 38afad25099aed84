#!/usr/bin/env bash
# Pinned JVM engines (Apache Kafka, ...): fetch them from Maven Central into a cache outside git,
# verify every jar's sha256 against jvm/engines.lock, print an engine's classpath, regenerate the lock.
#
#   scripts/fetch_engines.sh [SECTION...]         fetch + verify the lock's artifacts (all sections, or
#                                                 these); with everything cached: no Maven, no network
#   scripts/fetch_engines.sh --classpath SECTION  fetch + verify SECTION, then print its classpath
#   scripts/fetch_engines.sh --lock               resolve jvm/engines.in (roots and their transitive
#                                                 runtime dependencies) into jvm/engines.lock
#
# The lock has one line per jar: SECTION GROUP:ARTIFACT:VERSION:TYPE[:CLASSIFIER] SHA256. A jar whose
# sha256 differs from the lock fails the fetch with one line naming the artifact; nothing unverified
# is ever placed in the cache. Settings:
#   CTPIPE_ENGINES_DIR  cache of verified jars, one folder per section
#                       (default ${XDG_CACHE_HOME:-$HOME/.cache}/ctpipe/engines)
#   CTPIPE_MAVEN_REPO   Maven's local repository (default ${XDG_CACHE_HOME:-$HOME/.cache}/ctpipe/m2-repository)
#   CTPIPE_ENGINES_LOCK, CTPIPE_ENGINES_IN  the lock and its roots (default jvm/engines.lock, jvm/engines.in)
#   MVN                 Maven command (default mvn)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_HOME="${XDG_CACHE_HOME:-$HOME/.cache}/ctpipe"
ENGINES_DIR="${CTPIPE_ENGINES_DIR:-$CACHE_HOME/engines}"
MAVEN_REPO="${CTPIPE_MAVEN_REPO:-$CACHE_HOME/m2-repository}"
LOCK="${CTPIPE_ENGINES_LOCK:-$REPO/jvm/engines.lock}"
ROOTS="${CTPIPE_ENGINES_IN:-$REPO/jvm/engines.in}"
MVN="${MVN:-mvn}"
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1
STAGING=()  # staging folders of this run, removed on exit whatever happens
trap 'for d in "${STAGING[@]}"; do rm -rf "$d"; done' EXIT

die() { echo "fetch_engines.sh: $*" >&2; exit 1; }
note() { echo "fetch_engines.sh: $*" >&2; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

need_mvn() {
  command -v "$MVN" >/dev/null 2>&1 || die "Maven ($MVN) not found; install it (Debian: apt-get install maven) or set MVN"
  command -v java >/dev/null 2>&1 || die "java not found; install a JDK 17 (Debian: apt-get install openjdk-17-jdk-headless)"
}

# coord_xml G:A:V[:TYPE[:CLASSIFIER]] [nodeps|exclude=GROUP]: a <dependency> element.
coord_xml() {
  local g a v t c
  IFS=: read -r g a v t c <<<"$1"
  [[ -n "$g" && -n "$a" && -n "$v" ]] || die "bad coordinates '$1' (want GROUP:ARTIFACT:VERSION[:TYPE[:CLASSIFIER]])"
  printf '    <dependency><groupId>%s</groupId><artifactId>%s</artifactId><version>%s</version>' "$g" "$a" "$v"
  printf '<type>%s</type>' "${t:-jar}"
  [[ -n "$c" ]] && printf '<classifier>%s</classifier>' "$c"
  [[ "${2:-}" == nodeps ]] && printf '<exclusions><exclusion><groupId>*</groupId><artifactId>*</artifactId></exclusion></exclusions>'
  [[ "${2:-}" == exclude=* ]] && printf '<exclusions><exclusion><groupId>%s</groupId><artifactId>*</artifactId></exclusion></exclusions>' "${2#exclude=}"
  printf '</dependency>\n'
}

# write_pom FILE NAME < lines "COORD [nodeps]"
write_pom() {
  local file="$1" name="$2" coord flag
  {
    echo '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
    echo "  <groupId>ctpipe.engines</groupId><artifactId>$name</artifactId><version>0</version><packaging>pom</packaging>"
    echo '  <dependencies>'
    while read -r coord flag; do coord_xml "$coord" "$flag"; done
    echo '  </dependencies>'
    echo '</project>'
  } >"$file"
}

run_mvn() {  # run_mvn LOGFILE ARGS...: Maven, quiet; on failure the log tail and a one-line error
  local log="$1"; shift
  if ! "$MVN" -B -q -C -Dmaven.repo.local="$MAVEN_REPO" "$@" >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "Maven failed ($MVN $*); full log: $log"
  fi
}

# file_name COORD: the cached file name, unique per coordinates (group.artifact-version[-classifier].type).
file_name() {
  local g a v t c
  IFS=: read -r g a v t c <<<"$1"
  echo "$g.$a-$v${c:+-$c}.${t:-jar}"
}

# repo_path COORD: where Maven's repository layout puts the artifact, relative to the layout root.
repo_path() {
  local g a v t c
  IFS=: read -r g a v t c <<<"$1"
  echo "${g//.//}/$a/$v/$a-$v${c:+-$c}.${t:-jar}"
}

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

lock_lines() {  # lock_lines [SECTION]: "SECTION COORD SHA" lines (comments dropped)
  [[ -f "$LOCK" ]] || die "no lock at $LOCK; generate it with 'make engines-lock'"
  awk -v want="${1:-}" '!/^[[:space:]]*(#|$)/ && (want == "" || $1 == want) { print $1, $2, $3 }' "$LOCK"
}

sections() { lock_lines | awk '{ print $1 }' | awk '!seen[$0]++'; }

# entries SECTION: "COORD SHA FILE" per lock line of SECTION (FILE: the cached file name).
entries() {
  lock_lines "$1" | awk '{
    n = split($2, c, ":")
    name = c[1] "." c[2] "-" c[3] (n >= 5 && c[5] != "" ? "-" c[5] : "") "." (n >= 4 && c[4] != "" ? c[4] : "jar")
    print $2, $3, name }'
}

# fetch SECTION: make $ENGINES_DIR/SECTION hold exactly the lock's jars of SECTION, each verified.
fetch() {
  local section="$1" dest="$ENGINES_DIR/$1" coord sha name line
  local -a lines=() missing=() present=()
  [[ -f "$LOCK" ]] || die "no lock at $LOCK; generate it with 'make engines-lock'"
  mapfile -t lines < <(entries "$section")
  [[ ${#lines[@]} -gt 0 ]] || die "section '$section' is not in $LOCK (sections: $(sections | tr '\n' ' '))"
  mkdir -p "$dest"
  for line in "${lines[@]}"; do
    read -r coord sha name <<<"$line"
    [[ "$sha" =~ ^[0-9a-f]{64}$ ]] || die "lock entry '$coord' in $LOCK has no sha256; regenerate with 'make engines-lock'"
    [[ -f "$dest/$name" ]] && present+=("$name")
  done
  # One sha256sum over every cached jar; an entry is missing unless its file hashes to the lock's value.
  local hashes=""
  if [[ ${#present[@]} -gt 0 ]]; then hashes="$(cd "$dest" && sha256sum -- "${present[@]}")"; fi
  mapfile -t missing < <(printf '%s\n' "${lines[@]}" | awk -v have="$hashes" '
    BEGIN { n = split(have, h, "\n"); for (i = 1; i <= n; i++) { split(h[i], f, "  "); ok[f[2] " " f[1]] = 1 } }
    !(($3 " " $2) in ok) { print $1, $2 }')
  if [[ ${#missing[@]} -gt 0 ]]; then
    need_mvn
    note "$section: fetching ${#missing[@]} of ${#lines[@]} artifacts with Maven (local repository $MAVEN_REPO)"
    local work; work="$(mktemp -d "$ENGINES_DIR/.fetch-$section.XXXXXX")"
    STAGING+=("$work")
    printf '%s\n' "${missing[@]}" | awk '{ print $1, "nodeps" }' | write_pom "$work/pom.xml" "$section"
    run_mvn "$ENGINES_DIR/.fetch-$section.log" -f "$work/pom.xml" "$DEP_PLUGIN:copy-dependencies" \
      -DoutputDirectory="$work/jars" -Dmdep.useRepositoryLayout=true -DincludeScope=runtime
    local item got src
    for item in "${missing[@]}"; do  # verify everything before placing anything
      read -r coord sha <<<"$item"
      src="$work/jars/$(repo_path "$coord")"
      [[ -f "$src" ]] || die "$section artifact $coord: Maven reported success but wrote no $src; see $ENGINES_DIR/.fetch-$section.log"
      got="$(sha_of "$src")"
      if [[ "$got" != "$sha" ]]; then
        die "sha256 mismatch for $section artifact $coord: lock $LOCK says $sha, the downloaded jar has $got" \
            "(a tampered or changed artifact; if the lock is the stale side, regenerate it with 'make engines-lock'," \
            "else delete $MAVEN_REPO/$(repo_path "$coord") and fetch again)"
      fi
    done
    for item in "${missing[@]}"; do
      read -r coord sha <<<"$item"
      mv -f "$work/jars/$(repo_path "$coord")" "$dest/$(file_name "$coord")"
    done
    rm -rf "$work"
  fi
  # Drop files the lock no longer names (an older version), so the folder is exactly the lock.
  local keep f; keep="$(printf '%s\n' "${lines[@]}" | awk '{ print $3 }')"
  for f in "$dest"/* "$dest"/.[!.]*; do
    [[ -e "$f" ]] || continue
    grep -qxF "${f##*/}" <<<"$keep" || rm -rf "$f"
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    note "$section: ${#lines[@]} artifacts verified in $dest (cached, no network)"
  else
    note "$section: ${#lines[@]} artifacts verified in $dest"
  fi
}

classpath() {  # classpath SECTION: colon-separated jars in lock order
  entries "$1" | awk -v d="$ENGINES_DIR/$1" '{ printf "%s%s/%s", (NR > 1 ? ":" : ""), d, $3 } END { print "" }'
}

# lock: resolve each section's roots with Maven and write the lock (atomically).
lock() {
  need_mvn
  [[ -f "$ROOTS" ]] || die "no engine roots at $ROOTS"
  local work; work="$(mktemp -d)"
  STAGING+=("$work")
  local section
  {
    echo "# Generated by 'make engines-lock' (scripts/fetch_engines.sh --lock) from jvm/engines.in; do not edit."
    echo "# Every jar of every engine, transitive runtime dependencies included, with its sha256."
    echo "# SECTION  GROUP:ARTIFACT:VERSION:TYPE[:CLASSIFIER]  SHA256"
  } >"$work/lock"
  for section in $(awk '!/^[[:space:]]*(#|$)/ { print $1 }' "$ROOTS" | awk '!seen[$0]++'); do
    [[ "$section" =~ ^[a-z0-9][a-z0-9._-]*$ ]] || die "section name '$section' in $ROOTS: use lower-case letters, digits, . _ -"
    awk -v s="$section" '!/^[[:space:]]*(#|$)/ && $1 == s { print $2, $3 }' "$ROOTS" \
      | write_pom "$work/$section.pom" "$section"
    run_mvn "$work/$section.log" -f "$work/$section.pom" "$DEP_PLUGIN:list" -DincludeScope=runtime \
      -DoutputAbsoluteArtifactFilename=true -DoutputFile="$work/$section.list"
    local line g a t c v path
    local -a f
    while read -r line; do
      line="${line%% -- *}"
      IFS=: read -r -a f <<<"$line"
      case ${#f[@]} in
        6) g="${f[0]}" a="${f[1]}" t="${f[2]}" c="" v="${f[3]}" path="${f[5]}" ;;
        7) g="${f[0]}" a="${f[1]}" t="${f[2]}" c="${f[3]}" v="${f[4]}" path="${f[6]}" ;;
        *) continue ;;
      esac
      [[ -f "$path" ]] || die "Maven listed $line but $path does not exist"
      printf '%s  %s  %s\n' "$section" "$g:$a:$v:$t${c:+:$c}" "$(sha_of "$path")"
    done < <(grep -E '^ +[^ ]+:[^ ]+' "$work/$section.list") | sort -k2,2 >>"$work/lock"
    note "$section: resolved $(awk -v s="$section" '$1 == s' "$work/lock" | wc -l) artifacts"
  done
  mv -f "$work/lock" "$LOCK"
  note "wrote $LOCK"
}

case "${1:-}" in
  --lock) [[ $# -eq 1 ]] || usage; lock ;;
  --classpath)
    [[ $# -eq 2 ]] || usage
    mkdir -p "$ENGINES_DIR"
    exec 9>"$ENGINES_DIR/.fetch.lock"; flock 9  # one fetch at a time per cache
    fetch "$2"
    classpath "$2" ;;
  -h|--help) usage ;;
  -*) usage ;;
  *)
    mkdir -p "$ENGINES_DIR"
    exec 9>"$ENGINES_DIR/.fetch.lock"; flock 9
    if [[ $# -eq 0 ]]; then set -- $(sections); fi
    for s in "$@"; do fetch "$s"; done ;;
esac
