# Sourced by scripts/test and scripts/bench-reconcile: DuckDB's Python
# package, pinned, under .tools/ (PyPI, no virtualenv, nothing system-wide).
# The reconcile test (tests/reconcile.rs) checks `adclick reconcile --input`
# row for row against DuckDB, and scripts/bench-reconcile times the two.

# 1.5.6: the newest 1.x, the line issue 16 measures against (2.0 is new).
DUCKDB_PIN="1.5.6"

ensure_duckdb() {
    local dir=".tools/duckdb-$DUCKDB_PIN"
    if ! PYTHONPATH="$dir" python3 -c "import duckdb" 2>/dev/null; then
        echo "Installing DuckDB $DUCKDB_PIN into .tools/ (PyPI)…" >&2
        # --target keeps it inside the checkout: no virtualenv, no system packages touched.
        python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
            --root-user-action=ignore --target "$dir" "duckdb==$DUCKDB_PIN" >&2
    fi
    export ADCLICK_DUCKDB_PATH="$PWD/$dir"
}
