//! Who may query: optional bearer tokens for the REST API.
//!
//! The configuration holds only SHA-256 digests of the tokens
//! (`api_token_sha256`), so a leaked config file or Secret does not leak a
//! usable token. A request's token is hashed and compared with every digest
//! in constant time (no early exit on the first match or the first differing
//! byte), so response timing says nothing about how close a guess was.
//!
//! The probes (`/healthz`, `/readyz`), the API's own description
//! (`/openapi.json`, `/docs`) and the status page's HTML (`/`) are always open: orchestrators and browsers
//! call them without a token, and they reveal no counts. `/metrics` is open
//! unless `metrics_require_token` is set. Every other path, including ones
//! added later and unknown ones, needs a token once any is configured:
//! closed by default.

use super::params::{ApiError, ErrorCode};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Paths answered without a token whatever the configuration.
/// The status page (`/`) holds no data: it asks for a token itself and
/// sends it with its requests.
pub const OPEN_PATHS: [&str; 5] = ["/", "/healthz", "/readyz", "/openapi.json", "/docs"];

/// The path whose protection `metrics_require_token` decides.
pub const METRICS_PATH: &str = "/metrics";

/// The name of the bearer scheme in the OpenAPI document.
pub const SECURITY_SCHEME: &str = "bearer_token";

/// The SHA-256 digest of an accepted token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    /// The digest of a token as presented (its exact bytes).
    pub fn of(token: &[u8]) -> TokenDigest {
        TokenDigest(Sha256::digest(token).into())
    }

    /// Reads 64 hex digits (either case), as `sha256sum` prints them.
    pub fn parse_hex(text: &str) -> Result<TokenDigest, String> {
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            // The value itself is not echoed: it may be a token pasted by mistake.
            return Err(format!(
                "a value of {} characters is not a SHA-256 digest (64 hex digits); \
                 store the digest of a token, not the token: `adclick token-hash` makes it",
                text.chars().count()
            ));
        }
        let mut digest = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|e| e.to_string())?;
            digest[i] = u8::from_str_radix(hex, 16).map_err(|e| e.to_string())?;
        }
        Ok(TokenDigest(digest))
    }

    /// The digest as 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Why a token given to `adclick token-hash` cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Nothing but a line end.
    #[error("the token is empty")]
    Empty,
    /// A character an `Authorization: Bearer` header cannot carry as one token.
    #[error("a token must be visible ASCII characters only (no spaces, no control characters)")]
    NotVisibleAscii,
}

impl TokenDigest {
    /// The digest of a token read as a line (one trailing `\n` or `\r\n`
    /// dropped, as `echo` and editors add it): what `adclick token-hash`
    /// prints. Refuses what no request could present.
    pub fn of_token_line(input: &[u8]) -> Result<TokenDigest, TokenError> {
        let token = input.strip_suffix(b"\n").unwrap_or(input);
        let token = token.strip_suffix(b"\r").unwrap_or(token);
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotVisibleAscii);
        }
        Ok(TokenDigest::of(token))
    }
}

/// Who may call what: the accepted token digests (none: the API is open)
/// and whether `/metrics` needs a token too.
#[derive(Clone, Default)]
pub struct ApiAccess {
    digests: Vec<TokenDigest>,
    metrics_require_token: bool,
}

impl std::fmt::Debug for ApiAccess {
    /// Counts the digests rather than printing them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAccess")
            .field("tokens", &self.digests.len())
            .field("metrics_require_token", &self.metrics_require_token)
            .finish()
    }
}

impl ApiAccess {
    /// No tokens: every path is open (the default, and the demo's).
    pub fn open() -> ApiAccess {
        ApiAccess::default()
    }

    /// Tokens with these digests are accepted; with none, the API is open.
    pub fn with_tokens(digests: Vec<TokenDigest>, metrics_require_token: bool) -> ApiAccess {
        ApiAccess {
            digests,
            metrics_require_token,
        }
    }

    /// Whether any token is configured (and so protected paths need one).
    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether a request to `path` must carry a known token.
    pub fn protects(&self, path: &str) -> bool {
        if !self.enabled() || OPEN_PATHS.contains(&path) {
            return false;
        }
        path != METRICS_PATH || self.metrics_require_token
    }

