# Sourced by scripts/supply-chain: makes sure the pinned cargo-deny can be
# run, building it from crates.io (`cargo install --locked`) when missing.
# It is built once per machine into a cache outside the checkout, because
# CI starts from a fresh clone each time and the build takes minutes
# (about 8 on two cores); `.tools/` would lose it on every run.

CARGO_DENY_PIN="0.20.2"

ensure_cargo_deny() {
    local root="${ADCLICK_TOOLS_CACHE:-$HOME/.cache/adclick-tools}/cargo-deny-$CARGO_DENY_PIN"
    CARGO_DENY="$root/bin/cargo-deny"
    if "$CARGO_DENY" --version 2>/dev/null | grep -q " $CARGO_DENY_PIN\$"; then
        return 0
    fi
    if command -v cargo-deny >/dev/null 2>&1 &&
        cargo-deny --version 2>/dev/null | grep -q " $CARGO_DENY_PIN\$"; then
        CARGO_DENY="$(command -v cargo-deny)"
        return 0
    fi
    echo "Building cargo-deny $CARGO_DENY_PIN into $root (crates.io, once per machine)…" >&2
    cargo install --quiet --locked cargo-deny --version "$CARGO_DENY_PIN" --root "$root" >&2
    if ! "$CARGO_DENY" --version >/dev/null 2>&1; then
        echo "error: installed cargo-deny $CARGO_DENY_PIN, but $CARGO_DENY cannot be run" >&2
        return 1
    fi
}
