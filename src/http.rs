//! A minimal HTTP/1.1 GET client: enough for the demo to read its own API,
//! for `adclick status` (an `http://` URL and a bearer token) and for tests
//! (request headers, any stream: TLS in the tests), without a full HTTP
//! client in the build. No `https://`: the service's TLS listener is for
//! clients that have a TLS stack (curl, the tests' rustls).

use anyhow::{bail, Context as _};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// An answer: status, header lines and body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header lines as (name, value), names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: String,
}

impl HttpResponse {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// GETs `path` from `addr`; returns the status and the body.
pub async fn get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let response = get_with(addr, path, &[]).await?;
    Ok((response.status, response.body))
}

/// GETs `path` from `addr` with extra request headers (e.g. `Authorization`).
pub async fn get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    exchange(stream, &addr.to_string(), path, headers).await
}

/// GETs an `http://host[:port][/base]` URL joined with `path` (port 80 when
/// absent), with extra request headers.
pub async fn get_url(
    url: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse> {
    let (host, port, base) = split_http_url(url)?;
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let full_path = format!("{}{path}", base.trim_end_matches('/'));
    let host_header = format!("{host}:{port}");
    exchange(stream, &host_header, &full_path, headers).await
}

/// `http://host[:port][/base]` → (host, port, base path). A bracketed IPv6
/// host keeps no brackets (as connect wants it).
fn split_http_url(url: &str) -> anyhow::Result<(&str, u16, &str)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("`{url}` is not an http:// URL (https is not supported here)");
    };
    let (authority, base) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            let port = port
                .parse()
                .with_context(|| format!("`{url}`: `{port}` is not a port"))?;
            (host, port)
        }
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("`{url}` names no host");
    }
    Ok((host, port, base))
}

/// One GET over an open connection of any kind (plain TCP, or a TLS stream
/// a test opened), which is closed after the answer.
pub async fn exchange<S>(
    mut stream: S,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<HttpResponse>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify once it has answered: what
    // was read is the answer.
    if let Err(e) = stream.read_to_end(&mut raw).await {
        if raw.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
            return Err(e.into());
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("response without a header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = &raw[split + 4..];
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("response without a status")?;
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).context("body is not UTF-8")?,
    })
}

/// Joins a chunked body: size line, data, CRLF, … until a zero size.
fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).context("bad chunk size")?;
        let size = usize::from_str_radix(size_text.trim(), 16).context("bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_split_into_host_port_and_base() {
        let split = |url| split_http_url(url).map_err(|e| e.to_string());
        assert_eq!(split("http://127.0.0.1:8080"), Ok(("127.0.0.1", 8080, "")));
        assert_eq!(split("http://localhost/"), Ok(("localhost", 80, "/")));
        assert_eq!(
            split("http://[::1]:9000/adclick"),
            Ok(("::1", 9000, "/adclick"))
        );
        assert!(split("https://h:1").unwrap_err().contains("https"));
        assert!(split("http://h:x").unwrap_err().contains("not a port"));
        assert!(split("http://:80").unwrap_err().contains("no host"));
    }

    #[test]
    fn chunked_bodies_are_joined() {
        let joined = dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(joined, b"abcde");
    }
}
