#!/usr/bin/env bash
# What CI can check of android_demo without the Android SDK, Gradle plugin or LiteRT AAR:
#   1. JUnit 4 tests of the plain-Java core (app/src/main/java/org/tfkd/demo/core);
#   2. the whole app compiled as Java 8 against Android's android.jar (API 23) plus
#      compile-only stubs of the LiteRT Java API (ci/stubs, never packaged);
#   3. an APK assembled with Debian's aapt, dx, zipalign and apksigner, signed with a throwaway
#      key and verified. It is STRUCTURE-CHECKED, NOT RUNNABLE: it has no LiteRT runtime inside.
# The Python cross-check of the preprocessing is tests/test_android_demo.py.
# Any missing tool or package is an error, never a skip.
set -euo pipefail

HERE=$(cd "$(dirname "$0")/.." && pwd)
CACHE="$HERE/ci/.cache"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
fail() { echo "android_demo/ci/check.sh: $*" >&2; exit 1; }

# --- tools from the machine's own Debian suite ----------------------------------------------
need=()
command -v javac >/dev/null || need+=(default-jdk-headless)
[ -f /usr/share/java/junit4.jar ] || need+=(junit4)
command -v aapt >/dev/null || need+=(aapt)
command -v zipalign >/dev/null || need+=(zipalign)
command -v apksigner >/dev/null || need+=(apksigner)
if [ ${#need[@]} -gt 0 ]; then
  echo "Installing ${need[*]} with apt-get"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -q "${need[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q "${need[@]}"; } \
    || fail "could not install ${need[*]} with apt-get; install them and rerun."
fi

# --- android.jar (API 23) and dx from Debian bullseye, with an apt configuration of their own --
ANDROID_JAR="$CACHE/x/usr/lib/android-sdk/platforms/android-23/android.jar"
DX_JAR="$CACHE/x/usr/lib/android-sdk/build-tools/debian/lib/dx.jar"
if [ ! -f "$ANDROID_JAR" ] || [ ! -f "$DX_JAR" ]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || fail "no Debian mirror in /etc/apt/sources.list(.d); cannot fetch libandroid-23-java and dalvik-exchange."
  apt_dir="$CACHE/apt"
  rm -rf "$apt_dir" && mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror bullseye main" > "$apt_dir/sources.list"
  opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir" -o "Dir::Cache::Archives=$apt_dir/archives"
        -o "APT::Sandbox::User=root")
  apt-get "${opts[@]}" update -q >/dev/null \
    || fail "could not read Debian bullseye from $mirror (needed for android.jar API 23 and dx)."
  (cd "$apt_dir" && apt-get "${opts[@]}" download libandroid-23-java dalvik-exchange >/dev/null) \
    || fail "could not download libandroid-23-java and dalvik-exchange from $mirror bullseye."
  rm -rf "$CACHE/x" && mkdir -p "$CACHE/x"
  for deb in "$apt_dir"/*.deb; do dpkg-deb -x "$deb" "$CACHE/x"; done
  [ -f "$ANDROID_JAR" ] && [ -f "$DX_JAR" ] || fail "the bullseye packages did not contain android.jar and dx.jar."
fi

CORE="$HERE/app/src/main/java/org/tfkd/demo/core"
APP="$HERE/app/src/main/java/org/tfkd/demo"
MAIN="$HERE/app/src/main"

# --- 1. JUnit tests of the plain-Java core ---------------------------------------------------
mkdir -p "$OUT/test"
javac --release 8 -Xlint:all -Werror -d "$OUT/test" -cp /usr/share/java/junit4.jar \
  "$CORE"/*.java "$HERE"/app/src/test/java/org/tfkd/demo/core/*.java
java -Dtfkd.assets="$HERE/app/src/main/assets" \
  -cp "$OUT/test:/usr/share/java/junit4.jar:/usr/share/java/hamcrest-core.jar" \
  org.junit.runner.JUnitCore org.tfkd.demo.core.CoreTest

# The core must stay free of Android and org.json, or it could not be tested here.
if grep -rlE '^import (android|org\.json)\.' "$CORE"; then
  fail "the plain-Java core imports android.* or org.json."
fi

# --- 2. the app compiled as Java 8 against android.jar + LiteRT stubs ------------------------
manifest="$OUT/AndroidManifest.xml"
sed 's|<manifest xmlns:android="http://schemas.android.com/apk/res/android">|<manifest xmlns:android="http://schemas.android.com/apk/res/android" package="org.tfkd.demo">|' \
  "$MAIN/AndroidManifest.xml" > "$manifest"
grep -q 'package="org.tfkd.demo"' "$manifest" || fail "could not set the package in the manifest."
mkdir -p "$OUT/gen" "$OUT/stubs" "$OUT/classes"
aapt package -f -m -J "$OUT/gen" -M "$manifest" -S "$MAIN/res" -I "$ANDROID_JAR"
javac --release 8 -d "$OUT/stubs" $(find "$HERE/ci/stubs" -name '*.java')
javac -source 8 -target 8 -Xlint:-options -Xlint:deprecation -Werror -encoding UTF-8 \
  -bootclasspath "$ANDROID_JAR" -cp "$OUT/stubs" -d "$OUT/classes" \
  "$CORE"/*.java "$APP"/*.java $(find "$OUT/gen" -name '*.java')
[ ! -d "$OUT/classes/org/tensorflow" ] || fail "LiteRT stubs ended up among the app's classes."

# --- 3. an APK: aapt + dx + zipalign + apksigner (throwaway key) ------------------------------
ls "$MAIN/assets"/*.tflite >/dev/null 2>&1 || fail "no .tflite in $MAIN/assets (tools/android_export.py fills it)."
java -jar "$DX_JAR" --dex --min-sdk-version=24 --output="$OUT/classes.dex" "$OUT/classes"
aapt package -f -M "$manifest" -S "$MAIN/res" -A "$MAIN/assets" -I "$ANDROID_JAR" -0 tflite \
  --min-sdk-version 24 --target-sdk-version 35 --version-code 1 --version-name 0.1.0 \
  -F "$OUT/unaligned.apk"
(cd "$OUT" && aapt add unaligned.apk classes.dex >/dev/null)
zipalign -f -p 4 "$OUT/unaligned.apk" "$OUT/aligned.apk"
keytool -genkeypair -keystore "$OUT/throwaway.jks" -storepass throwaway -keypass throwaway \
  -alias ci -keyalg RSA -keysize 2048 -validity 1 -dname "CN=tfkd CI throwaway" >/dev/null 2>&1
apksigner sign --ks "$OUT/throwaway.jks" --ks-pass pass:throwaway --key-pass pass:throwaway \
  --out "$OUT/tfkd-demo.apk" "$OUT/aligned.apk"

apksigner verify "$OUT/tfkd-demo.apk" || fail "apksigner verify failed."
zipalign -c -p 4 "$OUT/tfkd-demo.apk" || fail "the APK is not 4-byte aligned."
badging=$(aapt dump badging "$OUT/tfkd-demo.apk")
echo "$badging" | grep -q "package: name='org.tfkd.demo'" || fail "wrong package in the APK."
echo "$badging" | grep -q "sdkVersion:'24'" || fail "the APK's minSdk is not 24."
echo "$badging" | grep -q "launchable-activity: name='org.tfkd.demo.MainActivity'" \
  || fail "MainActivity is not the launcher activity."
aapt dump xmltree "$OUT/tfkd-demo.apk" AndroidManifest.xml | grep -q "org.tfkd.demo.BenchmarkActivity\|\.BenchmarkActivity" \
  || fail "BenchmarkActivity is missing from the manifest."
for asset in model_card.json labels.txt sample.png; do
  unzip -l "$OUT/tfkd-demo.apk" "assets/$asset" >/dev/null || fail "assets/$asset is not in the APK."
done
stored=$(unzip -v "$OUT/tfkd-demo.apk" | awk '/assets\/.*\.tflite$/ {print $2}')
[ -n "$stored" ] && ! echo "$stored" | grep -qv '^Stored$' \
  || fail "the .tflite in the APK is compressed ($stored); it must be stored to be memory-mapped."
echo "android_demo: core JUnit tests passed; app compiled (Java 8, android.jar API 23 + LiteRT stubs);"
echo "android_demo: APK assembled, signed and verified — structure-checked, not runnable (no LiteRT runtime inside)."
