# Sourced by scripts/bench-reconcile: PyFlink (apache-flink from PyPI),
# pinned, under .tools/ (pip --target, no virtualenv, nothing system-wide),
# for the Flink SQL column of the recount benchmark
# (scripts/reconcile/flink_recount.py). A benchmark only: ~800 MB and a JVM,
# so scripts/test and CI never source this.

# 2.3.0: the release issue 16's Flink figures were measured with. Flink 2.x
# needs Java 11 or newer on PATH (measured with OpenJDK 17).
PYFLINK_PIN="2.3.0"

# True when the pinned PyFlink is already under .tools/ (nothing installed).
pyflink_importable() {
    PYTHONPATH=".tools/pyflink-$PYFLINK_PIN" python3 -c "import pyflink.table" 2>/dev/null \
        && command -v java >/dev/null
}

ensure_pyflink() {
    local dir=".tools/pyflink-$PYFLINK_PIN"
    if ! PYTHONPATH="$dir" python3 -c "import pyflink.table" 2>/dev/null; then
        echo "Installing apache-flink $PYFLINK_PIN into .tools/ (PyPI, ~800 MB)…" >&2
        # --target keeps it inside the checkout: no virtualenv, no system packages touched.
        python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
            --root-user-action=ignore --target "$dir" "apache-flink==$PYFLINK_PIN" >&2
    fi
    if ! command -v java >/dev/null; then
        echo "PyFlink needs Java 11 or newer on PATH (java not found)" >&2
        return 1
    fi
    export ADCLICK_PYFLINK_PATH="$PWD/$dir"
}