    /// Checks the `Authorization` header of a request to a protected path:
    /// missing or not `Bearer <token>` is a 401, a token whose digest is not
    /// configured a 403.
    pub fn check(&self, authorization: Option<&HeaderValue>) -> Result<(), ApiError> {
        let token = authorization
            .and_then(|value| bearer_token(value.as_bytes()))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::Unauthorized,
                    "this endpoint needs a token: send `Authorization: Bearer <token>`",
                )
            })?;
        let presented = TokenDigest::of(token);
        // Every digest is compared, whatever the earlier ones gave.
        let known = self
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |known, digest| {
                known | digest.0.ct_eq(&presented.0)
            });
        if bool::from(known) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                "the token is not one this service accepts",
            ))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` value (RFC 6750: the
/// scheme in any case, one space, a non-empty token of visible characters).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = token.trim_ascii();
    if token.is_empty() || !token.iter().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    Some(token)
}

/// Middleware: refuses a request to a protected path without a known token.
/// The 401 carries `WWW-Authenticate: Bearer`, as RFC 6750 asks.
pub async fn require_token(
    State(access): State<Arc<ApiAccess>>,
    request: Request,
    next: Next,
) -> Response {
    if !access.protects(request.uri().path()) {
        return next.run(request).await;
    }
    match access.check(request.headers().get(header::AUTHORIZATION)) {
        Ok(()) => next.run(request).await,
        Err(error) => {
            let challenge = error.code == ErrorCode::Unauthorized;
            let mut response = error.into_response();
            if challenge {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"adclick\""),
                );
            }
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(tokens: &[&str], metrics: bool) -> ApiAccess {
        ApiAccess::with_tokens(
            tokens
                .iter()
                .map(|t| TokenDigest::of(t.as_bytes()))
                .collect(),
            metrics,
        )
    }

    fn header(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    #[test]
    fn digests_are_sha256_as_sha256sum_prints_them() {
        // printf %s secret | sha256sum
        let want = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b";
        assert_eq!(TokenDigest::of(b"secret").to_hex(), want);
        assert_eq!(
            TokenDigest::parse_hex(&want.to_uppercase()).unwrap(),
            TokenDigest::of(b"secret")
        );
        for bad in [
            "",
            "secret",
            &want[1..],
            &format!("{want}0"),
            &want.replace('2', "g"),
        ] {
            let err = TokenDigest::parse_hex(bad).unwrap_err();
            assert!(err.contains("64 hex digits"), "{bad}: {err}");
            assert!(
                bad.is_empty() || !err.contains(bad),
                "echoes the value: {err}"
            );
        }
    }

    #[test]
    fn a_token_line_loses_its_line_end_only() {
        let want = TokenDigest::of(b"secret");
        for input in [&b"secret"[..], b"secret\n", b"secret\r\n"] {
            assert_eq!(TokenDigest::of_token_line(input), Ok(want));
        }
        assert_eq!(TokenDigest::of_token_line(b"\n"), Err(TokenError::Empty));
        for bad in [
            &b"sec ret"[..],
            b"secret\n\n",
            b"\tsecret",
            b"s\xc3\xa9cret",
        ] {
            assert_eq!(
                TokenDigest::of_token_line(bad),
                Err(TokenError::NotVisibleAscii),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn missing_or_malformed_is_401_unknown_is_403_known_passes() {
        let access = access(&["first-token", "second-token"], false);
        let code = |value: Option<&str>| {
            let value = value.map(header);
            access.check(value.as_ref()).map_err(|e| e.code)
        };
        assert_eq!(code(Some("Bearer first-token")), Ok(()));
        assert_eq!(code(Some("bearer second-token")), Ok(()));
        assert_eq!(code(Some("BEARER first-token ")), Ok(()));
        for malformed in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Basic Zmlyc3QtdG9rZW4="),
            Some("first-token"),
            Some("Bearer first token"),
        ] {
            assert_eq!(
                code(malformed),
                Err(ErrorCode::Unauthorized),
                "{malformed:?}"
            );
        }
        for unknown in [
            "Bearer first-toke",
            "Bearer first-token2",
            "Bearer FIRST-TOKEN",
        ] {
            assert_eq!(code(Some(unknown)), Err(ErrorCode::Forbidden), "{unknown}");
        }
    }

    #[test]
    fn probes_and_documents_stay_open_metrics_as_configured() {
        let off = ApiAccess::open();
        let on = access(&["t"], false);
        let strict = access(&["t"], true);
        for path in [
            "/v1/ads/popular",
            "/v1/ads/a/aggregated_count",
            "/v1/live",
            "/v1/status",
            "/nope",
        ] {
            assert!(!off.protects(path), "{path}");
            assert!(on.protects(path), "{path}");
        }
        for path in OPEN_PATHS {
            assert!(!on.protects(path) && !strict.protects(path), "{path}");
        }
        assert!(!off.protects(METRICS_PATH));
        assert!(!on.protects(METRICS_PATH));
        assert!(strict.protects(METRICS_PATH));
    }

    #[test]
    fn debug_output_shows_no_digest() {
        let text = format!("{:?}", access(&["secret"], false));
        assert!(!text.contains("2bb80d53"), "{text}");
        assert!(text.contains("tokens: 1"), "{text}");
    }
}
